"""Forecasts for the control apps.

* :class:`ProfileForecaster` (the MPC's, and what the live EMS would run): base load =
  the standard load profile scaled by a learned day factor, plus the last measured
  residual decaying with lead time (``tau_s``, 30 min); draws = the expected fleet draw
  flow (the usage pattern smoothed by the unknown household timing). It knows neither
  the realised noise nor any heater's draw times.
* :class:`PerfectForecaster` (the yardstick's): the realised base load and draws.

With PV (issue 17) the profile forecast of the available PV fleet power is the clear-sky
fleet power × a clear-sky index that starts at the last measured one (available /
clear sky) and relaxes to the cloud process's mean with ``pv_tau_s`` (30 min); the
perfect one is the realised available power. EV sessions: the profile forecaster knows
only the EVs plugged in (their declared departure and need come with the observation:
what an OCPP central system has); the perfect one also knows every session that will
arrive within the horizon (:class:`~sef.control.controllers.base.EVArrivals`).

Beyond the scenario end both repeat the day (a periodic, day-ahead view).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from sef.control.controllers.base import EVArrivals, Forecast, Observation
from sef.control.scenario import Scenario

__all__ = ["PerfectForecaster", "ProfileForecaster", "make_forecaster"]

FloatArray = npt.NDArray[np.float64]


def _window(series: FloatArray, start: int, n: int) -> FloatArray:
    idx = (start + np.arange(n)) % series.shape[0]
    return np.asarray(series[idx], dtype=np.float64)


class PerfectForecaster:
    """Realised base load and draws (perfect foresight)."""

    def __init__(self, scenario: Scenario) -> None:
        self.sc = scenario
        self._draw_total = scenario.draws_lpm.sum(axis=1)
        pv = scenario.pv
        self._pv_total = pv.available_kw.sum(axis=1) if pv is not None else None

    def update(self, obs: Observation) -> None:
        """Nothing to learn."""

    def forecast(self, step: int, n: int) -> Forecast:
        """Forecast of ``n`` steps from ``step``."""
        sc = self.sc
        pv = None if self._pv_total is None else _window(self._pv_total, step, n)
        return Forecast(
            _window(sc.target_kw, step, n),
            _window(sc.base_kw, step, n),
            _window(self._draw_total, step, n),
            perfect=True,
            pv_kw=pv,
            ev_arrivals=self._arrivals(step, n),
        )

    def _arrivals(self, step: int, n: int) -> EVArrivals | None:
        """Sessions plugging in after the start of ``step`` and before the horizon end."""
        if self.sc.ev is None:
            return None
        s, dt = self.sc.ev.sessions, self.sc.dt_s
        pick = (s.arrival_s > step * dt) & (s.arrival_s < (step + n) * dt)
        e0 = s.soc0 * s.battery_kwh
        need_ac = (np.minimum(e0 + s.need_kwh, s.battery_kwh) - e0) / s.efficiency
        return EVArrivals(
            s.arrival_s[pick], s.departure_s[pick], need_ac[pick], s.max_rate_kw[pick]
        )


class ProfileForecaster:
    """Standard-profile forecast corrected by measurements (see module docstring).

    Parameters:
        scenario: the scenario (its expected profiles; not its realisation).
        tau_s: decay time of the measured residual (s).
        scale_window_s: time constant of the learned day scale factor (s).
    """

    def __init__(
        self,
        scenario: Scenario,
        tau_s: float = 1800.0,
        scale_window_s: float = 4 * 3600.0,
        pv_tau_s: float = 1800.0,
    ) -> None:
        self.sc = scenario
        self.tau_s = tau_s
        self.scale_window_s = scale_window_s
        self.scale = 1.0
        self.residual_kw = 0.0
        self._w_meas = 0.0
        self._w_prof = 0.0
        self.pv_tau_s = pv_tau_s
        self.pv_index = scenario.pv.mean_index if scenario.pv is not None else 1.0

    def update(self, obs: Observation) -> None:
        """Learn from the measured base load of the last step."""
        if obs.step == 0:
            return
        pv = self.sc.pv
        if pv is not None and obs.pv_available_kw.size:
            clear = float(pv.clear_kw[(obs.step - 1) % self.sc.steps])
            if clear > 0.02 * float(pv.ac_kw.sum()):  # the index is noise near dawn/dusk
                self.pv_index = float(np.clip(obs.pv_available_kw.sum() / clear, 0.0, 1.5))
        prof = float(self.sc.base_expected_kw[(obs.step - 1) % self.sc.steps])
        decay = float(np.exp(-obs.dt_s / self.scale_window_s))
        self._w_meas = decay * self._w_meas + obs.base_kw
        self._w_prof = decay * self._w_prof + prof
        if self._w_prof > 0:
            self.scale = float(np.clip(self._w_meas / self._w_prof, 0.5, 2.0))
        self.residual_kw = obs.base_kw - self.scale * prof

    def forecast(self, step: int, n: int) -> Forecast:
        """Forecast of ``n`` steps from ``step`` (element 0: the step about to run)."""
        sc = self.sc
        lead_s = (np.arange(n) + 1) * sc.dt_s
        base = self.scale * _window(sc.base_expected_kw, step, n)
        base = base + self.residual_kw * np.exp(-lead_s / self.tau_s)
        pv_kw = None
        if sc.pv is not None:
            k_mean = sc.pv.mean_index
            k = k_mean + (self.pv_index - k_mean) * np.exp(-lead_s / self.pv_tau_s)
            pv_kw = _window(sc.pv.clear_kw, step, n) * k
        return Forecast(
            _window(sc.target_kw, step, n),
            np.clip(base, 0.0, None),
            _window(sc.draws_expected_lpm, step, n),
            perfect=False,
            pv_kw=pv_kw,
        )


def make_forecaster(scenario: Scenario, perfect: bool) -> PerfectForecaster | ProfileForecaster:
    """The forecaster a control app asks for."""
    return PerfectForecaster(scenario) if perfect else ProfileForecaster(scenario)

"""Aggregate water-heater model for dispatch at scale: next-step power and its bound.

With thousands of tanks, the real-time layer must (1) know what the fleet will draw in
the step it is deciding, including the rebound of tanks whose shed ends and the stop of
tanks that reach their setpoint, and (2) never switch so many tanks at once that the
batteries cannot absorb the error of that knowledge.

:class:`HeaterPowerEstimator` predicts the fleet power of the next step, per heater,
from what the EMS has (last power, stored heat above inlet, DR mode) and the commands
about to be sent:

* Shed → 0; End Shed (or a shed event that runs out) → the element if the tank is below
  the normal band (the rebound), else 0; Load Up → the element if below the Load Up
  band; otherwise persistence of the element's state;
* a running element whose tank reaches its full heat within the step runs only the
  fraction of the step that takes (the stop at the setpoint);
* what no per-heater rule sees (draws starting, stratification) is learnt as a fleet
  bias: an exponentially weighted mean of the last steps' errors (``bias_gain``).

:func:`ramp_bound_kw` is the bound on the change of commanded fleet heater power per
step (see its docstring for the value and why).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from sef.control.controllers.base import WH_LOAD_UP, WH_NORMAL, WH_SHED, Observation

if TYPE_CHECKING:
    from sef.control.controllers._dispatch import FleetInfo

__all__ = ["RAMP_FRACTION_PER_STEP", "HeaterPowerEstimator", "ramp_bound_kw"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: commanded change of fleet heater power per step, fraction of the rated element power
RAMP_FRACTION_PER_STEP = 0.005


def ramp_bound_kw(element_kw: FloatArray, dt_s: float) -> float:
    """Largest change of the fleet's heater power the dispatcher commands in one step (kW).

    ``R = max(2 elements, 0.5 % of the fleet's rated element power) · dt / 60 s``: at
    1-min steps 112 kW (25 tanks of 4.5 kW) for 5 000 tanks, 22.5 kW for the 50-tank
    reference fleet (rounded up to 2 elements = 9 kW when smaller). Why this value:

    * every tank switched by a command is a guess (a Load Up finds the tank nearly full
      and stops at once, a shed tank was about to stop anyway); the batteries correct
      the net load only from the next measurement, so the net error of a step grows
      with the number switched in it — a bounded ramp bounds it;
    * 0.5 %/min of the rated power moves 7.5 % (1.7 MW for 5 000 tanks) per 15-min
      interval: about twice the steepest natural swing of the fleet's expected demand
      (the morning rise), so the plan is still reached within each interval;
    * starts are staggered by it: sheds, their renewals and their ends are spread
      over the minutes it takes, so no event population expires or rebounds at once.
    """
    if element_kw.size == 0:
        return 0.0
    elem = float(np.mean(element_kw))
    per_min = max(2.0 * elem, RAMP_FRACTION_PER_STEP * float(element_kw.sum()))
    return per_min * dt_s / 60.0


class HeaterPowerEstimator:
    """Next-step fleet heater power (kW) from telemetry and commands (module docstring).

    Parameters:
        info: fleet constants.
        bias_gain: weight of the last step's error in the learnt fleet bias (1/1).
    """

    def __init__(self, info: FleetInfo, bias_gain: float = 0.3) -> None:
        self.info = info
        self.bias_gain = bias_gain
        self.bias_kw = 0.0
        self.last_estimate_kw: float | None = None

    def learn(self, obs: Observation) -> None:
        """Update the fleet bias from the measured power of the step just run."""
        if self.last_estimate_kw is None:
            return
        err = float(obs.wh_power_kw.sum()) - self.last_estimate_kw
        g = self.bias_gain
        self.bias_kw = (1.0 - g) * self.bias_kw + g * err
        self.last_estimate_kw = None

    def per_heater(
        self, obs: Observation, cmd: IntArray, ending: npt.NDArray[np.bool_]
    ) -> FloatArray:
        """Expected power per heater over the step after ``cmd`` (kW, no fleet bias).

        ``ending``: shed heaters whose event runs out during the step without a command
        (they return to the normal thermostat).
        """
        acted = np.nonzero((cmd >= 0) | ending)[0]  # few: only these change
        codes = np.where(ending[acted] & (cmd[acted] < 0), WH_NORMAL, cmd[acted])
        return self.after_commands(obs, acted, codes)[0]

    def after_commands(
        self, obs: Observation, acted: npt.NDArray[np.intp], codes: IntArray
    ) -> tuple[FloatArray, npt.NDArray[np.intp]]:
        """:meth:`per_heater` from the heaters that act (``acted``, ascending) and what they
        do (``codes``: a command, or ``WH_NORMAL`` for a shed running out): the per-heater
        estimate (kW) and the heaters it has running (> 0 kW), ascending."""
        p = obs.wh_power_kw.copy()
        if acted.size:
            p[acted] = self._commanded(obs, acted, codes)
        # a running element stops when the tank is full: the fraction of the step left
        on = np.flatnonzero(p > 0)
        if on.size:
            p[on] = self._until_full(obs, on, p[on])
            on = on[p[on] > 0]
        return p, on

    def _commanded(
        self, obs: Observation, idx: npt.NDArray[np.intp], codes: IntArray
    ) -> FloatArray:
        """Power (kW) of heaters ``idx`` after commands ``codes`` (before the stop rule)."""
        i = self.info
        e = obs.wh_energy_kwh[idx]
        elem = i.w_element_kw[idx]
        out = obs.wh_power_kw[idx].copy()
        out[codes == WH_SHED] = 0.0
        ended = codes == WH_NORMAL
        out[ended] = np.where(e[ended] < i.w_e_normal_on[idx][ended], elem[ended], 0.0)
        lu = codes == WH_LOAD_UP
        out[lu] = np.where(e[lu] < i.w_e_loadup_on[idx][lu], elem[lu], 0.0)
        return out

    def _until_full(self, obs: Observation, idx: npt.NDArray[np.intp], p: FloatArray) -> FloatArray:
        need_h = (self.info.w_e_max[idx] - obs.wh_energy_kwh[idx]) / p
        return np.asarray(p * np.clip(need_h * 3600.0 / obs.dt_s, 0.0, 1.0), dtype=np.float64)

    def update(self, p: FloatArray, obs: Observation, idx: npt.NDArray[np.intp], code: int) -> None:
        """Apply command ``code`` to heaters ``idx`` in a per-heater estimate ``p`` (kW), in
        place: the same rules as :meth:`per_heater`, for the few heaters just commanded."""
        if idx.size == 0:
            return
        q = self._commanded(obs, idx, np.full(idx.size, code, dtype=np.int64))
        on = q > 0
        if np.any(on):
            q[on] = self._until_full(obs, idx[on], q[on])
        p[idx] = q

    def fleet_kw(self, p: FloatArray) -> float:
        """Fleet estimate (kW) = Σ per-heater estimates + learnt bias; remembered so the
        next :meth:`learn` can measure its error."""
        est = max(0.0, float(p.sum()) + self.bias_kw)
        self.last_estimate_kw = float(p.sum())
        return est

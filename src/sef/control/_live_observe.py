"""What live control observes: the agents' telemetry in the EMS registry and the meter.

:class:`LiveObservation` is the observing half of :class:`~sef.control.live.LiveControl`
(a mixin: the attributes it reads are LiveControl's). ``docs/control.md``, "Live mode",
lists what is measured and how the metered base load is formed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from sef.control._live_fleet import LiveFleet
from sef.control._live_meter import MeteredBase, meter_sample, telemetry
from sef.control.controllers.base import Observation
from sef.control.scenario import Scenario
from sef.ems import EMS

__all__ = ["LiveObservation"]

FloatArray = npt.NDArray[np.float64]


class LiveObservation:
    """Observation from the registry (mixed into ``LiveControl``, which sets these)."""

    ems: EMS
    scenario: Scenario
    fleet: LiveFleet
    meter_aligned: bool
    metered_steps: int
    _meter: MeteredBase
    _metered: bool
    _wh_offset_kwh: FloatArray
    _tank_c: FloatArray

    def _telemetry(self, agent_id: str) -> dict[str, Any]:
        return telemetry(self.ems.registry, agent_id)

    def measured_net_kw(self) -> float | None:
        """The meter's ``Net_Power_kW`` (kW), if a meter of the fleet reports one."""
        sample = self.meter_sample()
        return None if sample is None else sample[0]

    def meter_sample(self) -> tuple[float, float] | None:
        """The first meter's ``Net_Power_kW`` (kW) and its time (Unix s, EMS clock)."""
        return meter_sample(self.ems.registry, self.fleet.meters)

    def devices_at(self, t_s: float) -> float:
        """The fleet's power (kW) at clock time ``t_s`` from each device's telemetry samples
        (their own times: the meter is read against what the devices drew then)."""
        return self._meter.devices_at(t_s, (*self.fleet.battery_ids, *self.fleet.heater_ids))

    def log_device_power(self) -> None:
        """Keep every device's newest reported power (kW) at its telemetry time.

        The feeder watch calls this at each new meter sample, so a sample is read against
        what the devices drew at its time (:meth:`devices_at`) and not against the power
        seen at the last step start (which held a battery that had started discharging
        since as idle: the metered base came out low by its power and the next plan
        released the feeder).
        """
        for plate in self.fleet.batteries:
            t = self._telemetry(plate.agent_id)
            self._meter.log_power(plate.agent_id, t, _battery_kw(t))
        for heater in self.fleet.heaters:
            t = self._telemetry(heater.agent_id)
            self._meter.log_power(heater.agent_id, t, float(t.get("Power_W", 0.0)) / 1000.0)

    def observe(self, step: int, net_kw: float) -> Observation:
        """The observation at the start of ``step`` from the agents' last telemetry."""
        fleet = self.fleet
        n_b, n_w = len(fleet.batteries), len(fleet.heaters)
        energy = np.zeros(n_b)
        b_power = np.zeros(n_b)
        for i, plate in enumerate(fleet.batteries):
            t = self._telemetry(plate.agent_id)
            mid = plate.capacity_kwh * 0.5 * (plate.soc_min + plate.soc_max)
            energy[i] = float(t.get("Sys_Energy_kWh", mid))
            b_power[i] = _battery_kw(t)
            self._meter.log_power(plate.agent_id, t, b_power[i])
        w_power = np.zeros(n_w)
        w_energy = np.zeros(n_w)
        w_mode = np.zeros(n_w, dtype=np.int64)
        for j, heater in enumerate(fleet.heaters):
            t = self._telemetry(heater.agent_id)
            w_power[j] = float(t.get("Power_W", 0.0)) / 1000.0
            self._meter.log_power(heater.agent_id, t, w_power[j])
            stored_wh = t.get("Energy_Stored_Wh")
            w_energy[j] = self._wh_offset_kwh[j] + (
                float(stored_wh) / 1000.0 if stored_wh is not None else 0.0
            )
            event = t.get("Event")
            w_mode[j] = 1 if event == "shed" else 2 if event == "charge" else 0
            self._tank_c[j] = float(t.get("Tank_Temp_C", np.nan))
        return Observation(
            step=step,
            t_s=step * self.scenario.dt_s,
            dt_s=self.scenario.dt_s,
            net_kw=net_kw,
            battery_energy_kwh=energy,
            battery_power_kw=b_power,
            wh_power_kw=w_power,
            wh_energy_kwh=w_energy,
            wh_mode=w_mode,
        )

    def observe_step(self, step: int) -> Observation:
        """The observation at the start of ``step``.

        With a meter: the base load is the meter's reading minus the devices' power at the
        reading's time (:meth:`devices_at`: the meter and the devices report at their own
        times and rates), filtered (``meter_tau_s``), and net = that base + the devices'
        power now
        (``meter_aligned=False``: net = the reading). Without: the last step's scenario
        base load + the devices (step 0: base load).
        """
        sc = self.scenario
        obs = self.observe(step, 0.0)
        devices = float(obs.battery_power_kw.sum() + obs.wh_power_kw.sum())
        sample = self.meter_sample()
        self._metered = sample is not None
        if sample is not None:
            self.metered_steps += 1
            reading, at = sample
            prior = float(sc.base_expected_kw[max(step - 1, 0) % sc.steps])
            ids = (*self.fleet.battery_ids, *self.fleet.heater_ids)
            base = self._meter.base(reading, at, ids, prior)
            net = base + devices if self.meter_aligned else reading
        elif step == 0:
            net = float(sc.base_kw[0])
        else:
            net = float(sc.base_kw[(step - 1) % sc.steps] + devices)
        return replace(obs, net_kw=net)


def _battery_kw(t: dict[str, Any]) -> float:
    """A battery's power from its telemetry (kW, + = charging): the inverter's setpoint
    while connected, else the reported system power."""
    key = "Setpoint_kW" if t.get("State") == "CONNECTED" else "Sys_Power_kW"
    return float(t.get(key, 0.0))

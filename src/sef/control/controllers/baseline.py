"""Proportional baseline in the style of open EMS peak-shaving controllers.

Like the OpenEMS "Peak Shaving" controller (``Controller.Ess.PeakShaving``), it works on
the last grid-meter reading only: the battery setpoint becomes the battery's present
power minus ``gain`` times the error ``net − target`` (with ``gain = 1`` the setpoint
that would have zeroed the last error), split over the batteries by the same integer
allocator. When the batteries cannot cover the excess (net above target by more than
the fleet's discharge headroom), every water heater above the comfort guard is sent
Shed; when the net load is below target by more than one element, the sheds end (the
heaters rebound into the gap). No forecast, no plan.
"""

from __future__ import annotations

import numpy as np

from sef.control.controllers._dispatch import BatteryDispatcher, FleetInfo, WaterHeaterDispatcher
from sef.control.controllers.base import WH_KEEP, Decision, Forecast, Observation
from sef.control.scenario import Scenario

__all__ = ["BaselineController"]


class BaselineController:
    """Proportional peak-shaving controller (see module docstring).

    Parameters:
        gain: proportional gain on the net-load error (1/1).
    """

    name = "baseline"
    perfect_foresight = False

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = gain

    def reset(self, scenario: Scenario) -> None:
        """Start a new run of ``scenario``."""
        self.sc = scenario
        self.info = FleetInfo.from_scenario(scenario)
        self.wh = WaterHeaterDispatcher(self.info, scenario.control.wh_shed_duration_s)
        self.bat = BatteryDispatcher(self.info)

    def forecast_steps(self, step: int) -> int:
        """The baseline needs only the target of the current step."""
        return 1

    def decide(self, obs: Observation, forecast: Forecast) -> Decision:
        """Battery: P = P_last − gain·(net − target); heaters: shed if batteries saturate."""
        target = float(forecast.target_kw[0])
        error = obs.net_kw - target
        fleet_kw = float(obs.battery_power_kw.sum()) - self.gain * error
        lo, _ = self.bat.limits(obs.battery_energy_kwh)
        elem = float(np.mean(self.info.w_element_kw)) if self.info.w_element_kw.size else 0.0
        if fleet_kw < lo.sum() - 0.5 * elem:
            wh_cmd = self.wh.shed_all(obs)
        elif error < -elem:
            wh_cmd = self.wh.end_all(obs)
        else:
            wh_cmd = np.full(obs.wh_mode.shape[0], WH_KEEP, dtype=np.int64)
            self.wh.guard(obs, wh_cmd)
        rates = self.bat.allocate(fleet_kw, obs.battery_energy_kwh)
        return Decision(
            battery_kw=rates,
            wh_command=wh_cmd,
            battery_duration_s=round(obs.dt_s),
            wh_duration_s=self.wh.event_s,
            info={"net_goal_kw": target, "wh_plan_kw": float("nan"), "battery_plan_kw": fleet_kw},
        )

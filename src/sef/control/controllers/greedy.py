"""Greedy battery-only dispatch: the yardstick a planner must beat.

Each step the batteries alone push the net load toward the scenario's series, within
their power and SOC limits; the water heaters are never sent a message. The step's
uncontrolled load is estimated by persistence from the last meter reading (net load
minus the batteries' last power), as an OpenEMS "Peak Shaving" controller does:

* ``track``: fleet power = ``target − (net_last − P_last)`` (toward the target both ways);
* ``cap``: the same with the cap as the level: discharge down to the cap when above it,
  recharge up to the cap when below it (the headroom refills the batteries for the next
  peak, as a peak shaver's recharge does);
* ``floor``: the mirror image: charge up to the floor, discharge down to it otherwise.

No forecast, no plan, no end-energy rule: it spends stored energy whenever it helps now.
"""

from __future__ import annotations

import numpy as np

from sef.control.controllers._dispatch import BatteryDispatcher, FleetInfo
from sef.control.controllers.base import WH_KEEP, Decision, Forecast, Observation
from sef.control.scenario import Scenario

__all__ = ["GreedyController"]


class GreedyController:
    """Battery-only greedy dispatch toward the target / cap / floor (see module docstring)."""

    name = "greedy"
    perfect_foresight = False

    def reset(self, scenario: Scenario) -> None:
        """Start a new run of ``scenario``."""
        self.bat = BatteryDispatcher(FleetInfo.from_scenario(scenario))

    def forecast_steps(self, step: int) -> int:
        """Only the current step's target is needed."""
        return 1

    def decide(self, obs: Observation, forecast: Forecast) -> Decision:
        """Batteries: ``P = level − (net_last − P_last)`` within limits; heaters: no message."""
        level = float(forecast.target_kw[0])
        uncontrolled = obs.net_kw - float(obs.battery_power_kw.sum())
        fleet_kw = level - uncontrolled
        rates = self.bat.allocate(fleet_kw, obs.battery_energy_kwh)
        return Decision(
            battery_kw=rates,
            wh_command=np.full(obs.wh_mode.shape[0], WH_KEEP, dtype=np.int64),
            battery_duration_s=round(obs.dt_s),
            wh_duration_s=0,
            info={"net_goal_kw": level, "wh_plan_kw": float("nan"), "battery_plan_kw": fleet_kw},
        )

"""The control-app interface: observations in, decisions out.

A control app sees only what an EMS can have: metered net load, battery telemetry
(stored energy, AC power) and water-heater telemetry (power, stored heat, DR mode),
plus a forecast. It answers with a :class:`Decision` per step: integer battery rates
(kW, + = charge) and water-heater commands (Shed / Load Up / back to normal), which
:func:`sef.control.allocation.decision_to_events` turns into ``EnergyMethod`` events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from sef.control.scenario import Scenario

__all__ = [
    "WH_KEEP",
    "WH_LOAD_UP",
    "WH_NORMAL",
    "WH_SHED",
    "ControlApp",
    "Decision",
    "Forecast",
    "Observation",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Water-heater command codes of a :class:`Decision` (``WH_NORMAL`` = End Shed).
WH_KEEP, WH_NORMAL, WH_SHED, WH_LOAD_UP = -1, 0, 1, 2


@dataclass(frozen=True)
class Observation:
    """What the EMS knows at the start of step ``step`` (measurements of the last step).

    Attributes:
        step: index of the step about to run.
        t_s: its start time (s from the scenario start).
        dt_s: step length (s).
        net_kw: metered net load over the last step (kW).
        battery_energy_kwh: stored energy per battery (kWh) — telemetry SOC × capacity.
        battery_power_kw: AC power per battery over the last step (kW, + = charge).
        wh_power_kw: electric power per water heater over the last step (kW).
        wh_energy_kwh: heat stored above the inlet temperature per heater (kWh).
        wh_mode: DR mode per heater (0 normal, 1 shed, 2 load up, ...).
    """

    step: int
    t_s: float
    dt_s: float
    net_kw: float
    battery_energy_kwh: FloatArray
    battery_power_kw: FloatArray
    wh_power_kw: FloatArray
    wh_energy_kwh: FloatArray
    wh_mode: IntArray

    @property
    def base_kw(self) -> float:
        """Uncontrolled load of the last step (kW): net minus the controlled devices."""
        return float(self.net_kw - self.battery_power_kw.sum() - self.wh_power_kw.sum())


@dataclass(frozen=True)
class Forecast:
    """Forecast from the current step on, on the scenario grid (length = horizon).

    Attributes:
        target_kw: target net load (kW).
        base_kw: uncontrolled base load (kW); element 0 is the current step.
        draw_lpm: fleet hot-water draw flow (L/min).
        perfect: True if these are the realised values (perfect foresight).
    """

    target_kw: FloatArray
    base_kw: FloatArray
    draw_lpm: FloatArray
    perfect: bool = False


@dataclass
class Decision:
    """One step's commands.

    Attributes:
        battery_kw: integer rate per battery (kW, + = charge, − = discharge).
        wh_command: per heater: ``WH_KEEP`` (no message), ``WH_NORMAL`` (End Shed),
            ``WH_SHED`` or ``WH_LOAD_UP``.
        battery_duration_s: how long the battery rates hold (s) — one step.
        wh_duration_s: duration of new Shed / Load Up events (s).
        info: diagnostics (kW): ``net_goal_kw``, ``wh_plan_kw``, ``battery_plan_kw``.
    """

    battery_kw: IntArray
    wh_command: IntArray
    battery_duration_s: int
    wh_duration_s: int
    info: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class ControlApp(Protocol):
    """A pluggable control app (simulator and EMS call the same two methods).

    Attributes:
        name: short name (``mpc``, ``baseline``, ``optimal``).
        perfect_foresight: True if the app must be given realised values as forecast
            (only the yardstick).
    """

    name: str
    perfect_foresight: bool

    def reset(self, scenario: Scenario) -> None:
        """Prepare for a run of ``scenario`` (parameters, fleet sizes, settings)."""

    def forecast_steps(self, step: int) -> int:
        """Forecast length (steps) the app needs at ``step``."""
        ...

    def decide(self, obs: Observation, forecast: Forecast) -> Decision:
        """Commands for step ``obs.step``."""
        ...

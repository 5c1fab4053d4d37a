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
    "EVArrivals",
    "Forecast",
    "Observation",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_EMPTY: FloatArray = np.zeros(0)

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
        pv_power_kw: AC power delivered per PV system over the last step (kW).
        pv_available_kw: AC power each PV system could have delivered without a limit
            (kW; what the inverter reports as available).
        ev_power_kw: AC power per charger over the last step (kW).
        ev_need_kwh: AC energy each plugged EV still wants by its departure (kWh; 0 when
            unplugged or done) — the session's declared need less what was metered.
        ev_departure_s: declared departure per charger (s on the scenario clock; NaN when
            unplugged).
        ev_max_kw: AC power each plugged EV accepts now (kW; 0 when unplugged or done).
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
    pv_power_kw: FloatArray = field(default_factory=lambda: _EMPTY)
    pv_available_kw: FloatArray = field(default_factory=lambda: _EMPTY)
    ev_power_kw: FloatArray = field(default_factory=lambda: _EMPTY)
    ev_need_kwh: FloatArray = field(default_factory=lambda: _EMPTY)
    ev_departure_s: FloatArray = field(default_factory=lambda: _EMPTY)
    ev_max_kw: FloatArray = field(default_factory=lambda: _EMPTY)

    @property
    def base_kw(self) -> float:
        """Uncontrolled load of the last step (kW): net minus the controlled devices
        (PV delivered added back)."""
        base = float(self.net_kw - self.battery_power_kw.sum() - self.wh_power_kw.sum())
        if self.pv_power_kw.size or self.ev_power_kw.size:
            base += float(self.pv_power_kw.sum()) - float(self.ev_power_kw.sum())
        return base


@dataclass(frozen=True)
class EVArrivals:
    """EV sessions expected to start within a forecast (arrays, one entry per session).

    Attributes:
        arrival_s, departure_s: plug-in and declared departure (s, scenario clock).
        need_kwh: AC energy wanted by departure (kWh).
        max_kw: the EV's AC rating (kW).
    """

    arrival_s: FloatArray
    departure_s: FloatArray
    need_kwh: FloatArray
    max_kw: FloatArray


@dataclass(frozen=True)
class Forecast:
    """Forecast from the current step on, on the scenario grid (length = horizon).

    Attributes:
        target_kw: target net load (kW).
        base_kw: uncontrolled base load (kW); element 0 is the current step.
        draw_lpm: fleet hot-water draw flow (L/min).
        perfect: True if these are the realised values (perfect foresight).
        pv_kw: available PV fleet power (kW) or ``None`` (no PV).
        ev_arrivals: EV sessions starting within the forecast, or ``None`` (none known).
    """

    target_kw: FloatArray
    base_kw: FloatArray
    draw_lpm: FloatArray
    perfect: bool = False
    pv_kw: FloatArray | None = None
    ev_arrivals: EVArrivals | None = None


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
        ev_kw: charger limit per EV session (AC kW) for the step; ``None``: no command
            (every charger at the EV's rating, uncontrolled charging).
        pv_limit_kw: active-power limit per PV system (kW; NaN = none); ``None``: no
            limit (no curtailment).
    """

    battery_kw: IntArray
    wh_command: IntArray
    battery_duration_s: int
    wh_duration_s: int
    info: dict[str, float] = field(default_factory=dict)
    ev_kw: FloatArray | None = None
    pv_limit_kw: FloatArray | None = None


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

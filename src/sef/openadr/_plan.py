"""What the mapping (:mod:`sef.openadr._mapping`) makes of an event: device commands and
target windows, and the fleet view it reads.

A :class:`Plan` is pure data; the executor (:mod:`sef.openadr._executor`) sends its
:class:`Dispatch` es at their times through the EMS and puts its :class:`TargetWindow` s on
the EMS's target board for the live controller.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Dispatch", "FleetMember", "MemberKind", "Plan", "TargetWindow", "Unsupported"]

Command = tuple[str, int, int]
"""One ``EnergyMethod`` event: ``(cmd, rate_kW, duration_s)`` (``docs/protocol.md`` §7.2)."""


class MemberKind(StrEnum):
    """A device family, from the agent's ``Nameplate.DeviceType``."""

    BATTERY = "battery"
    WATER_HEATER = "water_heater"
    METER = "meter"


@dataclass(frozen=True, slots=True)
class FleetMember:
    """What the mapping knows of one agent (built from the EMS registry by the bridge).

    Attributes:
        agent_id: the agent.
        kind: its device family.
        groups: the groups it belongs to (its certificate's ``group:`` names).
        online: whether the EMS sees it online.
        charge_rate_kw: largest charging power, kW (batteries; a heater's element power).
        discharge_rate_kw: largest discharging power, kW (batteries; 0 for a heater).
        capacity_kwh: usable capacity, kWh (batteries; 0 otherwise).
        soc_pct: state of charge, % of capacity (batteries; ``None`` if not reported).
        soc_min_pct: lowest allowed state of charge, %.
        soc_max_pct: highest allowed state of charge, %.
        power_kw: last reported power drawn from the grid, kW (``None`` if not reported).
    """

    agent_id: str
    kind: MemberKind
    groups: tuple[str, ...] = ()
    online: bool = True
    charge_rate_kw: float = 0.0
    discharge_rate_kw: float = 0.0
    capacity_kwh: float = 0.0
    soc_pct: float | None = None
    soc_min_pct: float = 0.0
    soc_max_pct: float = 100.0
    power_kw: float | None = None


@dataclass(frozen=True, slots=True)
class Dispatch:
    """One ``EnergyMethod`` call to send.

    Attributes:
        agents: the agents it goes to (the executor sends one group call when they are
            exactly the members of a targeted group, else one call per agent).
        start_s: when to send it, Unix s on the EMS clock, before any random offset.
        commands: the sequence, each ``(cmd, rate_kW, duration_s)`` within the protocol's
            limits (1…256 events, integers 0…32 767, only the last one open-ended).
    """

    agents: tuple[str, ...]
    start_s: float
    commands: tuple[Command, ...]


@dataclass(frozen=True, slots=True)
class TargetWindow:
    """A time-limited change of the live controller's target (``sef.ems._target_board``).

    Attributes:
        start_s: from, Unix s on the EMS clock.
        end_s: until, Unix s.
        limit_kw: most the metered feeder may draw, kW (a capacity limit); ``None``: none.
        target_kw: the load to follow, kW; ``None``: the scenario's.
    """

    start_s: float
    end_s: float
    limit_kw: float | None = None
    target_kw: float | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do for one event version.

    Attributes:
        dispatches: commands, in sending order.
        windows: target windows for the live controller.
        restore: per agent, the sequence that returns it to normal when the event is
            cancelled (battery ``idle``, heater ``endshed``), sent only to agents that got
            a dispatch.
        requested_kw: the change of fleet load the event asks for, kW (negative: a
            reduction), ``None`` where it is not a power (a price, a level).
        signal: the name of the signal the plan was made from.
    """

    dispatches: tuple[Dispatch, ...]
    windows: tuple[TargetWindow, ...] = ()
    restore: tuple[Dispatch, ...] = ()
    requested_kw: float | None = None
    signal: str = ""


@dataclass(frozen=True, slots=True)
class Unsupported:
    """An event the mapping cannot carry out, and why (the VEN opts out with the reason)."""

    reason: str

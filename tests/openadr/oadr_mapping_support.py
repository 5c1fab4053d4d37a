"""Builders for the mapping and policy tests: events, signals and fleet members in a line."""

from __future__ import annotations

from collections.abc import Sequence

from sef.openadr import (
    DrEvent,
    DrInterval,
    DrSignal,
    EventStatus,
    FleetMember,
    MemberKind,
    Plan,
    Targets,
    Unsupported,
)

T0 = 1_800_000_000.0
"""Event start used by the tests, Unix s."""

WHOLE_FLEET = Targets()
"""No target named: every device."""


def signal(
    name: str,
    type_: str,
    values: Sequence[float],
    *,
    unit: str | None = None,
    duration_s: float | Sequence[float] = 3600.0,
    start_s: float = T0,
) -> DrSignal:
    """A signal with back-to-back intervals (``duration_s`` each, or one per value)."""
    durations = [duration_s] * len(values) if isinstance(duration_s, int | float) else duration_s
    intervals = []
    t = start_s
    for value, d in zip(values, durations, strict=True):
        intervals.append(DrInterval(t, d, value))
        t += d
    return DrSignal(name, type_, unit, tuple(intervals))


def event(
    *signals: DrSignal,
    targets: Targets = WHOLE_FLEET,
    program: str = "prog",
    test: bool = False,
    status: EventStatus = EventStatus.FAR,
) -> DrEvent:
    """An event holding ``signals``, its span from their intervals."""
    ivs = [iv for s in signals for iv in s.intervals]
    start = min((iv.start_s for iv in ivs), default=T0)
    end = max((iv.end_s for iv in ivs), default=T0)
    return DrEvent(
        source="test",
        event_id="ev-1",
        modification=0,
        program=program,
        status=status,
        start_s=start,
        duration_s=end - start,
        signals=tuple(signals),
        targets=targets,
        test=test,
    )


def battery(
    agent_id: str,
    rate_kw: float = 8.0,
    *,
    groups: tuple[str, ...] = ("bats",),
    charge_kw: float | None = None,
    power_kw: float | None = None,
    soc_pct: float | None = 50.0,
    capacity_kwh: float = 60.0,
    online: bool = True,
) -> FleetMember:
    """A battery (rates kW, capacity kWh, SOC window 5–95 %)."""
    return FleetMember(
        agent_id,
        MemberKind.BATTERY,
        groups,
        online,
        charge_rate_kw=rate_kw if charge_kw is None else charge_kw,
        discharge_rate_kw=rate_kw,
        capacity_kwh=capacity_kwh,
        soc_pct=soc_pct,
        soc_min_pct=5.0,
        soc_max_pct=95.0,
        power_kw=power_kw,
    )


def heater(
    agent_id: str,
    *,
    groups: tuple[str, ...] = ("heaters",),
    power_kw: float | None = None,
    online: bool = True,
) -> FleetMember:
    """A 4.5-kW water heater."""
    return FleetMember(
        agent_id, MemberKind.WATER_HEATER, groups, online, charge_rate_kw=4.5, power_kw=power_kw
    )


def meter(agent_id: str, power_kw: float | None = None) -> FleetMember:
    """A feeder meter."""
    return FleetMember(agent_id, MemberKind.METER, ("feeder",), True, power_kw=power_kw)


def as_plan(result: Plan | Unsupported) -> Plan:
    """The plan, failing the test with the reason if the event was refused."""
    assert isinstance(result, Plan), f"expected a plan, got {result}"
    return result


def commands_of(plan: Plan, agent: str) -> tuple[tuple[str, int, int], ...]:
    """Every command sent to ``agent``, dispatches in order."""
    out: list[tuple[str, int, int]] = []
    for d in sorted(plan.dispatches, key=lambda d: d.start_s):
        if agent in d.agents:
            out.extend(d.commands)
    return tuple(out)

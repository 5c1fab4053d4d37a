"""The mapping: a :class:`~sef.openadr.DrEvent` and the fleet → a :class:`~sef.openadr.Plan`
(``EnergyMethod`` sequences for the targeted agents, or target windows for the live
controller) or :class:`~sef.openadr.Unsupported` with the reason a utility engineer reads.

Pure logic: no I/O, no clock (the caller passes ``now_s``). The table is data
(:mod:`sef.openadr._mapping_tables`, ``mapping.toml``); the per-method arithmetic is in
:mod:`sef.openadr._mapping_rules`; the rules are documented in ``docs/openadr.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sef.interface._energy import MAX_EVENTS
from sef.openadr._mapping_rules import (
    Refused,
    Step,
    band_steps,
    power_deltas,
    power_steps,
    soc_steps,
)
from sef.openadr._mapping_tables import MappingTable, Rule
from sef.openadr._model import DrEvent, DrInterval, DrSignal, EventStatus, Targets
from sef.openadr._plan import Command as EnergyCommand
from sef.openadr._plan import (
    Dispatch,
    FleetMember,
    MemberKind,
    Plan,
    TargetWindow,
    Unsupported,
)

__all__ = ["MAX_DURATION_S", "plan_event", "targeted_members"]

MAX_DURATION_S = 32767
"""Longest duration one ``EnergyMethod`` event carries (int16), s."""

_GAP_S = 1e-3
"""Intervals further apart than this (s) are a gap or an overlap."""

_NAMED_UNKNOWN = 10
"""Unknown target names a refusal names; the rest are counted."""
_NAME_CHARS = 64
"""Characters of a target name a refusal quotes."""

_RESTORE: dict[MemberKind, EnergyCommand] = {
    MemberKind.BATTERY: ("idle", 0, 1),
    MemberKind.WATER_HEATER: ("endshed", 0, 1),
}


def targeted_members(
    targets: Targets, fleet: Sequence[FleetMember]
) -> tuple[tuple[FleetMember, ...], tuple[str, ...]]:
    """The members an event's targets address, and the target names that matched none.

    No group and no resource named: the whole fleet. A group matches members in that group;
    a resource matches members in a group of that name or the agent of that id.
    """
    if targets.whole_fleet:
        return tuple(fleet), ()
    groups = set(targets.groups) | set(targets.resources)
    agents = set(targets.resources)
    chosen = tuple(m for m in fleet if groups.intersection(m.groups) or m.agent_id in agents)
    known = {g for m in fleet for g in m.groups} | {m.agent_id for m in fleet}
    unknown_groups = [g for g in targets.groups if g not in {x for m in fleet for x in m.groups}]
    unknown_resources = [r for r in targets.resources if r not in known]
    return chosen, tuple(dict.fromkeys(unknown_groups + unknown_resources))


def plan_event(
    event: DrEvent,
    fleet: Sequence[FleetMember],
    table: MappingTable,
    *,
    live_control: bool = False,
    now_s: float | None = None,
) -> Plan | Unsupported:
    """Map one event version.

    Args:
        event: the event.
        fleet: every agent the EMS knows (the mapping picks the targeted, online ones).
        table: the mapping table (:func:`~sef.openadr.load_mapping`).
        live_control: the live controller runs: capacity limits and whole-fleet
            LOAD_DISPATCH setpoints become target windows.
        now_s: the EMS clock, Unix s; intervals already over are skipped and a running one
            is cut to what is left. ``None``: plan the whole event.

    Returns:
        A :class:`Plan`, or :class:`Unsupported` naming why the event cannot be carried out
        (the VEN opts out, nothing is sent). Never raises for any event.
    """
    usable = [m for m in fleet if _readable(m)]  # a member with a NaN rating gets nothing
    try:
        return _plan(event, usable, table, live_control, now_s)
    except Refused as exc:
        return Unsupported(exc.reason)


def _readable(member: FleetMember) -> bool:
    """Whether every number the mapping reads of ``member`` is finite (the fleet view gives
    only finite ones; a caller's own fleet may not)."""
    numbers = (
        member.charge_rate_kw,
        member.discharge_rate_kw,
        member.capacity_kwh,
        member.soc_min_pct,
        member.soc_max_pct,
        0.0 if member.soc_pct is None else member.soc_pct,
        0.0 if member.power_kw is None else member.power_kw,
    )
    return all(math.isfinite(x) for x in numbers)


def _plan(
    event: DrEvent,
    fleet: Sequence[FleetMember],
    table: MappingTable,
    live_control: bool,
    now_s: float | None,
) -> Plan:
    if event.status is EventStatus.CANCELLED:
        raise Refused("the event is cancelled")
    signal, rule = _choose_signal(event, table)
    _check_signal(signal, rule, table)
    _check_times(event, signal, table, now_s)
    intervals = _remaining(signal.intervals, now_s)
    t0 = intervals[0].start_s
    seconds = _whole_seconds(intervals, t0)
    values = [iv.value for iv in intervals]
    name = signal.name

    if rule.method in ("import_limit", "demand_charge"):
        return _window_plan(rule, signal, intervals, fleet, table, live_control, name)

    members, unknown = targeted_members(event.targets, fleet)
    if not members and unknown:
        raise Refused(f"the event's targets name no known group or agent: {_names(unknown)}")
    kinds = (
        (MemberKind.BATTERY,)
        if rule.method.startswith("soc_")
        else (MemberKind.BATTERY, MemberKind.WATER_HEATER)
    )
    usable = [m for m in members if m.online and m.kind in kinds]
    if not usable:
        what = "battery" if kinds == (MemberKind.BATTERY,) else "battery or water heater"
        offline = sorted(m.agent_id for m in members if not m.online and m.kind in kinds)
        tail = f" (offline: {', '.join(offline)})" if offline else ""
        raise Refused(f"{signal.name} {signal.type}: no online {what} in the event's targets{tail}")

    requested: float | None = None
    if rule.method == "bands":
        steps = band_steps(rule, usable, values, seconds)
    elif rule.method.startswith("power_"):
        if live_control and rule.method == "power_setpoint" and event.targets.whole_fleet:
            return _follow_plan(intervals, usable, name)
        deltas, _ = power_deltas(rule.method, usable, values)
        requested = max(deltas, key=abs)
        steps = power_steps(usable, deltas, seconds)
    else:
        steps = soc_steps(rule.method, signal.unit, usable, values, seconds, table.efficiency_pct)
    return _dispatch_plan(steps, usable, t0, requested, name)


def _choose_signal(event: DrEvent, table: MappingTable) -> tuple[DrSignal, Rule]:
    """The first signal the table supports; else the first signal's reason."""
    if not event.signals:
        raise Refused("the event has no signals")
    for signal in event.signals:
        rule = table.rule_for(signal.name, signal.type)
        if rule is not None and rule.method != "unsupported":
            return signal, rule
    first = event.signals[0]
    rule = table.rule_for(first.name, first.type)
    if rule is not None:
        raise Refused(rule.reason)
    raise Refused(f"unsupported signal {first.name} (type {first.type})")


def _check_signal(signal: DrSignal, rule: Rule, table: MappingTable) -> None:
    """Refuse a malformed signal: units, values, interval timing."""
    name = f"{signal.name} {signal.type}"
    if signal.unit is not None and signal.unit.startswith("?"):
        raise Refused(f"{name}: unit {signal.unit[1:]!r} is not understood")
    if signal.unit not in rule.units:
        accepted = ", ".join(u or "no unit" for u in rule.units)
        raise Refused(f"{name}: unit {signal.unit or 'none'} not accepted (accepted: {accepted})")
    if not signal.intervals:
        raise Refused(f"{name}: the signal has no intervals")
    for i, iv in enumerate(signal.intervals):
        where = f"{name} interval {i}"
        if not math.isfinite(iv.start_s):
            raise Refused(f"{where}: start is not a finite time")
        if not math.isfinite(iv.duration_s) or iv.duration_s <= 0:
            raise Refused(f"{where}: duration {iv.duration_s!r} s is not a positive finite time")
        if not math.isfinite(iv.value):
            raise Refused(f"{where}: value {iv.value!r} is not a finite number")
        if not rule.min_value <= iv.value <= rule.max_value:
            raise Refused(
                f"{where}: value {iv.value:g} outside {rule.min_value:g}…{rule.max_value:g}"
            )
        if rule.integral and iv.value != int(iv.value):
            raise Refused(f"{where}: value {iv.value:g} is not a whole number")
        if i:
            prev_end = signal.intervals[i - 1].end_s
            if iv.start_s > prev_end + _GAP_S:
                raise Refused(
                    f"{where}: gap of {iv.start_s - prev_end:g} s after the previous interval"
                )
            if iv.start_s < prev_end - _GAP_S:
                raise Refused(
                    f"{where}: overlaps the previous interval by {prev_end - iv.start_s:g} s"
                )
    span = signal.intervals[-1].end_s - signal.intervals[0].start_s
    if not math.isfinite(span) or span > table.max_event_s:
        raise Refused(
            f"{name}: the event lasts {span / 3600:g} h, longer than the "
            f"{table.max_event_s / 3600:g} h the mapping accepts"
        )


def _check_times(
    event: DrEvent, signal: DrSignal, table: MappingTable, now_s: float | None
) -> None:
    """Refuse a start further ahead than ``[limits] max_lead_s`` (from ``now_s``) and a
    random-start window wider than ``[limits] max_randomize_s``."""
    window = event.randomize_s
    if not window <= table.max_randomize_s:  # NaN too
        raise Refused(
            f"the random-start window of {window:g} s is wider than the "
            f"{table.max_randomize_s:g} s the mapping accepts ([limits] max_randomize_s)"
        )
    if now_s is None or not math.isfinite(now_s):
        return
    lead = max(event.start_s, signal.intervals[0].start_s) - now_s
    if not lead <= table.max_lead_s:
        raise Refused(
            f"the event starts {lead / 86400:g} days from now, further ahead than the "
            f"{table.max_lead_s / 86400:g} days the mapping accepts ([limits] max_lead_s)"
        )


def _names(names: Sequence[str]) -> str:
    """Target names for a refusal: the first :data:`_NAMED_UNKNOWN`, each cut to
    :data:`_NAME_CHARS` printable characters, then how many more there are."""
    shown = []
    for name in names[:_NAMED_UNKNOWN]:
        clean = "".join(c if c.isprintable() else "?" for c in name[:_NAME_CHARS])
        shown.append(clean + ("…" if len(name) > _NAME_CHARS else ""))
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _remaining(intervals: Sequence[DrInterval], now_s: float | None) -> list[DrInterval]:
    """The intervals not over at ``now_s``, the running one cut to what is left."""
    if now_s is None or not math.isfinite(now_s):
        return list(intervals)
    left = [iv for iv in intervals if iv.end_s > now_s + 0.5]
    if not left:
        raise Refused("the event is already over")
    first = left[0]
    if first.start_s < now_s:
        left[0] = DrInterval(now_s, first.end_s - now_s, first.value)
    return left


def _whole_seconds(intervals: Sequence[DrInterval], t0: float) -> list[int]:
    """Each interval's length in whole s, rounded at the boundaries so they don't drift."""
    ends = [round(iv.end_s - t0) for iv in intervals]
    seconds = [b - a for a, b in zip([0, *ends[:-1]], ends, strict=True)]
    if sum(seconds) < 1:
        raise Refused("the event has less than 1 s left")
    return seconds


def _sequence(steps: Sequence[Step]) -> list[EnergyCommand]:
    """Merge equal neighbours, drop empty steps, split durations at the int16 limit."""
    merged: list[Step] = []
    for cmd, rate, secs in steps:
        if secs <= 0:
            continue
        if merged and merged[-1][:2] == (cmd, rate):
            merged[-1] = (cmd, rate, merged[-1][2] + secs)
        else:
            merged.append((cmd, rate, secs))
    out: list[EnergyCommand] = []
    for cmd, rate, secs in merged:
        left = secs
        while left > 0:
            chunk = min(left, MAX_DURATION_S)
            out.append((cmd, rate, chunk))
            left -= chunk
    return out


def _dispatch_plan(
    steps: dict[str, list[Step]],
    members: Sequence[FleetMember],
    t0: float,
    requested: float | None,
    name: str,
) -> Plan:
    """One sequence per agent from ``t0``; identical sequences share a Dispatch; more than
    256 events → further Dispatches starting where the previous one ends."""
    by_sequence: dict[tuple[EnergyCommand, ...], list[str]] = {}
    for agent, agent_steps in steps.items():
        by_sequence.setdefault(tuple(_sequence(agent_steps)), []).append(agent)
    dispatches: list[Dispatch] = []
    for sequence, agents in by_sequence.items():
        if not sequence:
            continue
        offset = 0
        for i in range(0, len(sequence), MAX_EVENTS):
            chunk = sequence[i : i + MAX_EVENTS]
            dispatches.append(Dispatch(tuple(sorted(agents)), t0 + offset, chunk))
            offset += sum(c[2] for c in chunk)
    dispatches.sort(key=lambda d: (d.start_s, d.agents))
    commanded = {a for d in dispatches for a in d.agents}
    restore = []
    for kind, command in _RESTORE.items():
        kind_agents = tuple(
            sorted(m.agent_id for m in members if m.kind is kind and m.agent_id in commanded)
        )
        if kind_agents:
            restore.append(Dispatch(kind_agents, t0, (command,)))
    return Plan(tuple(dispatches), (), tuple(restore), requested, name)


def _follow_plan(
    intervals: Sequence[DrInterval], members: Sequence[FleetMember], name: str
) -> Plan:
    """A whole-fleet LOAD_DISPATCH setpoint for the live controller: follow P kW."""
    windows = tuple(TargetWindow(iv.start_s, iv.end_s, target_kw=iv.value) for iv in intervals)
    requested = None
    if all(m.power_kw is not None for m in members):
        current = sum(m.power_kw or 0.0 for m in members)
        requested = max((iv.value - current for iv in intervals), key=abs)
    return Plan((), windows, (), requested, name)


def _window_plan(
    rule: Rule,
    signal: DrSignal,
    intervals: Sequence[DrInterval],
    fleet: Sequence[FleetMember],
    table: MappingTable,
    live_control: bool,
    name: str,
) -> Plan:
    """Capacity limits for the live controller: IMPORT_CAPACITY_LIMIT, DEMAND_CHARGE."""
    if rule.method == "demand_charge":
        if not live_control or table.contracted_kw is None:
            raise Refused(
                f"{signal.name} needs the live controller and a contracted demand "
                f"([demand_charge] contracted_kw) in the mapping table"
            )
        limits = [table.contracted_kw] * len(intervals)
    else:
        if not live_control:
            raise Refused(f"{signal.name} needs the live controller")
        limits = [iv.value for iv in intervals]
    windows = tuple(
        TargetWindow(iv.start_s, iv.end_s, limit_kw=limit)
        for iv, limit in zip(intervals, limits, strict=True)
    )
    meters = [
        m for m in fleet if m.kind is MemberKind.METER and m.online and m.power_kw is not None
    ]
    requested = None
    if meters:
        feeder = sum(m.power_kw or 0.0 for m in meters)
        requested = min(0.0, min(limit - feeder for limit in limits))
    return Plan((), windows, (), requested, name)

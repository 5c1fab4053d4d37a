"""Per-method arithmetic of the mapping: what each targeted device does in each interval.

Each function takes the values and whole-second durations of the (remaining) intervals and
returns, per agent, its steps ``(cmd, rate_kW, seconds)`` whose seconds add up to the
intervals' durations. :mod:`sef.openadr._mapping` validates the event first and turns the
steps into ``EnergyMethod`` sequences. Units: kW, kWh, %, s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sef.interface import Command
from sef.openadr._mapping_tables import BandAction, Rule
from sef.openadr._plan import FleetMember, MemberKind

__all__ = [
    "MAX_RATE_KW",
    "Refused",
    "Step",
    "band_steps",
    "power_deltas",
    "power_steps",
    "rate_kw",
    "soc_steps",
]

Step = tuple[str, int, int]
"""``(cmd, rate_kW, seconds)``."""

MAX_RATE_KW = 32767
"""Largest rate an ``EnergyMethod`` event carries (int16), kW."""

_EPS = 1e-9


class Refused(Exception):
    """The event cannot be mapped; ``reason`` is the opt-out's words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def rate_kw(kw: float, rating_kw: float) -> int:
    """An ``EnergyMethod`` rate for ``kw``: rounded up to whole kW, at most the device's rating
    (rounded up too: the agent clips the fraction, ``docs/bis.md``) and 0…32 767."""
    if not math.isfinite(kw) or kw <= 0 or not math.isfinite(rating_kw) or rating_kw <= 0:
        return 0
    cap = math.ceil(rating_kw - _EPS)
    return max(0, min(math.ceil(kw - _EPS), cap, MAX_RATE_KW))


def _battery_rating(member: FleetMember, cmd: Command) -> float:
    if cmd is Command.CHARGE:
        return member.charge_rate_kw
    if cmd in (Command.DISCHARGE, Command.SHED):
        return member.discharge_rate_kw
    return 0.0


def _action_step(member: FleetMember, action: BandAction, value: float, seconds: int) -> Step:
    if member.kind is MemberKind.BATTERY:
        rating = _battery_rating(member, action.cmd)
        return (action.cmd.value, rate_kw(rating * action.share(value), rating), seconds)
    return (action.cmd.value, 0, seconds)  # a CTA-2045 heater ignores the rate


def band_steps(
    rule: Rule, members: Sequence[FleetMember], values: Sequence[float], seconds: Sequence[int]
) -> dict[str, list[Step]]:
    """A ``bands`` rule: each interval's value picks a band, the band names the command."""
    steps: dict[str, list[Step]] = {m.agent_id: [] for m in members}
    for value, secs in zip(values, seconds, strict=True):
        band = rule.band_for(value)
        if band is None:  # load_mapping makes the first band cover min; values are checked
            raise Refused(f"value {value:g} is below every band of the table")
        for m in members:
            action = band.battery if m.kind is MemberKind.BATTERY else band.water_heater
            steps[m.agent_id].append(_action_step(m, action, value, secs))
    return steps


def power_deltas(
    method: str, members: Sequence[FleetMember], values: Sequence[float]
) -> tuple[list[float], float | None]:
    """The change of the targeted load each interval asks for, kW, and the current load (kW,
    ``None`` where unknown), for a LOAD_DISPATCH ``power_setpoint`` / ``power_delta`` /
    ``power_multiplier``.

    Raises:
        Refused: a setpoint or multiplier while a member reports no power.
    """
    missing = [m.agent_id for m in members if m.power_kw is None]
    current = None if missing else sum(m.power_kw or 0.0 for m in members)
    if method == "power_delta":
        return list(values), current
    if current is None:
        raise Refused(
            f"LOAD_DISPATCH {'setpoint' if method == 'power_setpoint' else 'multiplier'} needs "
            f"the present load of every targeted device; no power reading from "
            f"{', '.join(sorted(missing))}"
        )
    if method == "power_setpoint":
        return [v - current for v in values], current
    return [current * (v - 1.0) for v in values], current


def _allocate(total_kw: float, batteries: Sequence[FleetMember]) -> dict[str, Step]:
    """Split a battery total (kW, + charge) pro-rata to the ratings (1-s placeholder steps)."""
    out: dict[str, Step] = {}
    key = "charge_rate_kw" if total_kw > 0 else "discharge_rate_kw"
    pool = sum(max(0.0, getattr(b, key)) for b in batteries)
    for b in batteries:
        rating = max(0.0, getattr(b, key))
        if abs(total_kw) < 1e-6 or pool <= 0 or rating <= 0:
            out[b.agent_id] = (Command.IDLE.value, 0, 0)
            continue
        share = min(abs(total_kw), pool) * rating / pool
        cmd = Command.CHARGE if total_kw > 0 else Command.DISCHARGE
        rate = rate_kw(share, rating)
        out[b.agent_id] = (cmd.value, rate, 0) if rate else (Command.IDLE.value, 0, 0)
    return out


def power_steps(
    members: Sequence[FleetMember], deltas: Sequence[float], seconds: Sequence[int]
) -> dict[str, list[Step]]:
    """LOAD_DISPATCH: each interval's change Δ kW of the targeted load.

    Heaters shed for Δ < 0 (counted as removing their present power), load up for Δ > 0
    (counted as adding their spare element power) and run normally for Δ = 0; the batteries
    then take the rest, from their present power (idle when unknown), pro-rata to their
    ratings and clipped to them.
    """
    batteries = [m for m in members if m.kind is MemberKind.BATTERY]
    heaters = [m for m in members if m.kind is MemberKind.WATER_HEATER]
    heater_now = sum(max(0.0, h.power_kw or 0.0) for h in heaters)
    heater_spare = sum(max(0.0, h.charge_rate_kw - max(0.0, h.power_kw or 0.0)) for h in heaters)
    battery_now = sum(b.power_kw or 0.0 for b in batteries)
    most_charge = sum(max(0.0, b.charge_rate_kw) for b in batteries)
    most_discharge = sum(max(0.0, b.discharge_rate_kw) for b in batteries)
    steps: dict[str, list[Step]] = {m.agent_id: [] for m in members}
    for delta, secs in zip(deltas, seconds, strict=True):
        if delta < -_EPS:
            heater_cmd, heater_change = Command.SHED, -heater_now
        elif delta > _EPS:
            heater_cmd, heater_change = Command.CHARGE, heater_spare
        else:
            heater_cmd, heater_change = Command.ENDSHED, 0.0
        for h in heaters:
            steps[h.agent_id].append((heater_cmd.value, 0, secs))
        target = battery_now + delta - heater_change
        target = min(most_charge, max(-most_discharge, target))
        for agent, (cmd, rate, _) in _allocate(target, batteries).items():
            steps[agent].append((cmd, rate, secs))
    return steps


def soc_steps(
    method: str,
    unit: str | None,
    batteries: Sequence[FleetMember],
    values: Sequence[float],
    seconds: Sequence[int],
    efficiency_pct: float,
) -> dict[str, list[Step]]:
    """CHARGE_STATE: each battery charges or discharges at its rating until the target state
    of charge (clipped to its SOC window) is reached, then idles, interval by interval.

    The time is ``3600·E/(P·η)`` s to store ``E`` kWh (``3600·E·η/P`` to give it); a delta or
    multiplier is relative to the state of charge at the start.

    Raises:
        Refused: a battery without a state of charge or capacity.
    """
    eta = efficiency_pct / 100.0
    steps: dict[str, list[Step]] = {}
    for b in batteries:
        if b.soc_pct is None or not math.isfinite(b.soc_pct) or b.capacity_kwh <= 0:
            raise Refused(
                f"CHARGE_STATE needs the state of charge and capacity of every targeted battery; "
                f"{b.agent_id} reports none"
            )
        start = soc = b.soc_pct
        out: list[Step] = []
        for value, secs in zip(values, seconds, strict=True):
            as_pct = value * 100.0 / b.capacity_kwh if unit == "kWh" else value
            if method == "soc_setpoint":
                goal = as_pct
            elif method == "soc_delta":
                goal = start + as_pct
            else:
                goal = start * value
            goal = min(b.soc_max_pct, max(b.soc_min_pct, goal))
            energy = (goal - soc) * b.capacity_kwh / 100.0
            charging = energy > 0
            rating = b.charge_rate_kw if charging else b.discharge_rate_kw
            rate = rate_kw(rating, rating)
            power = min(float(rate), rating)
            if abs(energy) < 1e-6 or rate == 0:
                out.append((Command.IDLE.value, 0, secs))
                continue
            need_s = 3600.0 * energy / (power * eta) if charging else 3600.0 * -energy * eta / power
            run = min(secs, max(1, math.ceil(need_s - _EPS)))
            cmd = Command.CHARGE if charging else Command.DISCHARGE
            out.append((cmd.value, rate, run))
            if run < secs:
                out.append((Command.IDLE.value, 0, secs - run))
                soc = goal
            else:
                moved = power * run / 3600.0 * (eta if charging else 1.0 / eta)
                soc += (moved if charging else -moved) * 100.0 / b.capacity_kwh
        steps[b.agent_id] = out
    return steps

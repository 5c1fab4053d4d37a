"""The departure guard: would an event sequence leave an EV short at its departure?

The EV declared (``NotifyEVChargingNeeds``, or SEF's 1.6 ``DataTransfer``) when it leaves
and how much AC energy it wants. A sequence is checked by the energy it would let the
charger deliver before the departure:

* ``charge:R`` delivers ``min(R, max_kw)``; ``idle``, ``shed`` and ``discharge`` (an EV
  charger does not discharge) deliver 0; ``endshed`` delivers ``max_kw``;
* an open-ended event (duration 0) lasts until the departure;
* after a timed sequence the agent releases the charger (its own ``idle``: the charger's
  default, full rate), so the rest of the time delivers ``max_kw``.

``max_kw`` is the smaller of the charger's rating and the EV's declared maximum. The
taper near full is ignored (optimistic: the guard refuses only what certainly misses).
A sequence is *forced* when it holds a ``shed`` (the grid operator's curtailment, which
the agent must obey); the guard then only warns.
"""

from __future__ import annotations

from collections.abc import Sequence

from sef.interface import Command, EnergyEvent

__all__ = ["TOLERANCE_KWH", "deliverable_kwh", "departure_problem", "is_forced"]

TOLERANCE_KWH = 0.01
"""Shortfall below which a sequence still counts as meeting the need (kWh)."""


def deliverable_kwh(events: Sequence[EnergyEvent], left_s: float, max_kw: float) -> float:
    """AC energy (kWh) the sequence lets the charger deliver in the next ``left_s`` s."""
    t = energy = 0.0
    for event in events:
        if t >= left_s:
            break
        span = left_s - t if event.duration_s == 0 else min(event.duration_s, left_s - t)
        if event.cmd is Command.CHARGE:
            rate = min(float(event.rate_kw), max_kw)
        elif event.cmd is Command.ENDSHED:
            rate = max_kw
        else:
            rate = 0.0
        energy += rate * span / 3600.0
        t += span
        if event.duration_s == 0:
            return energy
    return energy + max_kw * max(left_s - t, 0.0) / 3600.0


def is_forced(events: Sequence[EnergyEvent]) -> bool:
    """A sequence with a ``shed`` is the grid operator's: never refused."""
    return any(e.cmd is Command.SHED for e in events)


def departure_problem(
    events: Sequence[EnergyEvent],
    *,
    now_s: float,
    departure_s: float | None,
    remaining_kwh: float | None,
    max_kw: float,
) -> str | None:
    """Why ``events`` would miss the declared departure energy, or None when they meet it
    (or nothing is declared)."""
    if departure_s is None or remaining_kwh is None or remaining_kwh <= TOLERANCE_KWH:
        return None
    left_s = max(departure_s - now_s, 0.0)
    can = deliverable_kwh(events, left_s, max_kw)
    if can >= remaining_kwh - TOLERANCE_KWH:
        return None
    return (
        f"would deliver {can:.2f} kWh of the {remaining_kwh:.2f} kWh the EV needs before its "
        f"departure in {left_s / 3600:.2f} h (at most {max_kw:.1f} kW)"
    )

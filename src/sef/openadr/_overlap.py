"""Arbitration between overlapping events on one device (pure logic, no I/O).

OpenADR 2.0b semantics as the executor (:mod:`sef.openadr._executor`) applies them, per
agent: of the event versions whose span covers the agent now, the one with the best
**rank** holds the device: the better priority (``DrEvent.priority``: 1 is the highest,
0 = none given = the lowest), and on equal priority the newer event (received later).
When the holder ends or is cancelled, the next one resumes with what is left of its
sequence from now (:func:`remaining_commands`).
"""

from __future__ import annotations

import math

from sef.openadr._plan import Command, Plan

__all__ = ["Rank", "rank", "remaining_commands"]

Rank = tuple[float, int]
"""Sort key of an event version on a device: lower holds it."""

MIN_LEFT_S = 0.5
"""A command with less than this left, s, is over (as the mapping cuts intervals)."""


def rank(priority: int, arrival: int) -> Rank:
    """The rank of an event: its priority (≤ 0: none given, the lowest), then newer first.

    Args:
        priority: ``DrEvent.priority`` (1 is the highest; 0: none given).
        arrival: the event's arrival number at the bridge (higher: received later).
    """
    return (float(priority) if priority > 0 else math.inf, -arrival)


def remaining_commands(
    plan: Plan, agent: str, offset_s: float, now_s: float
) -> tuple[Command, ...]:
    """What is left at ``now_s`` of the plan's sequence for ``agent``: the dispatch running
    now (the latest one due by then), its commands over dropped and the running one cut to
    the whole seconds left (at least 1 s; an open-ended last command is kept as it is).
    Empty when nothing of it is left. Later dispatches are not included (the executor sends
    them at their own times).

    Args:
        plan: the event version's plan.
        agent: the agent.
        offset_s: the version's random start offset, s.
        now_s: now, Unix s on the EMS clock.
    """
    started = [
        d for d in plan.dispatches if agent in d.agents and d.start_s + offset_s <= now_s + 1e-6
    ]
    if not started:
        return ()
    current = max(started, key=lambda d: d.start_s)
    t = current.start_s + offset_s
    left: list[Command] = []
    for cmd, rate, duration in current.commands:
        if duration <= 0:  # open-ended: runs until replaced
            left.append((cmd, rate, duration))
            break
        end = t + duration
        if end > now_s + MIN_LEFT_S:
            left.append((cmd, rate, max(1, round(end - max(t, now_s)))))
        t = end
    return tuple(left)

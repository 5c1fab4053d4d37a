"""What each agent should be running: the last ``EnergyMethod`` sequence the EMS sent it.

When an agent comes back (a new session after a crash, a network cut, a frozen process),
it may have lost or reverted its sequence. The EMS knows what it sent and when, so it can
compute what the agent should be running *now* — the rest of the sequence, with the
running event shortened by the time already spent — and send exactly that again
(*reconcile*). A sequence whose last timed event has ended needs nothing: the agent idles
by itself.

Memory: one :class:`Intent` per call, shared by every member of a group call; the book
keeps one reference per agent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sef.interface import Command, EnergyEvent

__all__ = ["Intent", "IntentBook"]


@dataclass(frozen=True, slots=True)
class Intent:
    """A sequence sent at ``sent_at`` (clock time, Unix s) by call ``call_id``."""

    events: tuple[EnergyEvent, ...]
    sent_at: float
    call_id: str

    def remaining(self, now: float) -> list[EnergyEvent]:
        """The events still due at ``now`` (clock s): the running one shortened to what is
        left of it (whole seconds, rounded up), then the later ones; ``[]`` when over."""
        start = self.sent_at
        for index, event in enumerate(self.events):
            if event.duration_s == 0:  # open-ended: runs until the next command
                return [event]
            end = start + event.duration_s
            if now < end:
                left = max(1, math.ceil(end - now))
                running = EnergyEvent(event.cmd, event.rate_kw, left)
                return [running, *self.events[index + 1 :]]
            start = end
        return []


class IntentBook:
    """The last intent per agent."""

    def __init__(self) -> None:
        self._by_agent: dict[str, Intent] = {}

    def __len__(self) -> int:
        return len(self._by_agent)

    def record(self, agents: Iterable[str], events: Sequence[EnergyEvent], sent_at: float,
               call_id: str) -> None:  # fmt: skip
        """Remember that ``events`` were sent to ``agents`` at ``sent_at`` (clock s)."""
        intent = Intent(tuple(events), sent_at, call_id)
        for agent_id in agents:
            self._by_agent[agent_id] = intent

    def get(self, agent_id: str) -> Intent | None:
        """The last intent sent to ``agent_id``, if any."""
        return self._by_agent.get(agent_id)

    def forget(self, agent_id: str) -> None:
        """Drop what the book knows of ``agent_id``."""
        self._by_agent.pop(agent_id, None)

    def due(self, agent_id: str, now: float) -> list[EnergyEvent]:
        """What ``agent_id`` should be running from ``now`` on (``[]``: nothing to resend).

        An open-ended ``idle`` needs no resending either: it is what an agent does alone.
        """
        intent = self._by_agent.get(agent_id)
        events = intent.remaining(now) if intent is not None else []
        if len(events) == 1 and events[0].cmd is Command.IDLE and events[0].duration_s == 0:
            return []
        return events

"""Reconcile: when an agent comes back, send it what it should be running now.

An agent that crashed, froze or lost its network may come back idle (its device reverted,
its host-loss policy ended an open-ended event) or with a stale sequence. The EMS notes
every ``EnergyMethod`` sequence it sends (:class:`~sef.ems._intents.IntentBook`), restores
that book from its command log at start, and when an agent comes online again sends the
rest of its sequence from now on. Such calls have ids starting with
:data:`RECONCILE_PREFIX`, so the command log shows them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sef.clock import Clock
from sef.ems._caller import CallRefused, CallTarget, CheckedArgs
from sef.ems._intents import IntentBook
from sef.interface import DEMO_INTERFACE, EnergyEvent, TypeMismatch, parse_events

__all__ = ["METHOD", "RECONCILE_PREFIX", "Reconciler"]

log = logging.getLogger("sef.ems.reconcile")

METHOD = "EnergyMethod"
RECONCILE_PREFIX = "reconcile-"
"""Call id prefix of the commands the EMS sends to reconcile an agent."""
RESTORE_WINDOW_S = 2 * 86_400.0
"""How far back the command log is read at start, clock s."""
_FAILED = {"refused", "error", "expired", "timeout"}


def _events(args: Sequence[Any]) -> list[EnergyEvent] | None:
    """The events of ``EnergyMethod`` arguments (JSON form), or None if they are not."""
    try:
        (cmds,) = args
        return parse_events([(str(c), int(r), int(d)) for c, r, d in cmds])
    except (TypeError, ValueError, TypeMismatch):
        return None


class Reconciler:
    """What each agent should run, and what to send it when it comes back.

    Args:
        clock: the EMS's clock (intents are timed on it).
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.book = IntentBook()
        self.sent = 0
        """Reconcile calls sent so far."""

    def note(
        self, members: Iterable[str], checked: CheckedArgs, sent_at: float, call_id: str
    ) -> None:
        """Remember a call sent to ``members`` at ``sent_at`` (clock s), if it is a sequence."""
        if (checked.interface, checked.method) != (DEMO_INTERFACE, METHOD):
            return
        events = _events(checked.args)
        if events is not None:
            self.book.record(members, events, sent_at, call_id)

    def restore(
        self,
        rows: Iterable[dict[str, Any]],
        members_of: Callable[[CallTarget], Iterable[str] | None],
    ) -> int:
        """Rebuild the book from command-log rows (any order); returns how many were used.

        A sequence that no agent took (refused, error, expired, timed out) is skipped; a
        group's members are those the registry knows now.
        """
        used = 0
        for row in sorted(rows, key=lambda r: float(r.get("ts") or 0.0)):
            if (row.get("interface"), row.get("method")) != (DEMO_INTERFACE, METHOD):
                continue
            if row.get("status") in _FAILED:
                continue
            events = _events(row.get("args") or [])
            try:
                target = CallTarget.parse(str(row.get("target")))
            except (ValueError, CallRefused):
                continue
            if events is None:
                continue
            self.book.record(members_of(target) or (), events, float(row["ts"]), row["call_id"])
            used += 1
        return used

    def due(self, agent_id: str) -> list[EnergyEvent]:
        """What ``agent_id`` should run from now on (``[]``: nothing to send)."""
        return self.book.due(agent_id, self.clock.now())

    @staticmethod
    def args(events: Sequence[EnergyEvent]) -> list[Any]:
        """``EnergyMethod`` arguments (JSON form) for ``events``."""
        return [[list(event.as_tuple()) for event in events]]

"""Admission of new agents: which agent ids the registry takes in.

A message of an agent id the registry does not know creates a record only if the id is
admitted (:class:`Admission`): an allow-list of ids or glob patterns, or an operator
approval mode (new ids wait in :attr:`Registry.pending <sef.ems._registry.Registry>`), a
token-bucket rate limit on new ids and a cap on the number of agents. Refused messages are
counted by reason (``Registry.refused``), refused ids too (``Registry.refused_ids``), and
logged in aggregate.

:class:`AdmissionRules` holds the registry's admission steps;
:class:`~sef.ems._registry.Registry` inherits them and keeps their state.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sef.ems._events import Discovered, Event, Pending
from sef.ems._records import AgentRecord
from sef.logthrottle import LogThrottle

__all__ = ["REFUSED_IDS_REMEMBERED", "Admission", "AdmissionRules", "PendingAgent"]

log = logging.getLogger("sef.ems.registry")

REFUSED_IDS_REMEMBERED = 10_000
"""Distinct refused agent ids remembered (to count each once, and to know that an agent
admitted later missed its birth)."""


@dataclass(frozen=True, slots=True)
class Admission:
    """Which new agent ids the registry takes in (known agents are never refused).

    Args:
        allow: agent ids or glob patterns (``bat-*``, ``home-??-wh``); empty: any id.
        approval: ids not allowed wait as pending until an operator approves them
            (:meth:`Registry.approve`) instead of being refused. With an empty ``allow``
            every new id waits.
        max_agents: most agents in the registry (``None``: no cap).
        new_per_s: new agents admitted per second, on average (``None``: no limit).
        burst: new agents admitted at once before the rate applies.
        max_pending: most agents waiting for approval.
    """

    allow: tuple[str, ...] = ()
    approval: bool = False
    max_agents: int | None = 10_000
    new_per_s: float | None = 100.0
    burst: int = 2000
    max_pending: int = 1000

    @classmethod
    def open(cls) -> Admission:
        """Admit every id at once, no cap (read-only tools, benchmarks, tests)."""
        return cls(max_agents=None, new_per_s=None)

    def allows(self, agent_id: str) -> bool:
        """Whether ``agent_id`` is on the allow-list (or there is none)."""
        if not self.allow:
            return True
        return any(
            agent_id == pattern or fnmatch.fnmatchcase(agent_id, pattern) for pattern in self.allow
        )


@dataclass(slots=True)
class PendingAgent:
    """A new agent waiting for approval: when it was seen and how many messages it sent
    (the messages themselves are dropped; approval asks the agent to re-announce)."""

    agent_id: str
    first_seen: float
    last_seen: float
    messages: int = 0

    def summary(self) -> dict[str, Any]:
        """A JSON-able view for the API."""
        return {
            "id": self.agent_id,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "messages": self.messages,
        }


class AdmissionRules:
    """The registry's admission of new agent ids (a mixin of
    :class:`~sef.ems._registry.Registry`, which sets the state below)."""

    agents: dict[str, AgentRecord]
    admission: Admission
    monotonic: Callable[[], float]
    pending: dict[str, PendingAgent]
    approved: set[str]
    refused: dict[str, int]
    refused_ids: int
    log_refused: LogThrottle
    _refused_recent: dict[str, None]
    _tokens: float
    _tokens_at: float | None
    _new_ids: list[str]

    def approve(self, agent_id: str) -> bool:
        """Admit ``agent_id`` (pending or not seen yet) from now on, bypassing the
        allow-list, the rate limit and the cap. Returns whether it was pending."""
        self.approved.add(agent_id)
        self._refused_recent.pop(agent_id, None)
        self._refused_recent[agent_id] = None  # an approved agent re-announces when admitted
        return self.pending.pop(agent_id, None) is not None

    def _admit(self, agent_id: str, now: float) -> tuple[AgentRecord | None, list[Event]]:
        """A record for a new agent id if it is admitted; else why not (counted)."""
        policy = self.admission
        approved = agent_id in self.approved
        if not approved:
            if policy.approval and not (policy.allow and policy.allows(agent_id)):
                return None, self._pend(agent_id, now)
            if not policy.allows(agent_id):
                return None, self._refuse(agent_id, "not_allowed")
            if policy.max_agents is not None and len(self.agents) >= policy.max_agents:
                return None, self._refuse(agent_id, "cap")
            if not self._take_token():
                return None, self._refuse(agent_id, "rate")
        missed = self._refused_recent.pop(agent_id, False) is None
        record = self.agents[agent_id] = AgentRecord(agent_id, first_seen=now)
        self._new_ids.append(agent_id)  # merged into the sorted ids on their next read
        return record, [Discovered(agent_id, missed=missed)]

    def _take_token(self) -> bool:
        rate = self.admission.new_per_s
        if rate is None:
            return True
        now = self.monotonic()
        if self._tokens_at is not None:
            self._tokens = min(
                float(self.admission.burst), self._tokens + (now - self._tokens_at) * rate
            )
        self._tokens_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def _refuse(self, agent_id: str, reason: str) -> list[Event]:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        if agent_id not in self._refused_recent:
            self.refused_ids += 1
            if len(self._refused_recent) >= REFUSED_IDS_REMEMBERED:
                del self._refused_recent[next(iter(self._refused_recent))]
            self._refused_recent[agent_id] = None
        self.log_refused.warn(
            agent_id,
            reason,
            "agent %s not admitted (%s): %s",
            agent_id,
            reason,
            _REFUSAL_TEXT.get(reason, reason),
        )
        return []

    def _pend(self, agent_id: str, now: float) -> list[Event]:
        waiting = self.pending.get(agent_id)
        if waiting is None:
            if len(self.pending) >= self.admission.max_pending:
                return self._refuse(agent_id, "pending_full")
            waiting = self.pending[agent_id] = PendingAgent(agent_id, now, now)
            log.warning("agent %s waits for approval (sef registry approve %s)", agent_id, agent_id)
            self.refused["pending"] = self.refused.get("pending", 0) + 1
            waiting.messages += 1
            return [Pending(agent_id)]
        self.refused["pending"] = self.refused.get("pending", 0) + 1
        waiting.messages += 1
        waiting.last_seen = now
        return []


_REFUSAL_TEXT = {
    "not_allowed": "not on the allow-list",
    "cap": "the registry is full (--max-agents)",
    "rate": "too many new agents per second (--new-agents-per-s); admitted later",
    "pending_full": "too many agents wait for approval already",
}

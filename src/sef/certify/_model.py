"""What a certification run produces: checks, their outcomes and the report.

A *check* tests one rule of ``docs/protocol.md`` against a live agent and ends PASS, FAIL
or SKIP with the rule's section and the evidence (what was sent and seen). Checks are
grouped in suites (``birth``, ``sessions``, ``calls``, ``demo``, ``robustness``) and each
has a level: ``required`` rules are MUSTs, ``recommended`` rules are SHOULDs; a run at
level ``recommended`` runs both.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

__all__ = [
    "Check",
    "CheckContext",
    "CheckFailed",
    "CheckResult",
    "CheckSkipped",
    "Level",
    "Observed",
    "Outcome",
    "Report",
]


class Outcome(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"


class Level(StrEnum):
    """How binding a rule is: ``required`` (MUST) or ``recommended`` (SHOULD)."""

    REQUIRED = "required"
    RECOMMENDED = "recommended"


class CheckFailed(Exception):
    """Raised by a check: the rule is broken; the message is the evidence."""


class CheckSkipped(Exception):
    """Raised by a check: the rule cannot be checked here (e.g. the agent does not
    implement the interface, no ``--restart-cmd``); the message says why."""


@dataclass(frozen=True, slots=True)
class Observed:
    """One MQTT message the certifier received.

    Attributes:
        topic: the topic.
        payload: the raw payload bytes.
        retain: the MQTT retain flag as delivered (``True`` for a retained message sent
            on subscription).
        qos: the QoS it was delivered with.
        at: when it arrived, ``time.monotonic()`` s.
    """

    topic: str
    payload: bytes
    retain: bool
    qos: int
    at: float

    def json(self) -> Any:
        """The payload parsed as JSON (``ValueError`` if it is not)."""
        import json

        return json.loads(self.payload.decode("utf-8"))


class CheckContext(Protocol):
    """What a check may do to the agent under test (implemented by ``_probe.Probe``).

    Every wait is bounded: a method that waits takes ``timeout_s`` and returns ``None`` or
    an empty list when nothing came.
    """

    agent_id: str
    root: str
    about: dict[str, Any] | None
    """The agent's About payload (parsed), as last seen; ``None`` before the birth."""
    interfaces: dict[str, bytes]
    """Interface name -> the XML bytes the agent published: on its own topic
    ``agents/{id}/interfaces/{name}`` (protocol version 1) or, else, on the hash topic
    ``{root}/interfaces/{sha256}`` its About names (version 2)."""
    blobs: dict[str, bytes]
    """SHA-256 -> the payload last seen on ``{root}/interfaces/{sha256}`` (unchecked)."""
    birth: list[Observed]
    """The messages of the agent's subtree seen since the probe subscribed, in order."""

    birth_pings: dict[int, asyncio.Task[dict[str, Any] | None]]
    """bdseq of each new session whose birth the certifier saw live -> the reply to a
    ``sef.Agent.Ping`` sent the moment that birth's status arrived (``None``: no reply
    within 5 s)."""
    expected_interfaces: dict[str, bytes]
    """Interface name -> the XML the agent is certified against (``--interface``)."""
    reply_topic: str
    """The certifier's own reply topic (``{root}/clients/{client}/reply``): where
    :meth:`call` asks for replies; replies arriving there are observed (``since``)."""

    def topic(self, suffix: str) -> str:
        """``{root}/{suffix}``."""
        ...

    def xml_from_hash(self, name: str) -> bool:
        """Whether interface ``name``'s XML is known from its hash topic only (protocol
        version 2), not from the agent's own topic (version 1)."""
        ...

    def agent_topic(self, suffix: str) -> str:
        """``{root}/agents/{agent_id}/{suffix}``."""
        ...

    async def call(
        self,
        interface: str,
        method: str,
        args: list[Any],
        *,
        group: str | None = None,
        call_id: str | None = None,
        exp_in_s: float = 30.0,
        reply: bool = True,
        extra: dict[str, Any] | None = None,
        omit: tuple[str, ...] = (),
        target: str | None = None,
        timeout_s: float = 5.0,
    ) -> dict[str, Any] | None:
        """Send a protocol call (signed when the probe has EMS credentials) to the agent
        (or ``target`` agent id, or ``group``) and return the first reply for it (parsed),
        or ``None`` after ``timeout_s``. ``extra`` keys are added to the Call object,
        ``omit`` keys removed (e.g. ``("sender",)``), ``exp_in_s`` may be negative."""
        ...

    async def publish_raw(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        """Publish any bytes (malformed JSON, oversized, wrong version) as the certifier."""
        ...

    async def publish_retained(self, topic: str, payload: bytes) -> bool:
        """Publish a retained message at QoS 1 as the certifier (a forged stale death);
        return whether the broker delivered it (``False``: refused, e.g. by its ACL; seen
        only when the certifier is subscribed to ``topic``)."""
        ...

    async def replies(self, call_id: str, timeout_s: float) -> list[dict[str, Any]]:
        """Every reply with ``id`` ``call_id`` that arrives within ``timeout_s``."""
        ...

    async def wait_message(
        self, predicate: Callable[[Observed], bool], timeout_s: float
    ) -> Observed | None:
        """The first message (already seen since ``mark()``, or arriving) matching."""
        ...

    async def subscribe(self, topic_filter: str) -> None:
        """Observe ``topic_filter`` too from now on (its messages appear in ``since`` and
        ``wait_message``), e.g. a topic a reply must *not* be published to; returns once
        the broker acknowledged the subscription."""
        ...

    def mark(self) -> int:
        """A position in the stream of observed messages (for ``since``)."""
        ...

    def since(self, mark: int) -> list[Observed]:
        """The messages observed after ``mark``."""
        ...

    def property_value(self, interface: str, name: str) -> Any:
        """The last value published for a property (``KeyError`` if never)."""
        ...

    def agent_messages(self, mark: int = 0) -> list[Observed]:
        """The messages the agent (or the broker, for its will) published under its own
        subtree after ``mark``: calls and the certifier's own publishes left out."""
        ...

    async def live_birth(self) -> list[Observed]:
        """A birth published live (not retained), from its status ``seq`` 0 on: asked for
        with ``sef.Agent.Rebirth`` (or, if the agent ignores it, by making it reconnect);
        taken once and cached. Raises :class:`CheckFailed` when none came."""
        ...

    async def retained_snapshot(self, settle_s: float = 0.5) -> dict[str, Observed]:
        """What a new subscriber gets now: topic -> retained message, for the agent's
        subtree and the certifier's reply topic (a fresh connection that subscribes and
        listens for ``settle_s`` s)."""
        ...

    async def reconnect_agent(self) -> int:
        """Make the agent lose its connection once (a client takes its client id over, as
        in docs/protocol.md §1) and return the ``mark()`` taken before; cached. Raises
        :class:`CheckSkipped` when the broker refuses the takeover."""
        ...

    async def restart_agent(self) -> int:
        """Have the agent's process restarted once (``--restart-cmd``, or the operator on
        a terminal) and return the ``mark()`` taken before; cached. Raises
        :class:`CheckSkipped` when there is no way to restart it."""
        ...


CheckFunction = Callable[[CheckContext], Awaitable[str]]
"""A check: returns the evidence of a PASS, raises :class:`CheckFailed` or
:class:`CheckSkipped`."""


@dataclass(frozen=True, slots=True)
class Check:
    """One rule.

    Attributes:
        id: stable key, ``<suite>.<name>`` (e.g. ``birth.order``).
        title: one line saying the rule.
        section: where the rule is in ``docs/protocol.md`` (e.g. ``§4.2``).
        level: required or recommended.
        run: the check.
        timeout_s: its own time limit, s (``None``: the run's per-check timeout), for a
            check that waits for an operator or a restart.
    """

    id: str
    title: str
    section: str
    level: Level
    run: CheckFunction
    timeout_s: float | None = None

    @property
    def suite(self) -> str:
        return self.id.split(".", 1)[0]


@dataclass(frozen=True, slots=True)
class CheckResult:
    check: Check
    outcome: Outcome
    evidence: str
    duration_s: float


@dataclass
class Report:
    """The results of one run, in order."""

    agent_id: str
    broker: str
    level: Level
    started_at: float = field(default_factory=time.time)
    results: list[CheckResult] = field(default_factory=list)
    duration_s: float = 0.0
    """How long the run took, s (set when it ends)."""

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.results if r.outcome is outcome)

    @property
    def passed(self) -> bool:
        """No check failed (skips do not fail a run)."""
        return self.count(Outcome.FAIL) == 0

"""What the EMS registry noticed: one frozen dataclass per kind of event.

:meth:`~sef.ems.Registry.handle` returns a list of :data:`Event`; a consumer matches on the
types (``match event: case Offline(agent_id, reason): ...`` or ``isinstance``), so mypy
catches a misspelt kind. Every event also has:

* ``kind``: its name on the wire (the ``event:`` of the ``/events`` stream, the ``kind`` of
  ``sef ems --json``, the ``kind`` column of the store's presence events);
* ``agent_id``: the agent it is about (for a gateway event: the home id);
* ``detail``: the ``detail`` of the ``/events`` stream and of ``sef ems --json`` (a JSON
  value, tuples standing for arrays; documented in ``docs/api.md``), whose ``str()`` is the
  ``detail`` column of the store's presence events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeAlias

__all__ = [
    "AboutReceived",
    "AgentEvent",
    "BadMessage",
    "Discovered",
    "Event",
    "EventKind",
    "Gap",
    "GatewayDown",
    "GatewayEvent",
    "GatewayUp",
    "InterfaceLoaded",
    "Offline",
    "Online",
    "Pending",
    "PropertyBackfilled",
    "PropertyChanged",
    "SessionReset",
    "SignalReceived",
    "StaleStatus",
]

EventKind: TypeAlias = Literal[
    "discovered",
    "online",
    "offline",
    "about",
    "property",
    "backfill",
    "interface",
    "signal",
    "gap",
    "stale_death",
    "bad_message",
    "gateway_up",
    "gateway_down",
    "pending",
    "reset",
]
"""The ``kind`` names of registry events, as they appear on the wire."""


@dataclass(frozen=True, slots=True)
class Discovered:
    """The first message of an agent the EMS did not know (admitted into the registry).

    ``missed`` is true when earlier messages of the agent were refused by the admission
    rate limit or cap, or it was approved by an operator: its birth was probably lost, so
    the EMS asks it to re-announce.
    """

    agent_id: str
    missed: bool = False
    kind: ClassVar[Literal["discovered"]] = "discovered"

    @property
    def detail(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Online:
    """A birth: the agent is online in session ``bdseq``."""

    agent_id: str
    bdseq: int
    kind: ClassVar[Literal["online"]] = "online"

    @property
    def detail(self) -> int:
        return self.bdseq


@dataclass(frozen=True, slots=True)
class Offline:
    """The agent went offline: ``reason`` is the death's (``will``, ``shutdown``...) or
    ``gateway`` when its home gateway lost the uplink."""

    agent_id: str
    reason: str
    kind: ClassVar[Literal["offline"]] = "offline"

    @property
    def detail(self) -> str:
        return self.reason


@dataclass(frozen=True, slots=True)
class StaleStatus:
    """A status of an older session than the current one, ignored: a death (``birth``
    false) or a birth (``birth`` true). Kind ``stale_death`` for both."""

    agent_id: str
    bdseq: int
    birth: bool = False
    kind: ClassVar[Literal["stale_death"]] = "stale_death"

    @property
    def detail(self) -> int | str:
        return f"stale birth bdseq {self.bdseq}" if self.birth else self.bdseq


@dataclass(frozen=True, slots=True)
class AboutReceived:
    """An About announcement; ``fields`` are its AllJoyn About fields."""

    agent_id: str
    fields: dict[str, Any]
    kind: ClassVar[Literal["about"]] = "about"

    @property
    def detail(self) -> dict[str, Any]:
        return self.fields


@dataclass(frozen=True, slots=True)
class PropertyChanged:
    """A property update; ``key`` is ``interface.Property`` (the value is in the record)."""

    agent_id: str
    key: str
    kind: ClassVar[Literal["property"]] = "property"

    @property
    def detail(self) -> str:
        return self.key


@dataclass(frozen=True, slots=True)
class PropertyBackfilled:
    """A backfilled property update (``"backfill": true``, ``docs/protocol.md`` §4.7): a
    sample the agent buffered while disconnected, history to store under its own ``ts``
    (sender time, Unix s); it is *not* the property's last known value. ``value`` is the
    JSON mapping of the property's type; ``seq`` the new session's sequence number."""

    agent_id: str
    key: str
    value: Any
    ts: float
    seq: int | None
    kind: ClassVar[Literal["backfill"]] = "backfill"

    @property
    def detail(self) -> tuple[str, float]:
        return (self.key, self.ts)


@dataclass(frozen=True, slots=True)
class InterfaceLoaded:
    """The XML of interface ``name`` arrived and loaded."""

    agent_id: str
    name: str
    kind: ClassVar[Literal["interface"]] = "interface"

    @property
    def detail(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class SignalReceived:
    """A signal ``member`` (``interface.Signal``) with its out-arguments (JSON mapping)."""

    agent_id: str
    member: str
    args: list[Any]
    kind: ClassVar[Literal["signal"]] = "signal"

    @property
    def detail(self) -> tuple[str, list[Any]]:
        return (self.member, self.args)


@dataclass(frozen=True, slots=True)
class Gap:
    """Live messages were lost: sequence number ``got`` came where ``expected`` was due."""

    agent_id: str
    expected: int
    got: int
    kind: ClassVar[Literal["gap"]] = "gap"

    @property
    def detail(self) -> tuple[int, int]:
        return (self.expected, self.got)


@dataclass(frozen=True, slots=True)
class BadMessage:
    """A message on the agent's topic ``topic`` that was refused, and why."""

    agent_id: str
    topic: str
    reason: str
    kind: ClassVar[Literal["bad_message"]] = "bad_message"

    @property
    def detail(self) -> str:
        return f"{self.topic}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Pending:
    """A new agent waits for an operator's approval (admission in approval mode); it is
    not in the registry until approved."""

    agent_id: str
    kind: ClassVar[Literal["pending"]] = "pending"

    @property
    def detail(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class SessionReset:
    """An operator reset the agent's session state: ``bdseq`` (the session number the EMS
    held, now forgotten) no longer makes the agent's births look stale."""

    agent_id: str
    bdseq: int | None
    kind: ClassVar[Literal["reset"]] = "reset"

    @property
    def detail(self) -> int | None:
        return self.bdseq


@dataclass(frozen=True, slots=True)
class GatewayUp:
    """The bridge of home gateway ``home`` is up (again); ``agents`` are behind it."""

    home: str
    agents: tuple[str, ...]
    kind: ClassVar[Literal["gateway_up"]] = "gateway_up"

    @property
    def agent_id(self) -> str:
        return self.home

    @property
    def detail(self) -> list[str]:
        return list(self.agents)


@dataclass(frozen=True, slots=True)
class GatewayDown:
    """The bridge of home gateway ``home`` is down: ``agents`` are unreachable."""

    home: str
    agents: tuple[str, ...]
    kind: ClassVar[Literal["gateway_down"]] = "gateway_down"

    @property
    def agent_id(self) -> str:
        return self.home

    @property
    def detail(self) -> list[str]:
        return list(self.agents)


AgentEvent: TypeAlias = (
    PropertyChanged
    | PropertyBackfilled
    | Discovered
    | Online
    | Offline
    | StaleStatus
    | AboutReceived
    | InterfaceLoaded
    | SignalReceived
    | Gap
    | BadMessage
    | Pending
    | SessionReset
)
"""An event about one agent (``agent_id`` is an agent). The most frequent kind comes first:
``isinstance(event, AgentEvent)`` tries the members in order."""

GatewayEvent: TypeAlias = GatewayUp | GatewayDown
"""An event about a home gateway (``agent_id`` is the home id)."""

Event: TypeAlias = AgentEvent | GatewayEvent
"""Anything the registry reports."""

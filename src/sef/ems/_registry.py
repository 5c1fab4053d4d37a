"""The EMS registry: what the EMS knows about every agent, built from bus messages.

Pure logic, no I/O: :meth:`Registry.handle` takes one received message and the current
time and returns what happened (typed events, :mod:`sef.ems._events`), so it is tested
message by message.

Hardening (issue 11):

* **Admission** (:class:`~sef.ems._admission.Admission`, :mod:`sef.ems._admission`): a
  message of an agent id the registry does not know creates a record only if the id is
  admitted.
* **Session numbers**: a status whose ``bdseq`` is 2**63 or more, or runs ahead of the
  wall clock (in ms, the way agents make them) by more than ``bdseq_ahead_s``, is a bad
  message: never applied, never stored. :meth:`Registry.reset` forgets an agent's session
  state so that a locked-out agent can come back.
* **Interfaces** (:mod:`sef.ems._interfaces`): the shipped and pinned definitions cannot
  be redefined by an agent, and the first definition learned of any other name stays.
* **Logs**: every per-message warning goes through a :class:`~sef.logthrottle.LogThrottle`.

Sessions (issue 19, :mod:`sef.ems._sessions`, ``docs/protocol.md`` §4.6, §4.7): a live
message behind or equal to the last accepted seq of the session, or a replayed copy of
the accepted birth, is a duplicate: dropped without an event, counted (``duplicates``).
A backfilled property update (``"backfill": true``) passes the same sequence check and
becomes a :class:`~sef.ems._events.PropertyBackfilled` event (history, stored under its own
``ts``), never the property's last known value; counted (``backfilled``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable

from sef.bus import (
    BDSEQ_AHEAD_S,
    BDSEQ_LIMIT,
    About,
    GatewayAgents,
    Message,
    PayloadError,
    PropertyUpdate,
    SignalEmission,
    Status,
    TopicKind,
    Topics,
    bdseq_problem,
    decode_bridge_state,
    decode_object,
)
from sef.ems._admission import Admission, AdmissionRules, PendingAgent
from sef.ems._events import (
    AboutReceived,
    BadMessage,
    Event,
    GatewayDown,
    GatewayUp,
    Offline,
    PropertyBackfilled,
    PropertyChanged,
    SessionReset,
    SignalReceived,
)
from sef.ems._fleet_index import FREEZE_EVERY, FleetIndex
from sef.ems._interfaces import InterfaceRules
from sef.ems._records import AgentRecord, PropertyValue, intern_interfaces
from sef.ems._sessions import SessionRules
from sef.ems._topic_parse import AgentTopicParser
from sef.interface import Interface, builtin_interface, builtin_names
from sef.logthrottle import LogThrottle

__all__ = [
    "BDSEQ_AHEAD_S",
    "BDSEQ_LIMIT",
    "Event",
    "Registry",
]

log = logging.getLogger("sef.ems.registry")

_STATUS, _ABOUT, _PROPERTY, _SIGNAL, _INTERFACE = (
    TopicKind.STATUS,
    TopicKind.ABOUT,
    TopicKind.PROPERTY,
    TopicKind.SIGNAL,
    TopicKind.INTERFACE,
)
_AGENT_KINDS = frozenset((_STATUS, _ABOUT, _PROPERTY, _SIGNAL, _INTERFACE, TopicKind.SEAL))
"""Topic kinds of an agent's messages the registry takes (a seal only counts: the seal
checker, :mod:`sef.ems._seals`, reads it)."""
_GATEWAY_STATUS, _GATEWAY_AGENTS, _INTERFACE_BLOB = (
    TopicKind.GATEWAY_STATUS,
    TopicKind.GATEWAY_AGENTS,
    TopicKind.INTERFACE_BLOB,
)
MAX_GATEWAYS = 10_000
"""Home gateways whose agent lists the registry keeps."""
MAX_GATEWAY_AGENTS = 10_000
"""Longest agent list of one home gateway."""


class Registry(AdmissionRules, InterfaceRules, SessionRules, FleetIndex):
    """Agents by id, their interfaces (parsed XML, cached by SHA-256), and counters.

    Args:
        topics: the topic tree.
        admission: which new agent ids are taken in (default :class:`Admission`).
        pinned: interface definitions no agent may redefine, besides the shipped ones.
        bdseq_ahead_s: how far a status's bdseq may run ahead of the wall clock, s.
        wall_clock: Unix time, s, to compare bdseq with (agents make bdseq from the real
            wall clock even when the EMS runs on a scaled clock).
        monotonic: monotonic time, s, for the admission rate limit.
        freeze_every: call :meth:`freeze` each time this many agents were added (by
            messages or from the store) since the last call; ``None``: never by itself.
    """

    def __init__(
        self,
        topics: Topics | None = None,
        *,
        admission: Admission | None = None,
        pinned: Iterable[Interface] = (),
        bdseq_ahead_s: float = BDSEQ_AHEAD_S,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        freeze_every: int | None = FREEZE_EVERY,
    ) -> None:
        self.topics = topics or Topics()
        self.agents: dict[str, AgentRecord] = {}
        self.interfaces_by_hash: dict[str, Interface] = {}
        self.interfaces_by_name: dict[str, Interface] = {}
        self._wanted_blobs: dict[str, set[str]] = {}
        self.pinned: dict[str, Interface] = {
            name: builtin_interface(name) for name in builtin_names()
        }
        self.pinned.update((iface.name, iface) for iface in pinned)
        self.bad_messages = 0
        self.duplicates = 0
        """Live messages dropped as duplicates (replays, redeliveries), all agents."""
        self.backfilled = 0
        """Backfilled property updates taken as history, all agents."""
        self.gateway_agents: dict[str, list[str]] = {}  # home id -> agents behind it
        self.messages = 0
        self.admission = admission or Admission()
        self.bdseq_ahead_s = bdseq_ahead_s
        self.wall_clock = wall_clock
        self.monotonic = monotonic
        self.freeze_every = freeze_every
        self._added_since_freeze = 0
        self.pending: dict[str, PendingAgent] = {}
        self.approved: set[str] = set()
        self.refused: dict[str, int] = {}
        """Messages of agents not admitted, by reason: ``not_allowed``, ``rate``, ``cap``,
        ``pending`` (waiting for approval), ``pending_full``."""
        self.refused_ids = 0
        """Distinct agent ids refused (each counted once while remembered)."""
        self._refused_recent: dict[str, None] = {}  # bounded, oldest first
        self._tokens = float(self.admission.burst)
        self._tokens_at: float | None = None
        self._sorted: list[str] = []  # agent ids, sorted (for pages), but for ...
        self._new_ids: list[str] = []  # ... the ids added since (merged on the next read)
        self._members: dict[str, dict[str, None]] = {}  # group -> its agents' ids
        self._parser = AgentTopicParser(self.topics, self.agents)
        self.log_bad = LogThrottle(log, "bad messages")
        self.log_refused = LogThrottle(log, "messages of agents not admitted")
        self.log_info = LogThrottle(log, "stale sessions", level=logging.INFO, burst=50)

    def restore(self, record: AgentRecord) -> None:
        """Put back an agent known from the store (before the bus says anything new).

        Its online state is unknown until the broker's retained status arrives. A session
        number beyond the bdseq rules (stored by an EMS without them) is forgotten.
        """
        record.online = None if record.online else record.online
        record.expected_seq = None
        record.last_seq = None
        record.birth_ts = None
        if record.bdseq is not None and self._bdseq_problem(record.bdseq) is not None:
            log.warning(
                "agent %s: stored bdseq %d is %s; forgotten",
                record.agent_id,
                record.bdseq,
                self._bdseq_problem(record.bdseq),
            )
            record.bdseq = None
        for entry in record.properties.values():
            entry.compact()  # a decoded object or array from the store: packed again
        old = self.agents.get(record.agent_id)
        if old is None:
            self._new_ids.append(record.agent_id)
        else:
            self._index_groups(old.agent_id, old.groups, ())
        self.agents[record.agent_id] = record
        self._index_groups(record.agent_id, (), record.groups)
        if old is None:
            self._added()

    # -- queries ------------------------------------------------------------------
    def get(self, agent_id: str) -> AgentRecord | None:
        """The record of ``agent_id``, or ``None``."""
        return self.agents.get(agent_id)

    # -- operator actions -----------------------------------------------------------
    def reset(self, agent_id: str) -> list[Event]:
        """Forget the agent's session state (bdseq, expected seq, presence), so that its
        next birth counts whatever session number a forged or broken status left.
        ``KeyError`` for an unknown agent."""
        record = self.agents[agent_id]
        previous = record.bdseq
        record.bdseq = None
        record.expected_seq = None
        record.last_seq = None
        record.birth_ts = None
        record.online = None
        record.keepalive_s = None
        log.warning(
            "agent %s: session state reset by an operator (bdseq was %s)", agent_id, previous
        )
        return [SessionReset(agent_id, previous)]

    def flush_logs(self) -> None:
        """Write the pending summaries of the aggregated warnings now."""
        for throttle in (self.log_bad, self.log_refused, self.log_info):
            throttle.flush()

    # -- message handling ---------------------------------------------------------
    def handle(self, message: Message, now: float) -> list[Event]:
        """Update the registry from one message; return the events it caused."""
        parser = self._parser
        if parser.topics is not self.topics or parser.known is not self.agents:
            parser = self._parser = AgentTopicParser(self.topics, self.agents)
        split = parser.split(message.topic)
        if split is None:
            return []
        kind, agent_id, interface, member = split  # (TopicKind.X costs an access: consts)
        if kind not in _AGENT_KINDS:
            # the EMS's home book reads gateway stats (sef.ems._homes), not the registry
            if kind is _GATEWAY_STATUS or kind is _GATEWAY_AGENTS:
                return self._gateway(kind, agent_id, message, now)
            if kind is _INTERFACE_BLOB:
                return self._interface_blob(agent_id, message.payload)
            return []
        self.messages += 1
        events: list[Event] = []
        record = self.agents.get(agent_id)
        if record is None and not message.payload:  # a cleared topic of an unknown agent
            return []
        # decode first: a bad message of an unknown agent creates nothing
        item: Status | About | PropertyUpdate | SignalEmission | None = None
        if kind is not _INTERFACE and message.payload:
            try:
                obj = decode_object(message.payload)
                if kind is _PROPERTY:
                    item = PropertyUpdate.from_object(obj)
                elif kind is _STATUS:
                    item = self._checked_status(Status.from_object(obj))
                elif kind is _ABOUT:
                    item = About.from_object(obj)
                elif kind is _SIGNAL:
                    item = SignalEmission.from_object(obj)
            except PayloadError as exc:
                return self._bad(record, agent_id, message.topic, str(exc))
        if record is None:
            record, events = self._admit(agent_id, now)
            if record is None:
                return events
            self._added()
        record.messages += 1
        if kind is _INTERFACE:
            assert interface is not None
            try:
                events += self._interface(record, interface, message.payload)
            except PayloadError as exc:  # (the record already counted the message)
                return events + self._bad(None, agent_id, message.topic, str(exc))
            return events
        if item is None:  # retained value cleared by an operator
            return events
        # a duplicate (docs/protocol.md §4.6) changes nothing and emits nothing
        if type(item) is PropertyUpdate:
            key = f"{interface}.{member}"
            if not item.backfill:
                if not self._sequence(record, item.seq, item.ts, message, now, events):
                    return events
                record.set_property(
                    key,
                    PropertyValue.from_payload(message.payload, item.value, item.ts, now, item.seq),
                )
                events.append(PropertyChanged(agent_id, key))
            else:  # history (§4.7): stored under its own ts, not the last known value
                if item.ts is None:
                    return events + self._bad(None, agent_id, message.topic, "backfill: no ts")
                if not self._sequence(record, item.seq, item.ts, message, now, events):
                    return events
                record.backfilled += 1
                self.backfilled += 1
                events.append(PropertyBackfilled(agent_id, key, item.value, item.ts, item.seq))
        elif type(item) is Status:
            duplicates = record.duplicates
            events += self._status(record, item, message, now)
            if record.duplicates != duplicates:
                return events
        elif type(item) is About:
            if not self._sequence(record, item.seq, item.ts, message, now, events):
                return events
            record.about = item.fields
            record._interfaces = intern_interfaces(  # (interned: not through the setter)
                tuple([(ref.name, ref.sha256) for ref in item.interfaces])
            )
            before = record.groups
            record.groups = item.groups
            self._index_groups(agent_id, before, record.groups)
            self._learn_announced(item.interfaces, record)
            events.append(AboutReceived(agent_id, item.fields))
        else:
            assert isinstance(item, SignalEmission)
            if not self._sequence(record, item.seq, item.ts, message, now, events):
                return events
            events.append(SignalReceived(agent_id, f"{interface}.{member}", item.args))
        if not message.retain:
            record.last_seen = now
        return events

    def _bad(
        self, record: AgentRecord | None, agent_id: str, topic: str, reason: str
    ) -> list[Event]:
        """Count and log (throttled) a refused message; its event."""
        self.bad_messages += 1
        if record is not None:
            record.messages += 1
        self.log_bad.warn(agent_id, _reason_kind(reason), "bad message on %s: %s", topic, reason)
        return [BadMessage(agent_id, topic, reason)]

    # -- session numbers --------------------------------------------------------------
    def _bdseq_problem(self, bdseq: int) -> str | None:
        """Why ``bdseq`` cannot be a real session number, or ``None``."""
        return bdseq_problem(bdseq, self.wall_clock(), self.bdseq_ahead_s)

    def _checked_status(self, status: Status) -> Status:
        problem = self._bdseq_problem(status.bdseq)
        if problem is not None:
            raise PayloadError(problem)
        return status

    def _gateway(self, kind: TopicKind, home: str, message: Message, now: float) -> list[Event]:
        """A home gateway's bridge went down (its agents are unreachable) or up again."""
        if kind is TopicKind.GATEWAY_AGENTS:
            try:
                listed = GatewayAgents.from_object(decode_object(message.payload))
            except PayloadError as exc:
                self.bad_messages += 1
                self.log_bad.warn(
                    home, _reason_kind(str(exc)), "bad agent list of gateway %s: %s", home, exc
                )
                return []
            problem = (
                f"agent list of {len(listed.agents)} ids (at most {MAX_GATEWAY_AGENTS})"
                if len(listed.agents) > MAX_GATEWAY_AGENTS
                else f"more than {MAX_GATEWAYS} gateways"
                if home not in self.gateway_agents and len(self.gateway_agents) >= MAX_GATEWAYS
                else None
            )
            if problem is not None:
                self.bad_messages += 1
                self.log_bad.warn(
                    home, problem, "agent list of gateway %s refused: %s", home, problem
                )
                return []
            self.gateway_agents[home] = listed.agents
            return []
        try:
            up = decode_bridge_state(message.payload)
        except PayloadError as exc:
            self.bad_messages += 1
            self.log_bad.warn(
                home, _reason_kind(str(exc)), "bad bridge state of gateway %s: %s", home, exc
            )
            return []
        behind = tuple(self.gateway_agents.get(home, []))
        events: list[Event] = [GatewayUp(home, behind) if up else GatewayDown(home, behind)]
        if not up:
            for agent_id in self.gateway_agents.get(home, []):
                record = self.agents.get(agent_id)
                if record is not None and record.online:
                    record.online = False
                    record.offline_reason = "gateway"
                    record.offline_since = now
                    record.expected_seq = None
                    events.append(Offline(agent_id, "gateway"))
        return events


def _reason_kind(reason: str) -> str:
    """A reason without its variable parts, to aggregate log lines by kind."""
    return re.sub(r"\d+", "N", reason.split(":", 1)[0])[:80]

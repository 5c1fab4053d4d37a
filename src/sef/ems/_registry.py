"""The EMS registry: what the EMS knows about every agent, built from bus messages.

Pure logic, no I/O: :meth:`Registry.handle` takes one received message and the current
time and returns what happened (typed events, :mod:`sef.ems._events`), so it is tested
message by message.

Hardening (issue 11):

* **Admission** (:class:`Admission`): a message of an agent id the registry does not know
  creates a record only if the id is admitted: an allow-list of ids or glob patterns, or
  an operator approval mode (new ids wait in :attr:`Registry.pending`), a token-bucket
  rate limit on new ids and a cap on the number of agents. Refused messages are counted
  by reason (:attr:`Registry.refused`), refused ids too (:attr:`Registry.refused_ids`),
  and logged in aggregate.
* **Session numbers**: a status whose ``bdseq`` is 2**63 or more, or runs ahead of the
  wall clock (in ms, the way agents make them) by more than ``bdseq_ahead_s``, is a bad
  message: never applied, never stored. :meth:`Registry.reset` forgets an agent's session
  state so that a locked-out agent can come back.
* **Interfaces**: the definitions SEF ships (:func:`sef.interface.builtin_names`) and the
  ones the operator pinned cannot be redefined by an agent, and the first definition
  learned of any other name stays the EMS-wide one: a conflicting XML is a bad message of
  that agent only.
* **Logs**: every per-message warning goes through a :class:`~sef.logthrottle.LogThrottle`.
"""

from __future__ import annotations

import bisect
import fnmatch
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sef.bus import (
    BDSEQ_AHEAD_S,
    BDSEQ_LIMIT,
    SEQ_MODULUS,
    About,
    GatewayAgents,
    Message,
    ParsedTopic,
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
from sef.ems._events import (
    AboutReceived,
    BadMessage,
    Discovered,
    Event,
    Gap,
    GatewayDown,
    GatewayUp,
    InterfaceLoaded,
    Offline,
    Online,
    Pending,
    PropertyChanged,
    SessionReset,
    SignalReceived,
    StaleStatus,
)
from sef.interface import Interface, InterfaceError, builtin_interface, builtin_names, load_xml
from sef.logthrottle import LogThrottle

__all__ = [
    "BDSEQ_AHEAD_S",
    "BDSEQ_LIMIT",
    "Admission",
    "AgentRecord",
    "Event",
    "PendingAgent",
    "PropertyValue",
    "Registry",
]

log = logging.getLogger("sef.ems.registry")

MAX_XML_BYTES = 256 * 1024
PARSE_CACHE_SIZE = 65536
"""Topics whose parse the registry remembers (telemetry topics repeat; parsing is costly)."""
XML_CACHE_SIZE = 1024
"""Parsed interface XML documents the registry keeps by SHA-256 (official ones always)."""
"""A bdseq must be below this (it is stored in a signed 64-bit column)."""
MAX_LEARNED_INTERFACES = 1000
"""Interface names the registry learns from agents (besides the pinned ones)."""
MAX_GATEWAYS = 10_000
"""Home gateways whose agent lists the registry keeps."""
MAX_GATEWAY_AGENTS = 10_000
"""Longest agent list of one home gateway."""
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


@dataclass(slots=True)
class PropertyValue:
    """Last known value of a property (JSON mapping), its sender time and receipt time
    (Unix s), and the per-session sequence number it came with (``None`` if absent)."""

    value: Any
    ts: float | None
    received: float
    seq: int | None = None


@dataclass
class AgentRecord:
    """Everything the EMS knows about one agent; kept after the agent goes offline."""

    agent_id: str
    online: bool | None = None
    bdseq: int | None = None
    about: dict[str, Any] = field(default_factory=dict)
    interfaces: dict[str, str] = field(default_factory=dict)  # name -> sha256 announced
    groups: list[str] = field(default_factory=list)
    properties: dict[str, PropertyValue] = field(default_factory=dict)  # "iface.prop" -> value
    first_seen: float = 0.0
    last_seen: float = 0.0
    online_since: float | None = None
    offline_since: float | None = None
    offline_reason: str | None = None
    keepalive_s: int | None = None
    expected_seq: int | None = None
    gaps: int = 0
    messages: int = 0
    rejected_interfaces: dict[str, str] = field(default_factory=dict)  # name -> why

    def prop(self, interface: str, name: str) -> Any:
        """Last known value of ``interface.name`` (JSON mapping), or ``None``."""
        entry = self.properties.get(f"{interface}.{name}")
        return None if entry is None else entry.value

    def summary(self) -> dict[str, Any]:
        """A JSON-able view for ``sef agents --json`` and the API."""
        return {
            "id": self.agent_id,
            "status": {None: "unknown", True: "online", False: "offline"}[self.online],
            "bdseq": self.bdseq,
            "device_name": self.about.get("DeviceName"),
            "manufacturer": self.about.get("Manufacturer"),
            "model": self.about.get("ModelNumber"),
            "software_version": self.about.get("SoftwareVersion"),
            "interfaces": sorted(self.interfaces),
            "groups": list(self.groups),
            "last_seen": self.last_seen,
            "online_since": self.online_since,
            "offline_since": self.offline_since,
            "offline_reason": self.offline_reason,
            "gaps": self.gaps,
            "properties": {k: {"value": v.value, "ts": v.ts} for k, v in self.properties.items()},
            "rejected_interfaces": dict(self.rejected_interfaces),
        }


class Registry:
    """Agents by id, their interfaces (parsed XML, cached by SHA-256), and counters.

    Args:
        topics: the topic tree.
        admission: which new agent ids are taken in (default :class:`Admission`).
        pinned: interface definitions no agent may redefine, besides the shipped ones.
        bdseq_ahead_s: how far a status's bdseq may run ahead of the wall clock, s.
        wall_clock: Unix time, s, to compare bdseq with (agents make bdseq from the real
            wall clock even when the EMS runs on a scaled clock).
        monotonic: monotonic time, s, for the admission rate limit.
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
    ) -> None:
        self.topics = topics or Topics()
        self.agents: dict[str, AgentRecord] = {}
        self.interfaces_by_hash: dict[str, Interface] = {}
        self.interfaces_by_name: dict[str, Interface] = {}
        self.pinned: dict[str, Interface] = {
            name: builtin_interface(name) for name in builtin_names()
        }
        self.pinned.update((iface.name, iface) for iface in pinned)
        self.bad_messages = 0
        self.gateway_agents: dict[str, list[str]] = {}  # home id -> agents behind it
        self.messages = 0
        self.admission = admission or Admission()
        self.bdseq_ahead_s = bdseq_ahead_s
        self.wall_clock = wall_clock
        self.monotonic = monotonic
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
        self._sorted: list[str] | None = None  # agent ids, sorted (for pages)
        self._parsed: dict[str, ParsedTopic | None] = {}  # topic -> parse, for self._parsed_by
        self._parsed_by: Topics | None = None
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
        if record.bdseq is not None and self._bdseq_problem(record.bdseq) is not None:
            log.warning(
                "agent %s: stored bdseq %d is %s; forgotten",
                record.agent_id,
                record.bdseq,
                self._bdseq_problem(record.bdseq),
            )
            record.bdseq = None
        if record.agent_id not in self.agents:
            self._sorted = None
        self.agents[record.agent_id] = record

    # -- queries ------------------------------------------------------------------
    def get(self, agent_id: str) -> AgentRecord | None:
        """The record of ``agent_id``, or ``None``."""
        return self.agents.get(agent_id)

    def group_members(self, group: str) -> list[AgentRecord]:
        """Agents that announced membership of ``group``."""
        return [a for a in self.agents.values() if group in a.groups]

    def interface(self, name: str) -> Interface | None:
        """The EMS-wide definition of interface ``name``: learned from agents' XML (which
        for a pinned or shipped interface must equal it), else the pinned one."""
        return self.interfaces_by_name.get(name) or self.pinned.get(name)

    def sorted_ids(self) -> list[str]:
        """Every agent id, sorted (cached until an agent is added or removed)."""
        if self._sorted is None or len(self._sorted) != len(self.agents):
            self._sorted = sorted(self.agents)
        return self._sorted

    def page(
        self,
        *,
        after: str | None = None,
        offset: int = 0,
        limit: int = 100,
        where: Callable[[AgentRecord], bool] | None = None,
    ) -> tuple[list[AgentRecord], int, bool]:
        """One page of agents in id order: those after id ``after`` (a cursor), skipping
        ``offset`` matches of ``where``, at most ``limit``. Returns the page, the number of
        agents matching ``where`` in all, and whether more follow the page."""
        ids = self.sorted_ids()
        start = 0 if after is None else bisect.bisect_right(ids, after)
        matching: Iterator[AgentRecord] = (self.agents[i] for i in ids[start:])
        if where is not None:
            matching = filter(where, matching)
        out: list[AgentRecord] = []
        skipped = 0
        more = False
        for record in matching:
            if skipped < offset:
                skipped += 1
            elif len(out) < limit:
                out.append(record)
            else:
                more = True
                break
        total = len(ids) if where is None else sum(1 for i in ids if where(self.agents[i]))
        return out, total, more

    # -- operator actions -----------------------------------------------------------
    def reset(self, agent_id: str) -> list[Event]:
        """Forget the agent's session state (bdseq, expected seq, presence), so that its
        next birth counts whatever session number a forged or broken status left.
        ``KeyError`` for an unknown agent."""
        record = self.agents[agent_id]
        previous = record.bdseq
        record.bdseq = None
        record.expected_seq = None
        record.online = None
        record.keepalive_s = None
        log.warning(
            "agent %s: session state reset by an operator (bdseq was %s)", agent_id, previous
        )
        return [SessionReset(agent_id, previous)]

    def approve(self, agent_id: str) -> bool:
        """Admit ``agent_id`` (pending or not seen yet) from now on, bypassing the
        allow-list, the rate limit and the cap. Returns whether it was pending."""
        self.approved.add(agent_id)
        self._refused_recent.pop(agent_id, None)
        self._refused_recent[agent_id] = None  # an approved agent re-announces when admitted
        return self.pending.pop(agent_id, None) is not None

    def flush_logs(self) -> None:
        """Write the pending summaries of the aggregated warnings now."""
        for throttle in (self.log_bad, self.log_refused, self.log_info):
            throttle.flush()

    # -- message handling ---------------------------------------------------------
    def handle(self, message: Message, now: float) -> list[Event]:
        """Update the registry from one message; return the events it caused."""
        topic = message.topic
        cache = self._parsed
        if self._parsed_by is not self.topics:
            cache.clear()
            self._parsed_by = self.topics
        try:
            parsed = cache[topic]
        except KeyError:
            parsed = self.topics.parse(topic)
            if len(cache) >= PARSE_CACHE_SIZE:
                cache.clear()
            cache[topic] = parsed
        if parsed is None or parsed.kind in (
            TopicKind.CALL,
            TopicKind.GROUP_CALL,
            TopicKind.REPLY,
            TopicKind.HOST_STATUS,
        ):
            return []
        if parsed.kind in (TopicKind.GATEWAY_STATUS, TopicKind.GATEWAY_AGENTS):
            return self._gateway(parsed.kind, parsed.owner, message, now)
        self.messages += 1
        agent_id = parsed.owner
        events: list[Event] = []
        record = self.agents.get(agent_id)
        if record is None and not message.payload:  # a cleared topic of an unknown agent
            return []
        # decode first: a bad message of an unknown agent creates nothing
        item: Status | About | PropertyUpdate | SignalEmission | None = None
        if parsed.kind is not TopicKind.INTERFACE and message.payload:
            try:
                obj = decode_object(message.payload)
                if parsed.kind is TopicKind.STATUS:
                    item = self._checked_status(Status.from_object(obj))
                elif parsed.kind is TopicKind.ABOUT:
                    item = About.from_object(obj)
                elif parsed.kind is TopicKind.PROPERTY:
                    item = PropertyUpdate.from_object(obj)
                elif parsed.kind is TopicKind.SIGNAL:
                    item = SignalEmission.from_object(obj)
            except PayloadError as exc:
                return self._bad(record, agent_id, message.topic, str(exc))
        if record is None:
            record, events = self._admit(agent_id, now)
            if record is None:
                return events
        record.messages += 1
        if parsed.kind is TopicKind.INTERFACE:
            assert parsed.interface is not None
            try:
                events += self._interface(record, parsed.interface, message.payload)
            except PayloadError as exc:  # (the record already counted the message)
                return events + self._bad(None, agent_id, message.topic, str(exc))
            return events
        if item is None:  # retained value cleared by an operator
            return events
        if isinstance(item, Status):
            events += self._status(record, item, message, now)
        elif isinstance(item, About):
            events += self._sequence(record, item.seq, message)
            record.about = item.fields
            record.interfaces = {ref.name: ref.sha256 for ref in item.interfaces}
            record.groups = list(item.groups)
            for ref in item.interfaces:
                known = self.interfaces_by_hash.get(ref.sha256)
                if (
                    known is not None
                    and known.name == ref.name  # the hash may be another interface's XML
                    and ref.name not in self.interfaces_by_name
                    and len(self.interfaces_by_name) < MAX_LEARNED_INTERFACES
                    and self._conflict(ref.name, known) is None
                ):
                    self.interfaces_by_name[ref.name] = known
            events.append(AboutReceived(agent_id, item.fields))
        elif isinstance(item, PropertyUpdate):
            events += self._sequence(record, item.seq, message)
            key = f"{parsed.interface}.{parsed.member}"
            record.properties[key] = PropertyValue(item.value, item.ts, now, item.seq)
            events.append(PropertyChanged(agent_id, key))
        else:
            events += self._sequence(record, item.seq, message)
            events.append(
                SignalReceived(agent_id, f"{parsed.interface}.{parsed.member}", item.args)
            )
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

    # -- admission ------------------------------------------------------------------
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
        self._sorted = None
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

    def _status(
        self, record: AgentRecord, status: Status, message: Message, now: float
    ) -> list[Event]:
        agent_id = record.agent_id
        if status.online:
            if record.bdseq is not None and status.bdseq < record.bdseq:
                return [StaleStatus(agent_id, status.bdseq, birth=True)]
            was_online = record.online
            record.online = True
            record.bdseq = status.bdseq
            record.keepalive_s = status.keepalive_s
            record.offline_reason = None
            # a retained birth is old news: later live messages continue from an unknown seq
            record.expected_seq = (
                None if status.seq is None or message.retain else (status.seq + 1) % SEQ_MODULUS
            )
            if not was_online:
                record.online_since = status.ts or now
                return [Online(agent_id, status.bdseq)]
            return []
        # a death: only the death of the current (or a newer) session counts
        if record.bdseq is not None and status.bdseq < record.bdseq:
            self.log_info.warn(
                agent_id,
                "stale death",
                "agent %s: stale death (bdseq %d < %d) ignored",
                agent_id,
                status.bdseq,
                record.bdseq,
            )
            return [StaleStatus(agent_id, status.bdseq)]
        was_online = record.online
        record.online = False
        record.bdseq = status.bdseq
        record.expected_seq = None
        record.offline_reason = status.reason or "will"
        if was_online is not False:
            record.offline_since = now if not message.retain else (status.ts or now)
            return [Offline(agent_id, record.offline_reason)]
        return []

    def _sequence(self, record: AgentRecord, seq: int | None, message: Message) -> list[Event]:
        """Check the per-session message sequence of live messages; report a gap."""
        if message.retain or seq is None:
            return []
        expected = record.expected_seq
        if expected is not None and seq != expected:
            if (expected - seq) % SEQ_MODULUS < SEQ_MODULUS // 2:
                return []  # behind: a redelivered duplicate, not a loss
            record.expected_seq = (seq + 1) % SEQ_MODULUS
            record.gaps += 1
            return [Gap(record.agent_id, expected, seq)]
        record.expected_seq = (seq + 1) % SEQ_MODULUS
        return []

    def _interface(self, record: AgentRecord, name: str, payload: bytes) -> list[Event]:
        if not payload:
            return []
        if len(payload) > MAX_XML_BYTES:
            raise PayloadError(f"interface XML of {len(payload)} bytes exceeds {MAX_XML_BYTES}")
        digest = hashlib.sha256(payload).hexdigest()
        iface = self.interfaces_by_hash.get(digest)
        if iface is None or iface.name != name:  # cached XML must define this name too
            try:
                node = load_xml(payload, source=f"{record.agent_id}:{name}")
            except InterfaceError as exc:
                raise PayloadError(f"interface XML does not load: {exc}") from None
            if name not in node.interfaces:
                raise PayloadError(f"interface XML published for {name} does not define it")
            iface = node.interfaces[name]
            self._cache_xml(digest, iface)
        conflict = self._conflict(name, iface)
        if conflict is not None:
            record.rejected_interfaces[name] = conflict
            raise PayloadError(conflict)
        if (
            name not in self.interfaces_by_name
            and name not in self.pinned
            and len(self.interfaces_by_name) >= MAX_LEARNED_INTERFACES
        ):
            raise PayloadError(
                f"interface {name} not learned: the EMS knows {MAX_LEARNED_INTERFACES} "
                "interfaces already"
            )
        record.rejected_interfaces.pop(name, None)
        self.interfaces_by_name.setdefault(name, iface)
        return [InterfaceLoaded(record.agent_id, name)]

    def _conflict(self, name: str, iface: Interface) -> str | None:
        """Why ``iface`` may not be the definition of ``name`` (or ``None``): it differs
        from the pinned (shipped) definition, or from the one learned first."""
        pinned = self.pinned.get(name)
        if pinned is not None and iface is not pinned and iface != pinned:
            return f"interface {name} differs from the EMS's pinned definition: rejected"
        learned = self.interfaces_by_name.get(name)
        if learned is not None and iface is not learned and iface != learned:
            return (
                f"interface {name} differs from the definition the EMS learned first: rejected "
                "(pin the new definition to change it)"
            )
        return None

    def _cache_xml(self, digest: str, iface: Interface) -> None:
        """Keep a parsed XML by hash; the cache is bounded (official definitions stay)."""
        cache = self.interfaces_by_hash
        if len(cache) >= XML_CACHE_SIZE:
            official = {id(i) for i in self.interfaces_by_name.values()}
            for key in [k for k, v in cache.items() if id(v) not in official][
                : XML_CACHE_SIZE // 4
            ]:
                del cache[key]
        cache[digest] = iface


_REFUSAL_TEXT = {
    "not_allowed": "not on the allow-list",
    "cap": "the registry is full (--max-agents)",
    "rate": "too many new agents per second (--new-agents-per-s); admitted later",
    "pending_full": "too many agents wait for approval already",
}


def _reason_kind(reason: str) -> str:
    """A reason without its variable parts, to aggregate log lines by kind."""
    return re.sub(r"\d+", "N", reason.split(":", 1)[0])[:80]

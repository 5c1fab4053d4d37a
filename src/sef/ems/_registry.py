"""The EMS registry: what the EMS knows about every agent, built from bus messages.

Pure logic, no I/O: :meth:`Registry.handle` takes one received message and the current
time and returns what happened (typed events, :mod:`sef.ems._events`), so it is tested
message by message.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

from sef.bus import (
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
    PropertyChanged,
    SignalReceived,
    StaleStatus,
)
from sef.interface import Interface, InterfaceError, load_xml

__all__ = [
    "AgentRecord",
    "Event",
    "PropertyValue",
    "Registry",
]

log = logging.getLogger("sef.ems.registry")

MAX_XML_BYTES = 256 * 1024
PARSE_CACHE_SIZE = 65536
"""Topics whose parse the registry remembers (telemetry topics repeat; parsing is costly)."""


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
        }


class Registry:
    """Agents by id, their interfaces (parsed XML, cached by SHA-256), and counters."""

    def __init__(self, topics: Topics | None = None) -> None:
        self.topics = topics or Topics()
        self.agents: dict[str, AgentRecord] = {}
        self.interfaces_by_hash: dict[str, Interface] = {}
        self.interfaces_by_name: dict[str, Interface] = {}
        self.bad_messages = 0
        self.gateway_agents: dict[str, list[str]] = {}  # home id -> agents behind it
        self.messages = 0
        self._parsed: dict[str, ParsedTopic | None] = {}  # topic -> parse, for self._parsed_by
        self._parsed_by: Topics | None = None

    def restore(self, record: AgentRecord) -> None:
        """Put back an agent known from the store (before the bus says anything new).

        Its online state is unknown until the broker's retained status arrives.
        """
        record.online = None if record.online else record.online
        record.expected_seq = None
        self.agents[record.agent_id] = record

    # -- queries ------------------------------------------------------------------
    def get(self, agent_id: str) -> AgentRecord | None:
        return self.agents.get(agent_id)

    def group_members(self, group: str) -> list[AgentRecord]:
        return [a for a in self.agents.values() if group in a.groups]

    def interface(self, name: str) -> Interface | None:
        """An interface definition learned from any agent's XML, by name."""
        return self.interfaces_by_name.get(name)

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
        if record is None:
            if not message.payload:  # a cleared retained topic of an unknown agent
                return []
            record = self.agents[agent_id] = AgentRecord(agent_id, first_seen=now)
            events.append(Discovered(agent_id))
        record.messages += 1
        try:
            if parsed.kind is TopicKind.INTERFACE:
                assert parsed.interface is not None
                events += self._interface(record, parsed.interface, message.payload)
                return events
            if not message.payload:  # retained value cleared by an operator
                return events
            obj = decode_object(message.payload)
            if parsed.kind is TopicKind.STATUS:
                events += self._status(record, Status.from_object(obj), message, now)
            elif parsed.kind is TopicKind.ABOUT:
                about = About.from_object(obj)
                events += self._sequence(record, about.seq, message)
                record.about = about.fields
                record.interfaces = {ref.name: ref.sha256 for ref in about.interfaces}
                record.groups = list(about.groups)
                for ref in about.interfaces:
                    known = self.interfaces_by_hash.get(ref.sha256)
                    if known is not None:
                        self.interfaces_by_name.setdefault(ref.name, known)
                events.append(AboutReceived(agent_id, about.fields))
            elif parsed.kind is TopicKind.PROPERTY:
                update = PropertyUpdate.from_object(obj)
                events += self._sequence(record, update.seq, message)
                key = f"{parsed.interface}.{parsed.member}"
                record.properties[key] = PropertyValue(update.value, update.ts, now, update.seq)
                events.append(PropertyChanged(agent_id, key))
            elif parsed.kind is TopicKind.SIGNAL:
                signal = SignalEmission.from_object(obj)
                events += self._sequence(record, signal.seq, message)
                events.append(
                    SignalReceived(agent_id, f"{parsed.interface}.{parsed.member}", signal.args)
                )
        except PayloadError as exc:
            self.bad_messages += 1
            log.warning("bad message on %s: %s", message.topic, exc)
            events.append(BadMessage(agent_id, message.topic, str(exc)))
            return events
        if not message.retain:
            record.last_seen = now
        return events

    def _gateway(self, kind: TopicKind, home: str, message: Message, now: float) -> list[Event]:
        """A home gateway's bridge went down (its agents are unreachable) or up again."""
        if kind is TopicKind.GATEWAY_AGENTS:
            try:
                listed = GatewayAgents.from_object(decode_object(message.payload))
            except PayloadError as exc:
                self.bad_messages += 1
                log.warning("bad agent list of gateway %s: %s", home, exc)
                return []
            self.gateway_agents[home] = listed.agents
            return []
        try:
            up = decode_bridge_state(message.payload)
        except PayloadError as exc:
            self.bad_messages += 1
            log.warning("bad bridge state of gateway %s: %s", home, exc)
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
            log.info(
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
            self.interfaces_by_hash[digest] = iface
        self.interfaces_by_name[name] = iface
        return [InterfaceLoaded(record.agent_id, name)]

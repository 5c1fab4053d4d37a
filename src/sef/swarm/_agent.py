"""One swarm agent: a protocol-conformant SEF agent in a few hundred bytes.

It does what ``docs/protocol.md`` asks of an agent, on its own MQTT connection
(:class:`~sef.swarm._mqtt.MqttConnection`): a will and a new bdseq per connection, the
subscriptions of §3 (own calls, own status, host statuses, each group's calls) and the
birth only after their SUBACK (§4.2: status online seq 0, About, properties ``AssetName``,
``Telemetry`` and ``Nameplate`` of ``edu.pdx.powerlab.demo``), a ``Telemetry`` update every
telemetry period with the next seq, stale-death repair (§4.3), and calls per §6
(validity, de-duplication by ``(sender, id)``, expiry, unknown interface/method,
argument rules, one reply exactly when there is a ``reply_to``). ``sef.Agent.Rebirth``
republishes the birth, ``Ping`` answers the time, ``EnergyMethod`` sets the running
command (reply ``ok``, ``applied: true``: the simulated device applies it at once).

What is shared by every agent of a process lives in :class:`SwarmShared`: the interface
XML (published once per process on ``{root}/interfaces/{sha256}``; per agent on
``{root}/agents/{id}/interfaces/{name}`` instead with ``interface_topics="v1"``, on both
with ``"both"``, as :class:`sef.agents.Agent` does), the parsed
call cache (a group call is parsed once per process, not once per member) and the stats.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

from sef.bus import (
    About,
    Call,
    ErrorName,
    PayloadError,
    PropertyUpdate,
    Reply,
    Status,
    decode_object,
)
from sef.interface import (
    AGENT_INTERFACE,
    DEMO_INTERFACE,
)
from sef.swarm._mqtt import MqttConnection, connect_packet, subscribe_packet
from sef.swarm._shared import NAMEPLATE, SEEN_CALLS, CallEntry, SwarmShared

__all__ = ["SwarmAgent"]

log = logging.getLogger("sef.swarm")

_POWER = {"charge": -1.0, "discharge": 1.0}


class SwarmAgent(MqttConnection):
    """One agent of a swarm (see the module docstring); the worker connects it."""

    __slots__ = (
        "_call_prefix",
        "_status",
        "_sub_pid",
        "_unacked",
        "agent_id",
        "backoff",
        "bdseq",
        "born",
        "connected_at",
        "event",
        "index",
        "node",
        "pending",
        "rate_kw",
        "seen",
        "seq",
        "shared",
        "soc",
        "stopping",
    )  # fmt: skip

    def __init__(self, shared: SwarmShared, agent_id: str, index: int) -> None:
        super().__init__()
        self.shared = shared
        self.agent_id = agent_id
        self.index = index
        self.node = 0
        """Index of the broker (of the worker's list) the next connection goes to."""
        self.bdseq = 0
        self.seq = 0
        self.born = False
        self.pending = False
        """A connection attempt runs (TCP connect to CONNACK): the worker bounds them."""
        self.stopping = False
        self.backoff = 0.0
        self.connected_at = 0.0
        self.event = "idle"
        self.rate_kw = 0
        self.soc = 20.0 + (index * 37) % 60
        self.seen: OrderedDict[tuple[str | None, str], None] | None = None
        self._sub_pid = 0
        self._unacked: dict[int, tuple[float, int]] | None = None
        """With a PUBACK log: Telemetry updates sent and not yet acknowledged on this
        connection (packet id -> (ts, seq))."""
        prefix = shared.topics.agent_prefix(agent_id)
        self._call_prefix = f"{prefix}/call/"
        self._status = f"{prefix}/status"

    # -- session ----------------------------------------------------------------------
    def new_session(self) -> None:
        """A new bdseq (Unix ms, strictly increasing per agent) before each connection."""
        self.bdseq = max(self.bdseq + 1, time.time_ns() // 1_000_000)
        self.seq = 0

    def next_seq(self) -> int:
        value = self.seq
        self.seq = (self.seq + 1) % 2**32
        return value

    def connect_packet_args(self) -> tuple[str, bytes]:
        """The will: offline status of the current session, retained, QoS 1."""
        return self._status, Status(False, self.bdseq, reason="will").to_payload()

    def on_socket(self) -> None:
        topic, will = self.connect_packet_args()
        self.send(connect_packet(self.agent_id, self.shared.keepalive_s, topic, will))

    def handshake_over(self) -> None:
        if self.pending:
            self.pending = False
            self.shared.on_handshake(self)

    def on_connack(self, code: int, session_present: bool) -> None:
        self.handshake_over()
        if code != 0:
            log.warning("agent %s: broker refused the connection (code %d)", self.agent_id, code)
            self.abort()
            return
        topics = self.shared.topics
        filters = [
            f"{self._call_prefix}+/+",
            self._status,
            topics.all_hosts(),
            *(f"{p}+/+" for p in self.shared.group_prefixes),
        ]
        self._sub_pid = self.next_packet_id()
        self.send(subscribe_packet(self._sub_pid, filters, self.shared.sub_qos))

    def on_suback(self, packet_id: int, codes: bytes) -> None:
        if packet_id != self._sub_pid or self.born:
            return
        if any(c >= 0x80 for c in codes):
            log.warning("agent %s: broker refused a subscription", self.agent_id)
        self.connected_at = time.monotonic()
        self.shared.stats.bump("connected")
        self.born = True
        self.shared.node_up[self.node] += 1
        self.shared.publish_blobs(self, self.node)
        self.publish_birth()

    def on_lost(self, exc: Exception | None) -> None:
        self.handshake_over()
        self._unacked = None  # never acknowledged: not re-sent (no retransmission)
        if self.born:
            self.born = False
            self.shared.stats.bump("connected", -1)
            self.shared.node_up[self.node] -= 1
            if self.shared.node_up[self.node] <= 0:  # all gone: the broker may lose the blobs
                self.shared.blobs_at.pop(self.node, None)
            self.shared.stats.bump("lost")
        if not self.stopping:
            self.shared.on_lost(self)

    # -- publishing -------------------------------------------------------------------
    def publish_birth(self) -> None:
        """§4.2: status online (seq 0), About, [interface XML], every property."""
        shared, topics, now = self.shared, self.shared.topics, time.time()
        self.seq = 0
        status = Status(True, self.bdseq, now, shared.keepalive_s, self.next_seq())
        self.publish(self._status.encode(), status.to_payload(), 1, True)
        about = About(
            shared.about_fields(self.agent_id),
            shared.refs,
            shared.groups,
            self.bdseq,
            now,
            self.next_seq(),
        )
        self.publish(topics.about(self.agent_id).encode(), about.to_payload(), 1, True)
        if shared.interface_topics != "v2":
            for name, xml in shared.xml.items():
                self.publish(topics.interface_xml(self.agent_id, name).encode(), xml, 1, True)
        self._prop("AssetName", self.agent_id, now)
        self._prop("Telemetry", self.telemetry(now), now)
        self._prop("Nameplate", NAMEPLATE, now)
        shared.stats.bump("births")

    def _prop(self, name: str, value: Any, now: float) -> None:
        seq = self.next_seq()
        update = PropertyUpdate(value, now, seq)
        topic = self.shared.topics.prop(self.agent_id, DEMO_INTERFACE, name)
        sent = self.publish(topic.encode(), update.to_payload(), 1, True)
        if sent and name == "Telemetry" and self.shared.acked is not None:
            if self._unacked is None:
                self._unacked = {}
            self._unacked[self._pid] = (now, seq)

    def on_puback(self, packet_id: int) -> None:
        """A Telemetry update acknowledged: into the PUBACK log (when there is one)."""
        if self._unacked is not None and self.shared.acked is not None:
            found = self._unacked.pop(packet_id, None)
            if found is not None:
                self.shared.acked.append(f"{self.agent_id} {found[0]!r} {found[1]}\n")

    def telemetry(self, now: float) -> dict[str, Any]:
        """The Telemetry value (keys of a virtual battery; SOC moves with the command)."""
        power = _POWER.get(self.event, 0.0) * self.rate_kw
        self.soc = min(95.0, max(5.0, self.soc - power * 0.01))
        return {
            "TimeStamp": ["u", int(now)],
            "Event": ["s", self.event],
            "Event_Rate_kW": ["n", self.rate_kw],
            "Sys_Rated_Energy": ["d", 60.0],
            "Sys_Rated_Power": ["d", 8.0],
            "Sys_SOC": ["d", round(self.soc, 2)],
            "Sys_Energy_kWh": ["d", round(self.soc * 0.6, 3)],
            "Sys_Power_kW": ["d", power],
            "State": ["s", "CONNECTED"],
        }

    def send_telemetry(self) -> None:
        if self.born:
            now = time.time()
            self._prop("Telemetry", self.telemetry(now), now)
            self.shared.stats.bump("telemetry")

    def goodbye(self) -> None:
        """Clean shutdown: offline status (reason shutdown), then DISCONNECT."""
        self.stopping = True
        if self.born:
            status = Status(False, self.bdseq, time.time(), None, self.next_seq(), "shutdown")
            self.publish(self._status.encode(), status.to_payload(), 1, True)
        self.close(disconnect=True)

    # -- receiving --------------------------------------------------------------------
    def on_publish(self, topic: str, payload: bytes, retain: bool) -> None:
        """Dispatch a delivery; whatever arrives, the agent keeps running (§6)."""
        try:
            if topic.startswith(self._call_prefix) or topic.startswith(self.shared.group_prefixes):
                self._call(topic, payload, retain)
            elif topic == self._status and not retain:
                self._repair(payload)
        except Exception as exc:  # a bug here must not cost 30 000 tracebacks
            self.shared.stats.bump("rejected")
            self.shared.rejections.warn(self.agent_id, f"internal: {type(exc).__name__}",
                                        "agent %s: message on %s not handled: %r",
                                        self.agent_id, topic, exc)  # fmt: skip

    def _repair(self, payload: bytes) -> None:
        """§4.3: a live offline status of an older session replaced by ours."""
        try:
            status = Status.from_object(decode_object(payload))
        except PayloadError:
            return
        if not status.online and status.bdseq < self.bdseq and self.born:
            repair = Status(True, self.bdseq, time.time(), self.shared.keepalive_s, self.next_seq())
            self.publish(self._status.encode(), repair.to_payload(), 1, True)
            self.shared.stats.bump("repairs")

    def _call(self, topic: str, payload: bytes, retain: bool) -> None:
        received = time.time()
        shared, stats = self.shared, self.shared.stats
        _, interface, member = topic.rsplit("/", 2)
        entry = shared.entry(interface, member, payload)
        call = entry.call
        if call is None:  # step 1
            stats.bump("rejected")
            shared.rejections.warn(self.agent_id, (entry.reject or "")[:60],
                                   "agent %s refused call on %s: %s", self.agent_id, topic,
                                   entry.reject)  # fmt: skip
            if entry.error is not None and entry.answer is not None:
                name, message = entry.error
                refusal = Reply(entry.answer[0], self.agent_id, False, error=name, message=message,
                                ts=received)  # fmt: skip
                self._reply(refusal, entry.answer[1])
            return
        key = (call.sender, call.id)  # step 2
        if self.seen is None:
            self.seen = OrderedDict()
        elif key in self.seen:
            stats.duplicate(call.id)
            return
        self.seen[key] = None
        if len(self.seen) > SEEN_CALLS:
            self.seen.popitem(last=False)
        stats.bump("calls_received")
        stats.received(call.id, entry.method, received, call.ts)
        if received > call.exp:  # step 3
            self._refuse(call, ErrorName.EXPIRED, f"call expired {received - call.exp:.3f} s ago")
        elif entry.error is not None:  # steps 4-5
            self._refuse(call, *entry.error)
        else:
            self._execute(entry, call, received)

    def _execute(self, entry: CallEntry, call: Call, now: float) -> None:
        """Step 6 (the simulated device applies a command at once), then step 7."""
        result: list[Any] = []
        applied: bool | None = None
        if entry.command is not None:  # EnergyMethod
            self.event, self.rate_kw = entry.command
            applied = True
        elif entry.method == f"{AGENT_INTERFACE}.Ping":
            result = [now]
        elif entry.method == f"{AGENT_INTERFACE}.Rebirth":
            self.shared.stats.bump("rebirths")
            self.shared.publish_blobs(self, self.node, rebirth=True)
            self.publish_birth()
        if call.reply_to is not None:
            self._reply(Reply(call.id, self.agent_id, True, result, ts=now, applied=applied),
                        call.reply_to)  # fmt: skip

    def _refuse(self, call: Call, name: str, message: str) -> None:
        self.shared.stats.bump("rejected")
        if call.reply_to is not None:
            self._reply(Reply(call.id, self.agent_id, False, error=name, message=message,
                              ts=time.time()), call.reply_to)  # fmt: skip

    def _reply(self, reply: Reply, topic: str) -> None:
        if self.publish(topic.encode(), reply.to_payload(), 1, False):
            self.shared.stats.bump("replies")

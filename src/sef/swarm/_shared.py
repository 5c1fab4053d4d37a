"""What the agents of one swarm process share: interfaces and their XML, the topic
tree, the checked-call cache (a group call is parsed and checked once per process, not
once per member), the stats and the worker's hooks."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sef import __version__
from sef.bus import (
    Call,
    ErrorName,
    InterfaceRef,
    PayloadError,
    TopicKind,
    Topics,
    decode_object,
)
from sef.interface import (
    AGENT_INTERFACE,
    DEMO_INTERFACE,
    Interface,
    TypeMismatch,
    args_from_json,
    builtin_xml,
    load_xml,
    parse_events,
)
from sef.logthrottle import LogThrottle
from sef.swarm._mqtt import MqttConnection
from sef.swarm._stats import WorkerStats

if TYPE_CHECKING:
    from sef.swarm._agent import SwarmAgent

__all__ = [
    "BLOB_EVERY_S",
    "INTERFACE_TOPICS",
    "NAMEPLATE",
    "SEEN_CALLS",
    "CallEntry",
    "SwarmShared",
]

log = logging.getLogger("sef.swarm")

SEEN_CALLS = 256
"""Calls each agent remembers for de-duplication (§6 step 2; a real SEF agent keeps
4 096: a swarm agent receives few calls and must stay small)."""
INTERFACE_TOPICS = ("v2", "v1", "both")
"""Where the interface XML goes: once per hash (v2), per agent (v1), or both."""
BLOB_EVERY_S = 10.0
"""A Rebirth republishes the process's interface XML blobs at most this often, s."""
PARSE_CACHE = 256
"""Distinct call payloads a process keeps parsed (a group call is parsed once)."""


@dataclass(slots=True)
class CallEntry:
    """A call payload checked once per process: what every agent does with it.

    ``call`` is None when step 1 refused it; then ``error`` (name, message) is sent to
    ``answer`` (id, reply_to) if that is set, else nothing is answered. With a ``call``,
    ``error`` is the refusal of steps 4–5 (unknown interface/method, invalid arguments).
    """

    method: str
    call: Call | None = None
    error: tuple[str, str] | None = None
    answer: tuple[str, str] | None = None
    reject: str | None = None
    command: tuple[str, int] | None = None
    """``EnergyMethod``: the first event's command and rate (kW)."""


class SwarmShared:
    """What the agents of one process share (interfaces, topics, caches, stats)."""

    def __init__(
        self,
        stats: WorkerStats,
        *,
        root: str = "sef",
        groups: Sequence[str] = (),
        telemetry_s: float = 60.0,
        keepalive_s: int = 10,
        interface_topics: str = "v2",
        sub_qos: int = 1,
        puback_log: bool = False,
    ) -> None:
        if interface_topics not in INTERFACE_TOPICS:
            raise ValueError(f"interface_topics must be v2, v1 or both, not {interface_topics!r}")
        self.stats = stats
        self.topics = Topics(root)
        self.groups = list(groups)
        self.telemetry_s = telemetry_s
        self.keepalive_s = keepalive_s
        self.interface_topics = interface_topics
        self.sub_qos = sub_qos
        """QoS of the agents' subscriptions (0 on NATS: a QoS 1 one costs a JetStream
        consumer per agent and filter)."""
        self.acked: list[str] | None = [] if puback_log else None
        """With a PUBACK log: one line ``AGENT TS SEQ`` per Telemetry update the broker
        acknowledged (``TS`` as published, Unix s), until the worker writes them out."""
        self.xml = {name: builtin_xml(name).encode() for name in (DEMO_INTERFACE, AGENT_INTERFACE)}
        self.sha = {name: hashlib.sha256(xml).hexdigest() for name, xml in self.xml.items()}
        self.refs = [InterfaceRef(name, sha) for name, sha in self.sha.items()]
        self.interfaces: dict[str, Interface] = {
            name: load_xml(xml.decode()).interfaces[name] for name, xml in self.xml.items()
        }
        self.group_prefixes = tuple(f"{root}/groups/{g}/call/" for g in self.groups)
        self.on_lost: Callable[[SwarmAgent], None] = lambda agent: None
        """Called when an agent's connection closed (the worker reconnects it)."""
        self.on_handshake: Callable[[SwarmAgent], None] = lambda agent: None
        """Called when an agent's connection attempt ended (CONNACK, loss or failure)."""
        self.blobs_at: dict[int, float] = {}
        """When this process last published the interface XML blobs on each broker of its
        list (index -> monotonic s)."""
        self.node_up: Counter[int] = Counter()
        """Agents of this process born on each broker of its list (index -> count)."""
        self._cache: OrderedDict[tuple[str, str, bytes], CallEntry] = OrderedDict()
        self.rejections = LogThrottle(log, "refused calls")

    def publish_blobs(self, agent: MqttConnection, node: int = 0, *, rebirth: bool = False) -> None:
        """Publish every interface XML once per hash (retained), through ``agent`` on broker
        ``node`` of the list: at the process's first birth on that broker, at a birth after
        every agent there was disconnected (the broker may have restarted), and at a
        Rebirth at most every :data:`BLOB_EVERY_S`."""
        if self.interface_topics == "v1":
            return
        now = time.monotonic()
        last = self.blobs_at.get(node)
        if last is not None and not (rebirth and now - last >= BLOB_EVERY_S):
            return
        for name, xml in self.xml.items():
            agent.publish(self.topics.interface_blob(self.sha[name]).encode(), xml, 1, True)
        self.blobs_at[node] = now

    def entry(self, interface: str, member: str, payload: bytes) -> CallEntry:
        """The checked call of ``payload`` on ``interface.member`` (cached per process)."""
        key = (interface, member, payload)
        found = self._cache.get(key)
        if found is not None:
            return found
        entry = self._check(interface, member, payload)
        self._cache[key] = entry
        if len(self._cache) > PARSE_CACHE:
            self._cache.popitem(last=False)
        return entry

    def _check(self, interface: str, member: str, payload: bytes) -> CallEntry:
        where = f"{interface}.{member}"
        obj: Any = None
        try:
            obj = decode_object(payload)
            call = Call.from_object(obj)
        except PayloadError as exc:
            answer = None
            if obj is None and exc.name == ErrorName.UNSUPPORTED_VERSION:
                obj = _json_object(payload)  # readable JSON of another version: answered
            if isinstance(obj, dict) and exc.name != ErrorName.TOO_LARGE:
                call_id, reply_to = obj.get("id"), obj.get("reply_to")
                if isinstance(call_id, str) and call_id and self.is_reply_topic(reply_to):
                    answer = (call_id[:128], str(reply_to))
            return CallEntry(where, None, (exc.name, str(exc)), answer, str(exc))
        if call.reply_to is not None and not self.is_reply_topic(call.reply_to):
            reason = f"reply_to {call.reply_to[:80]!r} is not a reply topic: call not executed"
            return CallEntry(where, None, None, None, reason)
        iface = self.interfaces.get(interface)
        if iface is None:
            message = f"agent does not implement {interface}"
            return CallEntry(where, call, (ErrorName.UNKNOWN_INTERFACE, message), None, message)
        spec = iface.methods.get(member)
        if spec is None:
            message = f"{interface} has no method {member}"
            return CallEntry(where, call, (ErrorName.UNKNOWN_METHOD, message), None, message)
        command = None
        try:
            args = args_from_json(spec.in_args, call.args)
            if where == f"{DEMO_INTERFACE}.EnergyMethod":
                first = parse_events(args[0])[0]  # type: ignore[arg-type]
                command = (first.cmd.value, first.rate_kw)
        except TypeMismatch as exc:
            return CallEntry(where, call, (ErrorName.INVALID_ARGS, str(exc)), None, str(exc))
        return CallEntry(where, call, command=command)

    def is_reply_topic(self, topic: object) -> bool:
        if not isinstance(topic, str):
            return False
        parsed = self.topics.parse(topic)
        return parsed is not None and parsed.kind is TopicKind.REPLY

    def about_fields(self, agent_id: str) -> dict[str, Any]:
        """AllJoyn About fields of a swarm agent."""
        return {
            "AppId": hashlib.md5(
                f"sef-swarm:{agent_id}".encode(), usedforsecurity=False
            ).hexdigest(),
            "DefaultLanguage": "en",
            "DeviceName": agent_id,
            "DeviceId": agent_id,
            "AppName": "SEF swarm agent",
            "Manufacturer": "SEF",
            "ModelNumber": "sef-swarm",
            "SupportedLanguages": ["en"],
            "Description": "lightweight simulated battery of sef swarm",
            "SoftwareVersion": __version__,
            "HardwareVersion": "",
            "SupportUrl": "https://github.com/sef-energy/sef",
        }


def _json_object(payload: bytes) -> dict[str, Any] | None:
    """The JSON object of ``payload`` whatever its version, or None."""
    try:
        obj = json.loads(payload)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


NAMEPLATE = {
    "DeviceType": ["s", "battery"],
    "Charge_Rate_kW": ["d", 8.0],
    "Discharge_Rate_kW": ["d", 8.0],
    "Capacity_kWh": ["d", 60.0],
    "SOC_Min_pct": ["d", 5.0],
    "SOC_Max_pct": ["d", 95.0],
    "Charge_Efficiency_pct": ["d", 97.5],
    "Discharge_Efficiency_pct": ["d", 97.5],
}
"""The nameplate every swarm agent reports (the virtual battery's)."""

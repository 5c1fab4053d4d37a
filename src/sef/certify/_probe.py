"""The certifier's side of the bus: :class:`Probe` implements :class:`CheckContext`.

The probe is one MQTT client (:class:`sef.bus.BusClient`) that subscribes at QoS 2 to the
agent's whole subtree and to its own reply topic, so every message arrives with the QoS
it was published with and its retain flag as the broker delivered it. It records every
message in arrival order, keeps the agent's About, interface XML and property values,
sends calls (protocol version 1, or signed version-2 envelopes when it has EMS
credentials) and takes the replies. A second, short-lived connection sees what a new
subscriber sees (the retained messages); a third takes the agent's client id over to
make it reconnect; a shell command (or the operator) restarts the agent's process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sef.bus import BusClient, Message, PayloadError, decode_envelope, encode_envelope
from sef.certify._agent_sessions import STATUS, AgentSessions
from sef.certify._model import Observed
from sef.security import (
    MAX_LIFETIME_S,
    EnvelopeRefused,
    ReplayCache,
    Security,
    call_audience,
    sign_call,
    verify_reply,
)

__all__ = ["Probe", "ProbeSettings"]

log = logging.getLogger("sef.certify")


@dataclass
class ProbeSettings:
    """How the probe reaches the broker and the agent.

    Attributes:
        broker: broker URL.
        agent_id: the agent under test.
        root: topic root.
        security: EMS credentials (signed calls) or ``None`` (protocol version 1).
        prepare_bus: applied to every client the probe makes (e.g. the TLS context).
        restart_cmd: shell command that restarts the agent's process, or ``None``.
        interactive: without ``restart_cmd``, ask the operator on the terminal.
        restart_timeout_s: how long to wait for the agent's new birth after a restart, s.
        settle_s: quiet time that ends the collection of retained messages, s.
        expected_interfaces: interface name -> XML the agent is certified against.
        client_id: the probe's client id without credentials (with them: the identity).
    """

    broker: str
    agent_id: str
    root: str = "sef"
    security: Security | None = None
    prepare_bus: Callable[[BusClient], None] | None = None
    restart_cmd: str | None = None
    interactive: bool = False
    restart_timeout_s: float = 60.0
    settle_s: float = 0.5
    expected_interfaces: dict[str, bytes] = field(default_factory=dict)
    client_id: str = field(default_factory=lambda: f"certify-{uuid.uuid4().hex[:8]}")


class Probe(AgentSessions):
    """The certifier's connection (see the module docstring)."""

    def __init__(self, settings: ProbeSettings) -> None:
        self.settings = settings
        self.agent_id = settings.agent_id
        self.root = settings.root
        self.security = settings.security
        self.client_id = settings.security.identity.id if settings.security else settings.client_id
        self.reply_topic = f"{self.root}/clients/{self.client_id}/reply"
        self.about: dict[str, Any] | None = None
        self.interfaces: dict[str, bytes] = {}
        self.blobs: dict[str, bytes] = {}
        self._own_xml: set[str] = set()  # names whose XML came on the agent's own topic
        self.expected_interfaces = dict(settings.expected_interfaces)
        self.birth: list[Observed] = []
        self.stream: list[Observed] = []
        self.replies_seen: list[dict[str, Any]] = []
        self.rejected_replies: list[str] = []
        self._prefix = f"{self.root}/agents/{self.agent_id}/"
        self._values: dict[tuple[str, str], Any] = {}
        self._own: list[tuple[str, bytes]] = []
        self._waiters: list[asyncio.Event] = []
        self._last_mark = 0
        self._replay = ReplayCache()
        self._live_birth: list[Observed] | None = None
        self._reconnected: int | None = None
        self._restarted: int | None = None
        self._snapshot: dict[str, Observed] | None = None
        self.birth_pings: dict[int, asyncio.Task[dict[str, Any] | None]] = {}
        self._newest_bdseq: int | None = None
        self.bus = self._client(self.client_id, self._on_message)

    # -- connection ------------------------------------------------------------------
    def _client(self, client_id: str, on_message: Callable[[Message], object]) -> BusClient:
        bus = BusClient(self.settings.broker, client_id, on_message=on_message)
        if self.settings.prepare_bus is not None:
            self.settings.prepare_bus(bus)
        return bus

    async def start(self, timeout_s: float = 10.0) -> None:
        """Connect, subscribe, and collect the retained birth (until ``settle_s`` quiet)."""
        await self.bus.start(timeout_s=timeout_s)
        await self.bus.subscribe(self._prefix + "#", qos=2)
        await self.bus.subscribe(self.topic("interfaces/+"), qos=2)  # XML once per hash
        await self.bus.subscribe(self.reply_topic, qos=2)
        await self._settle(self.settings.settle_s, max_s=3.0)

    async def wait_about(self, timeout_s: float) -> bool:
        """Wait until the agent's About was seen; return whether it was."""
        return bool(await self._until(lambda: self.about is not None, timeout_s))

    async def stop(self) -> None:
        for task in self.birth_pings.values():
            task.cancel()
        await asyncio.gather(*self.birth_pings.values(), return_exceptions=True)
        await self.bus.stop()

    async def _settle(self, quiet_s: float, max_s: float) -> None:
        """Wait until no message came for ``quiet_s`` s (at most ``max_s`` s)."""
        deadline = time.monotonic() + max_s
        while time.monotonic() < deadline:
            last = self.stream[-1].at if self.stream else 0.0
            if time.monotonic() - last >= quiet_s:
                return
            await asyncio.sleep(0.05)

    # -- receiving -------------------------------------------------------------------
    def _on_message(self, message: Message) -> None:
        if message.retain and self._snapshot is not None:
            self._snapshot[message.topic] = Observed(
                message.topic, message.payload, True, message.qos, time.monotonic()
            )
            return
        key = (message.topic, message.payload)
        if key in self._own:  # our own publish coming back
            self._own.remove(key)
            for waiter in self._waiters:
                waiter.set()
            return
        seen = Observed(
            message.topic, message.payload, message.retain, message.qos, time.monotonic()
        )
        self.stream.append(seen)
        if message.topic == self.reply_topic:
            self._take_reply(message.payload)
        elif message.topic.startswith(self._blob_prefix):
            if message.payload:
                self.blobs[message.topic[len(self._blob_prefix) :]] = message.payload
                self._resolve_blobs()
        elif message.topic.startswith(self._prefix) and "/call/" not in message.topic:
            self.birth.append(seen)
            self._remember(seen)
            if message.topic == self.agent_topic(STATUS):
                self._new_session(seen)
        for waiter in self._waiters:
            waiter.set()

    def _remember(self, seen: Observed) -> None:
        rest = seen.topic[len(self._prefix) :]
        if not seen.payload:
            return
        if rest.startswith("interfaces/"):
            name = rest.split("/", 1)[1]
            self.interfaces[name] = seen.payload
            self._own_xml.add(name)
            return
        try:
            data = seen.json()
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        if rest == "about":
            self.about = data
            self._resolve_blobs()
        elif rest.startswith("props/") and rest.count("/") == 2 and "value" in data:
            _, interface, name = rest.split("/")
            self._values[(interface, name)] = data["value"]

    @property
    def _blob_prefix(self) -> str:
        return self.topic("interfaces/")

    def _resolve_blobs(self) -> None:
        """Take the XML of each interface the About names from its hash topic (protocol
        version 2), unless the agent published it on its own topic (version 1); whether
        its SHA-256 is the topic's is the ``interface_xml`` check's to say."""
        refs = (self.about or {}).get("interfaces")
        for ref in refs if isinstance(refs, list) else []:
            if not isinstance(ref, dict):
                continue
            name, digest = ref.get("name"), ref.get("sha256")
            if not isinstance(name, str) or not isinstance(digest, str):
                continue
            xml = self.blobs.get(digest)
            if name not in self._own_xml and xml is not None:
                self.interfaces[name] = xml

    def _new_session(self, seen: Observed) -> None:
        """Ping a new session the moment its birth arrives live: a controller that calls
        an agent as soon as it sees the birth must be heard (docs/protocol.md §4.2)."""
        data = _object(seen)
        bdseq = data.get("bdseq") if data is not None else None
        if data is None or data.get("state") != "online" or not isinstance(bdseq, int):
            return
        newest, self._newest_bdseq = self._newest_bdseq, max(bdseq, self._newest_bdseq or 0)
        if seen.retain or newest is None or bdseq <= newest or data.get("seq") != 0:
            return
        self.birth_pings[bdseq] = asyncio.get_running_loop().create_task(
            self.call("sef.Agent", "Ping", [], timeout_s=5.0), name=f"birth-ping:{bdseq}"
        )

    def _take_reply(self, payload: bytes) -> None:
        try:
            data = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            self.rejected_replies.append(f"not JSON: {payload[:60]!r}")
            return
        if self.security is not None:
            try:
                token = decode_envelope(payload)
                data = verify_reply(
                    self.security, token, audience=self.client_id, replay=self._replay
                ).message
            except (PayloadError, EnvelopeRefused) as exc:
                self.rejected_replies.append(f"refused signed reply: {exc}")
                return
        if isinstance(data, dict):
            self.replies_seen.append(data)
        else:
            self.rejected_replies.append(f"not an object: {payload[:60]!r}")

    async def _until(self, found: Callable[[], Any], timeout_s: float) -> Any:
        """Return ``found()`` once it is truthy, or its last value after ``timeout_s``."""
        waiter = asyncio.Event()
        self._waiters.append(waiter)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                waiter.clear()
                value = found()
                left = deadline - time.monotonic()
                if value or left <= 0:
                    return value
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.wait(), left)
        finally:
            self._waiters.remove(waiter)

    # -- CheckContext ------------------------------------------------------------------
    def topic(self, suffix: str) -> str:
        return f"{self.root}/{suffix}"

    def agent_topic(self, suffix: str) -> str:
        return self._prefix + suffix

    def mark(self) -> int:
        self._last_mark = len(self.stream)
        return self._last_mark

    def since(self, mark: int) -> list[Observed]:
        return self.stream[mark:]

    def agent_messages(self, mark: int = 0) -> list[Observed]:
        return [
            m
            for m in self.stream[mark:]
            if m.topic.startswith(self._prefix) and "/call/" not in m.topic
        ]

    def property_value(self, interface: str, name: str) -> Any:
        return self._values[(interface, name)]

    async def wait_message(
        self, predicate: Callable[[Observed], bool], timeout_s: float
    ) -> Observed | None:
        start = self._last_mark

        def first() -> Observed | None:
            return next((m for m in self.stream[start:] if predicate(m)), None)

        result: Observed | None = await self._until(first, timeout_s)
        return result

    async def subscribe(self, topic_filter: str) -> None:
        await self.bus.subscribe(topic_filter, qos=2)

    async def publish_raw(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        self._own.append((topic, payload))
        self.bus.publish(topic, payload, qos=qos)

    async def publish_retained(self, topic: str, payload: bytes, timeout_s: float = 2.0) -> bool:
        """Publish a retained message (the stale-death check's forged will); return whether
        the broker delivered it back (``False``: its ACL refused it)."""
        key = (topic, payload)
        self._own.append(key)
        self.bus.publish(topic, payload, qos=1, retain=True)
        echoed = bool(await self._until(lambda: key not in self._own, timeout_s))
        if not echoed:
            self._own.remove(key)
        return echoed

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
        call_id = call_id or uuid.uuid4().hex[:16]
        now = time.time()
        message: dict[str, Any] = {
            "v": 1,
            "id": call_id,
            "ts": now,
            "exp": now + exp_in_s,
            "args": args,
            "sender": self.client_id,
        }
        if reply:
            message["reply_to"] = self.reply_topic
        message.update(extra or {})
        for key in omit:
            message.pop(key, None)
        if group is not None:
            topic = f"{self.root}/groups/{group}/call/{interface}/{method}"
        else:
            topic = f"{self.root}/agents/{target or self.agent_id}/call/{interface}/{method}"
        if self.security is None:
            payload = json.dumps(message, separators=(",", ":")).encode()
        else:
            audience = call_audience(group or target or self.agent_id, group=group is not None)
            lifetime = min(MAX_LIFETIME_S, max(1.0, exp_in_s))
            token = sign_call(self.security, f"{interface}/{method}", audience, message, lifetime)
            payload = encode_envelope(token)
        start = len(self.replies_seen)
        await self.publish_raw(topic, payload)
        if not reply:
            return None

        def first() -> dict[str, Any] | None:
            return next((r for r in self.replies_seen[start:] if r.get("id") == call_id), None)

        result: dict[str, Any] | None = await self._until(first, timeout_s)
        return result

    async def replies(self, call_id: str, timeout_s: float) -> list[dict[str, Any]]:
        await asyncio.sleep(timeout_s)
        return [r for r in self.replies_seen if r.get("id") == call_id]


def _object(message: Observed) -> dict[str, Any] | None:
    try:
        data = message.json()
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None

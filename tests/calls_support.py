"""Helpers of the adversarial call tests (tests/adversarial/test_calls_*.py): an EMS with a
store and its API on a real Mosquitto, real battery agents as processes, a rogue client,
and readers of retained topics and metrics."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from sef.bus import BusClient, Message
from sef.ems import EMS
from sef.ems.api import ApiAuth, ApiServer, serve_api
from sef.ems.store import Store
from support import AgentProcess, wait_for


@dataclass
class EmsStack:
    """An EMS (host id ``ems``) with a SQLite store (or none) and its API."""

    ems: EMS
    store: Store | None
    server: ApiServer
    http: httpx.AsyncClient

    async def stop(self) -> None:
        """Stop the API, the EMS and the store."""
        await self.http.aclose()
        await self.server.stop()
        await self.ems.stop()
        if self.store is not None:
            self.store.close()

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """``/metrics`` as {(sample name, sorted labels): value}."""
        text = (await self.http.get("/metrics")).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    async def log_entry(self, call_id: str) -> dict[str, Any]:
        """The command log entry of ``call_id``."""
        entries = (await self.http.get("/commands", params={"limit": 1000})).json()
        found = [e for e in entries if e["call_id"] == call_id]
        assert found, f"call {call_id} not in the command log"
        return dict(found[0])


async def start_ems(broker: str, db: Path | None, **kwargs: Any) -> EmsStack:
    """An EMS named ``ems`` with a store at ``db`` (SQLite; ``None``: no store, hence a
    clean MQTT session) and its API on a free port."""
    store = Store.open(f"sqlite:///{db}") if db is not None else None
    ems = EMS(broker, "ems", store=store, **kwargs)
    await ems.start()
    server = await serve_api(ems, "127.0.0.1", 0, auth=ApiAuth.open())
    return EmsStack(ems, store, server, httpx.AsyncClient(base_url=server.url, timeout=20.0))


def battery(
    processes: list[AgentProcess], agent_id: str, broker: str, *groups: str
) -> AgentProcess:
    """Start a ``sef agent virtual-battery`` process (joined to ``groups``)."""
    extra: list[str] = []
    for group in groups:
        extra += ["--group", group]
    process = AgentProcess(agent_id, broker, *extra).start()
    processes.append(process)
    return process


def freeze(process: AgentProcess) -> None:
    """SIGSTOP an agent process: it stays connected (for a keepalive) but answers nothing."""
    assert process.process is not None
    os.kill(process.process.pid, signal.SIGSTOP)


def thaw(process: AgentProcess) -> None:
    """SIGCONT an agent process frozen by :func:`freeze`."""
    assert process.process is not None
    os.kill(process.process.pid, signal.SIGCONT)


async def online(ems: EMS, *agent_ids: str, timeout_s: float = 10.0) -> None:
    """Wait until the EMS has every agent online, with its groups and interfaces."""
    await wait_for(
        lambda: all(
            (r := ems.registry.get(a)) is not None and r.online is True and bool(r.interfaces)
            for a in agent_ids
        ),
        timeout_s,
    )


@dataclass
class Rogue:
    """An anonymous client that reads every call and reply on the bus and answers calls in
    other agents' names: ``forge(call, topic)`` returns the reply objects to publish to the
    call's ``reply_to``; with ``replay`` it also publishes every reply it sees once again."""

    broker: str
    forge: Callable[[dict[str, Any], str], list[dict[str, Any]]] = lambda call, topic: []
    replay: bool = False
    client_id: str = "rogue"
    calls: list[dict[str, Any]] = field(default_factory=list)
    _sent: set[bytes] = field(default_factory=set)
    bus: BusClient | None = None

    async def start(self) -> Rogue:
        """Connect and listen to every call and reply topic."""
        self.bus = BusClient(self.broker, self.client_id, on_message=self._on_message)
        for pattern in ("sef/agents/+/call/#", "sef/groups/+/call/#", "sef/clients/+/reply"):
            await self.bus.subscribe(pattern, qos=1)
        await self.bus.start()
        return self

    async def stop(self) -> None:
        """Disconnect."""
        if self.bus is not None:
            await self.bus.stop()

    def _publish(self, topic: str, obj: dict[str, Any]) -> None:
        assert self.bus is not None
        payload = json.dumps(obj).encode()
        self._sent.add(payload)
        self.bus.publish(topic, payload, qos=1)

    def _on_message(self, message: Message) -> None:
        obj = json.loads(message.payload)
        if message.topic.endswith("/reply"):
            if self.replay and message.payload not in self._sent:
                self._publish(message.topic, obj)
            return
        self.calls.append(obj)
        reply_to = obj.get("reply_to")
        if reply_to:
            for forged in self.forge(obj, message.topic):
                self._publish(reply_to, forged)


def forged_reply(call: dict[str, Any], agent: str, ok: bool = True) -> dict[str, Any]:
    """A reply to ``call`` in the name of ``agent``."""
    reply: dict[str, Any] = {"v": 1, "id": call["id"], "agent": agent, "ok": ok, "ts": call["ts"]}
    if ok:
        reply["result"] = []
    else:
        reply["error"] = {"name": "org.freedesktop.DBus.Error.Failed", "message": "forged"}
    return reply


async def retained(broker: str, topic: str, timeout_s: float = 3.0) -> dict[str, Any] | None:
    """The retained JSON object on ``topic`` as a new subscriber gets it (None: nothing)."""
    got: list[dict[str, Any]] = []

    def on_message(message: Message) -> None:
        if message.retain and message.payload:
            try:
                got.append(json.loads(message.payload))
            except ValueError:
                got.append({"unreadable": message.payload[:40].hex()})

    client = BusClient(broker, on_message=on_message)
    await client.subscribe(topic, qos=1)
    await client.start()
    try:
        try:
            await wait_for(lambda: bool(got), timeout_s)
        except AssertionError:
            return None
        await asyncio.sleep(0.05)
        return got[-1]
    finally:
        await client.stop()

"""Helpers of the incomplete-birth tests (issue 16): a Mosquitto whose per-client queue
drops most of a fleet's retained births at an EMS's subscription, a fleet of real
virtual-battery agents, a count of the retained messages the broker holds, and an EMS with
its API."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from sef.agents.virtual_battery import VirtualBatteryAgent
from sef.broker import Mosquitto
from sef.bus import BusClient, Message, Topics
from sef.ems import EMS
from sef.ems.api import ApiAuth, ApiServer, serve_api

TOPICS = Topics()
DEMO = "edu.pdx.powerlab.demo"
QUEUE = 20
"""The broker's per-client queue (``max_queued_messages``); in-flight stays at Mosquitto's
stock 20."""


def small_queue_broker(workdir: Path, queue: int = QUEUE) -> Mosquitto:
    """A started Mosquitto that queues at most ``queue`` messages per client (plus the stock
    20 in flight) and drops the rest, as a production broker sized too small does."""
    workdir.mkdir(parents=True, exist_ok=True)
    broker = Mosquitto(
        workdir=workdir,
        extra_config=(
            f"max_queued_messages {queue}\nmax_queued_bytes 0\nmax_inflight_messages 20\n"
        ),
    )
    return broker.start()


async def start_fleet(
    url: str, count: int, prefix: str = "vb", step_s: float = 3.0
) -> list[VirtualBatteryAgent]:
    """``count`` started virtual batteries in group ``g1``, with telemetry every ``step_s``
    (an agent of which the EMS received nothing at all is known by its next telemetry)."""
    agents = [
        VirtualBatteryAgent(f"{prefix}-{i:03d}", url, step_s=step_s, groups=["g1"], keepalive_s=5)
        for i in range(count)
    ]
    for chunk in range(0, count, 25):  # a few at a time: their SUBACKs and births
        await asyncio.gather(*(agent.start() for agent in agents[chunk : chunk + 25]))
    return agents


async def stop_all(agents: list[VirtualBatteryAgent]) -> None:
    await asyncio.gather(*(agent.stop() for agent in agents), return_exceptions=True)


async def count_retained(url: str, agent_ids: list[str], quiet_s: float = 0.3) -> int:
    """Retained messages the broker holds under the agents' subtrees, read one agent at a
    time (each subscription's few messages fit any queue)."""
    seen: list[Message] = []
    client = BusClient(url, f"count-{time.monotonic_ns() % 10**9}", on_message=seen.append)
    await client.start()
    try:
        for agent_id in agent_ids:
            before = len(seen)
            await client.subscribe(f"{TOPICS.root}/agents/{agent_id}/#", qos=1)
            await asyncio.sleep(quiet_s)
            while len(seen) == before:  # not even its status yet: wait a little more
                await asyncio.sleep(quiet_s)
            client.unsubscribe(f"{TOPICS.root}/agents/{agent_id}/#")
        return sum(1 for m in seen if m.retain)
    finally:
        await client.stop()


def complete(ems: EMS, agent_id: str) -> bool:
    """Whether the EMS has ``agent_id`` online with its About, groups and Telemetry."""
    record = ems.registry.get(agent_id)
    return (
        record is not None
        and record.online is True
        and bool(record.about)
        and list(record.groups) == ["g1"]
        and f"{DEMO}.Telemetry" in record.properties
    )


@dataclass
class EmsWithApi:
    """An EMS, its API and an HTTP client of it; retained messages it received."""

    ems: EMS
    server: ApiServer
    http: httpx.AsyncClient
    retained: list[str]

    async def health(self) -> dict[str, Any]:
        answer = await self.http.get("/health")
        body: dict[str, Any] = answer.json()
        return body

    async def metrics(self) -> str:
        return (await self.http.get("/metrics")).text

    async def stop(self) -> None:
        await self.http.aclose()
        await self.server.stop()
        await self.ems.stop()


async def start_ems(url: str, host_id: str, **kwargs: Any) -> EmsWithApi:
    """Start an EMS (``kwargs`` go to :class:`EMS`) that counts the retained agent
    messages it receives, and its API on a free port."""
    ems = EMS(url, host_id, keepalive_s=5, **kwargs)
    retained: list[str] = []
    handle = ems._on_message
    prefix = f"{TOPICS.root}/agents/"

    def counting(message: Message) -> Any:
        if message.retain and message.topic.startswith(prefix):
            retained.append(message.topic)
        return handle(message)

    ems.bus._on_message = counting  # (no store: no acknowledger holds the old one)
    await ems.start()
    server = await serve_api(ems, "127.0.0.1", 0, auth=ApiAuth.open())
    return EmsWithApi(ems, server, httpx.AsyncClient(base_url=server.url, timeout=20.0), retained)


async def drained(ems: EMS, extra_s: float = 0.0) -> None:
    """Wait until the EMS's retained backlog drained, then ``extra_s`` more."""
    loop = asyncio.get_running_loop()
    while ems.births.draining(loop.time()):
        await asyncio.sleep(0.1)
    await asyncio.sleep(extra_s)

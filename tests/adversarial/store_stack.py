"""Helpers of the store's adversarial tests: a real EMS with a store and its API on a free
port, a publisher of sequence-numbered telemetry, and store read-backs."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

from sef.bus import BusClient, PropertyUpdate, Status, Topics
from sef.ems import EMS
from sef.ems.api import ApiAuth, ApiServer, serve_api
from sef.ems.store import Store
from support import wait_for

TOPICS = Topics()
KEY = "edu.pdx.powerlab.demo.Telemetry"
IFACE = "edu.pdx.powerlab.demo"


@dataclass
class EmsStack:
    """An EMS with a store, its API served by uvicorn, and an HTTP client of it."""

    ems: EMS
    store: Store
    server: ApiServer
    http: httpx.AsyncClient

    async def stop(self) -> None:
        """Stop the API, then the EMS (it commits its last batch); the store stays open."""
        await self.http.aclose()
        await self.server.stop()
        await self.ems.stop()


async def start_ems(broker_url: str, store: Store, host_id: str = "ems-store") -> EmsStack:
    """Start an EMS (persistent session, ack after commit) and its API on a free port."""
    ems = EMS(broker_url, host_id, store=store, keepalive_s=2)
    await ems.start()
    server = await serve_api(ems, "127.0.0.1", 0, auth=ApiAuth.open())
    return EmsStack(ems, store, server, httpx.AsyncClient(base_url=server.url, timeout=10.0))


async def publisher(broker_url: str, name: str) -> BusClient:
    """A started bus client that publishes as test agents."""
    client = BusClient(broker_url, name)
    await client.start()
    return client


def birth(client: BusClient, agent_id: str, bdseq: int = 1, ts: float | None = None) -> None:
    """Publish the retained online status of ``agent_id`` (its sequence starts at 0)."""
    status = Status(True, bdseq, time.time() if ts is None else ts, 10, 0)
    client.publish(TOPICS.status(agent_id), status.to_payload(), retain=True)


def telemetry(client: BusClient, agent_id: str, seq: int, ts: float) -> None:
    """Publish telemetry message ``seq`` of ``agent_id`` with sender time ``ts`` (Unix s)."""
    update = PropertyUpdate({"TimeStamp": ["u", int(ts)], "n": ["x", seq]}, ts, seq)
    client.publish(TOPICS.prop(agent_id, IFACE, "Telemetry"), update.to_payload())


def stored_seqs(store: Store, agent_id: str) -> list[int]:
    """Sequence numbers of ``agent_id``'s stored telemetry, sorted (duplicates kept)."""
    return sorted(row["seq"] for row in store.telemetry(agent_id, key=KEY, limit=1_000_000))


async def stored(store: Store, count: int, timeout_s: float) -> None:
    """Wait until the store holds at least ``count`` telemetry rows."""

    def enough() -> bool:
        return store.count_telemetry() >= count

    await wait_for(enough, timeout_s, step_s=0.1)
    await asyncio.sleep(0.3)  # anything extra (a duplicate) would land by now

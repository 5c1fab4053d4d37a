"""Helpers of the registry's adversarial tests: a real EMS (optionally with a store) and
its API on a free port, a rogue bus client, and real virtual-battery agents."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from sef.agents.virtual_battery import VirtualBatteryAgent
from sef.bus import BusClient, Topics
from sef.ems import EMS
from sef.ems.api import ApiAuth, ApiServer, serve_api
from sef.ems.store import Store
from support import wait_for

TOPICS = Topics()
DEMO = "edu.pdx.powerlab.demo"


@dataclass
class RegStack:
    """An EMS, its API and an HTTP client of it, and a rogue client on the same broker."""

    ems: EMS
    server: ApiServer
    http: httpx.AsyncClient
    rogue: BusClient
    store: Store | None

    async def stop(self) -> None:
        """Stop everything this stack started (the store stays open)."""
        await self.http.aclose()
        await self.server.stop()
        await self.ems.stop()
        await self.rogue.stop()


async def start_stack(
    broker_url: str, *, store: Store | None = None, host_id: str = "ems-reg", **kwargs: Any
) -> RegStack:
    """Start an EMS (``kwargs`` go to :class:`EMS`), its API, and a rogue client."""
    ems = EMS(broker_url, host_id, store=store, keepalive_s=2, **kwargs)
    await ems.start()
    server = await serve_api(ems, "127.0.0.1", 0, auth=ApiAuth.open())
    rogue = BusClient(broker_url, f"rogue-{time.monotonic_ns() % 10**9}")
    await rogue.start()
    return RegStack(ems, server, httpx.AsyncClient(base_url=server.url, timeout=20.0), rogue, store)


async def battery(broker_url: str, agent_id: str, ems: EMS | None = None) -> VirtualBatteryAgent:
    """A started virtual battery in group ``feeder-1``; with ``ems``: once the EMS has it
    online with its telemetry."""
    agent = VirtualBatteryAgent(
        agent_id, broker_url, step_s=1.0, groups=["feeder-1"], keepalive_s=2
    )
    await agent.start()
    if ems is not None:
        await wait_for(lambda: online_with_telemetry(ems, agent_id), 10.0)
    return agent


def online_with_telemetry(ems: EMS, agent_id: str) -> bool:
    """Whether the EMS has ``agent_id`` online, with its groups and telemetry."""
    record = ems.registry.get(agent_id)
    return (
        record is not None
        and record.online is True
        and bool(record.groups)
        and f"{DEMO}.Telemetry" in record.properties
    )


def raw_status(state: str, bdseq: int, **extra: Any) -> bytes:
    """A status payload as a rogue writes it (no range checks on the way)."""
    return json.dumps({"v": 1, "state": state, "bdseq": bdseq, **extra}).encode()

"""Shared pieces of the cluster tests (tests/cluster): a lean SEF agent on a broker URL
list, waiting for stored telemetry, the shared ingest consumer's state."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from sef.bus import About, BusClient, BusError, PropertyUpdate, Status, Topics
from sef.cluster import ClusterNotFound, find_nats_server, start_index, url_list_resolver
from sef.cluster._jetstream import MSGS_STREAM, _nats

IFACE = "edu.pdx.powerlab.demo"
TOPICS = Topics()


def need_nats() -> None:
    pytest.importorskip("nats", reason="nats-py missing: pip install -e '.[cluster]'")
    try:
        find_nats_server()
    except ClusterNotFound as exc:
        pytest.skip(str(exc))


class Agent:
    """A lean SEF agent: a birth (status, About in group g1), then sequence-numbered QoS 1
    telemetry, each message sent again until the broker acknowledged it (at least once);
    ``acked`` holds the telemetry numbers the broker acknowledged."""

    def __init__(self, urls: list[str], index: int) -> None:
        self.agent_id = f"agent-{index}"
        self.bus = BusClient(
            url_list_resolver(urls, start=start_index(self.agent_id, len(urls))), self.agent_id
        )
        self.bdseq = int(time.time() * 1000)
        self.seq = 0
        self.acked: set[int] = set()

    async def _send(self, topic: str, payload: bytes, retain: bool = True) -> None:
        for _ in range(60):
            try:
                await asyncio.wait_for(self.bus.publish_acked(topic, payload, retain=retain), 20)
                return
            except (BusError, TimeoutError):
                await asyncio.sleep(0.5)  # offline or lost: send it again
        raise AssertionError(f"{self.agent_id}: {topic} never acknowledged")

    async def birth(self) -> None:
        await self.bus.start(timeout_s=30)
        now = time.time()
        status = Status(True, self.bdseq, now, keepalive_s=10, seq=0)
        await self._send(TOPICS.status(self.agent_id), status.to_payload())
        fields = {name: self.agent_id for name in About.REQUIRED}
        about = About(fields, [], ["g1"], self.bdseq, now, seq=1)
        await self._send(TOPICS.about(self.agent_id), about.to_payload())
        self.seq = 2

    async def telemetry(self, count: int, pause_s: float = 0.0, first: int = 0) -> None:
        """Send telemetry numbers ``first`` ... ``first + count - 1``."""
        base = time.time()
        for number in range(first, first + count):
            update = PropertyUpdate({"n": number}, ts=base + number * 0.001, seq=self.seq)
            self.seq += 1
            await self._send(TOPICS.prop(self.agent_id, IFACE, "Telemetry"), update.to_payload())
            self.acked.add(number)
            if pause_s:
                await asyncio.sleep(pause_s)


def stored(url: str) -> list[tuple[str, int]]:
    """Every stored telemetry sample as (agent, number)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT agent_id, value FROM telemetry")).all()
    finally:
        engine.dispose()
    return [(agent, json.loads(value)["n"]) for agent, value in rows]


async def until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.2)
    return predicate()


async def wait_stored(url: str, agents: list[Agent], timeout_s: float) -> list[tuple[str, int]]:
    want = {(a.agent_id, n) for a in agents for n in a.acked}
    rows: list[tuple[str, int]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = await asyncio.to_thread(stored, url)
        if want <= set(rows):
            break
        await asyncio.sleep(0.5)
    missing = want - set(rows)
    assert not missing, f"{len(missing)} acknowledged messages not stored: {sorted(missing)[:10]}"
    assert len(rows) == len(set(rows)), "a message stored twice"
    assert set(rows) == want, f"stored but never acknowledged: {sorted(set(rows) - want)[:10]}"
    return rows


async def consumer_info(nats_urls: list[str]) -> tuple[int, int]:
    """(unacknowledged, redelivered pending) of the shared ingest consumer."""
    nc = await _nats().connect(servers=nats_urls)
    try:
        info = await nc.jetstream().consumer_info(MSGS_STREAM, "sef-ems-ingest", timeout=10)
        return int(info.num_ack_pending), int(info.num_redelivered)
    except Exception:  # a JetStream timeout on a loaded machine: a figure, not a check
        return -1, -1
    finally:
        await nc.close()

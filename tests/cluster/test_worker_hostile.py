"""Hostile payloads reaching EMS workers through the NATS cluster's JetStream ingest.

Over Mosquitto the adversarial suite (tests/adversarial) covers what a rogue client can
publish. On a cluster the same messages reach the workers another way: the MQTT layer of
NATS stores them in the ``$MQTT_msgs`` stream and the workers pull them from one shared
consumer and acknowledge each after its batch is stored. A poison message there is worse
than over MQTT: if a worker never acknowledged it, JetStream would redeliver it forever
(to the other worker too). Here a rogue sends garbage, 2^64, NaN, wrong types, deep
nesting, 200 kB and forged sessions on agent topics, among a real agent's telemetry:
both workers stay up, every hostile message is acknowledged (none pending, none redelivered
in a loop), each refused one is counted or dead-lettered with a reason, and the real
agent's acknowledged telemetry is stored exactly once. Real NATS cluster, real
PostgreSQL. Skipped without ``nats-server`` >= 2.10 or ``nats-py``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from cluster_rig import IFACE, Agent, consumer_info, need_nats, wait_stored
from sef.bus import BusClient, Topics
from sef.cluster import BrokerCluster, WorkerEMS, url_list_resolver
from sef.ems.store import Store
from sef.ems.store.pgserver import PostgresServer

TOPICS = Topics()

HOSTILE: list[bytes] = [
    b"",
    b"\x00\xff\xfe garbage \x80",
    b"{",
    b"[]",
    b"null",
    b'"a string"',
    b'{"TimeStamp": 18446744073709551616, "seq": 1, "value": {"n": 1}}',  # 2^64
    b'{"ts": NaN, "seq": 2, "value": {"n": NaN}}',
    b'{"ts": 1e999, "seq": 3, "value": {"n": -Infinity}}',
    b'{"ts": "yesterday", "seq": "x", "value": 5}',
    b'{"ts": 1.0, "seq": -1, "value": {"n": 1}}',
    b'{"ts": 1.0, "seq',  # cut short
    ("[" * 10_000 + "]" * 10_000).encode(),
    json.dumps({"ts": 1.0, "seq": 4, "value": {"n": "x" * 200_000}}).encode(),
    b'{"ts": 1.0, "seq": 5, "value": {"\\ud800": 1}}',
]
"""What a rogue client sends as a property update, a status, an About."""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[BrokerCluster]:
    need_nats()
    with BrokerCluster(nodes=3, workdir=tmp_path / "nats") as started:
        yield started


def _dead_letters(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(sa.text("SELECT count(*) FROM dead_letters")).scalar_one()
            )
    finally:
        engine.dispose()


async def test_hostile_payloads_through_jetstream_are_acknowledged_and_refused(
    cluster: BrokerCluster, pg_server: PostgresServer
) -> None:
    url = pg_server.create_database(f"t_{uuid.uuid4().hex[:12]}")
    urls = cluster.urls
    stores = [Store.open(url), Store.open(url)]
    workers = [
        WorkerEMS(urls, cluster.nats_urls, f"ems-w{i}", store=stores[i], batch=16, ack_wait_s=5)
        for i in range(2)
    ]
    agent = Agent(urls, 0)
    rogue = BusClient(url_list_resolver(urls, start=1), "rogue-js")
    try:
        for worker in workers:
            await worker.start(timeout_s=30)
        await agent.birth()
        await rogue.start(timeout_s=30)
        await agent.telemetry(20)
        # the hostile messages, QoS 1 (so JetStream keeps them for the workers), on the
        # real agent's topics and on made-up ones, between two runs of real telemetry
        sent = 0
        for target in (agent.agent_id, "ghost-1"):
            for payload in HOSTILE:
                for topic in (
                    TOPICS.prop(target, IFACE, "Telemetry"),
                    TOPICS.status(target),
                    TOPICS.about(target),
                ):
                    await asyncio.wait_for(rogue.publish_acked(topic, payload), 20)
                    sent += 1
        await agent.telemetry(20, first=20)
        rows = await wait_stored(url, [agent], 60)
        assert len(rows) == 40

        # nothing hostile left unacknowledged or looping between the workers
        pending = redelivered = -1
        for _ in range(30):
            pending, redelivered = await consumer_info(cluster.nats_urls)
            if pending == 0:
                break
            await asyncio.sleep(1.0)
        assert pending == 0, f"{pending} messages never acknowledged"
        fetched = sum(w.source.stats.fetched for w in workers)
        acked = sum(w.source.stats.acked for w in workers)
        assert acked >= 40, (fetched, acked)
        assert redelivered <= sent // 4, f"{redelivered} redeliveries: a poison message loops?"
        # both workers alive, connected, still know the agent online, and said why
        for worker in workers:
            assert worker.bus.connected, worker.host_id
            record = worker.registry.get(agent.agent_id)
            assert record is not None and record.online is True, worker.host_id
        bad = sum(w.registry.bad_messages for w in workers)
        letters = await asyncio.to_thread(_dead_letters, url)
        assert bad + letters > 0, "no hostile message was refused with a reason"
        print(f"{sent} hostile, {fetched} fetched, {acked} acked, {redelivered} redelivered, "
              f"{bad} bad messages, {letters} dead letters")  # fmt: skip
    finally:
        await rogue.stop()
        await agent.bus.stop()
        for worker in workers:
            await worker.stop()
        for store in stores:
            store.close()

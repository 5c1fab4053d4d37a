"""Two EMS workers on one PostgreSQL store and one Mosquitto (issue 16 items 5 and 6):
only the leader's control side runs (:class:`LeaderDuties`), it moves to the other worker
when the leader's lock session ends, ``/health`` and ``/metrics`` say who leads; and
``sef ems --control small`` processes: SIGKILL of the leading one hands the control app
over."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import httpx
import psycopg
import pytest

from sef.broker import Mosquitto
from sef.bus import BusClient, Message, Topics
from sef.ems import EMS
from sef.ems._leader import AlwaysLeader, LeaderLock, leadership_for
from sef.ems._leader_duties import LeaderDuties
from sef.ems.api import ApiAuth, ApiServer, serve_api
from sef.ems.store import Store
from sef.ems.store.pgserver import PostgresServer
from sef.interface import AGENT_INTERFACE
from support import wait_for

AGENT = "bat-1"


@dataclass
class Worker:
    """An EMS worker: its store, its election, its duties, its API."""

    ems: EMS
    store: Store
    duties: LeaderDuties
    server: ApiServer
    http: httpx.AsyncClient
    term_changes: list[tuple[float, bool]] = field(default_factory=list)

    @property
    def lock(self) -> LeaderLock:
        assert isinstance(self.ems.leadership, LeaderLock)
        return self.ems.leadership

    async def stop(self) -> None:
        await self.http.aclose()
        await self.server.stop()
        await self.duties.close()
        await self.ems.leadership.stop()
        await self.ems.stop()
        self.store.close()


async def control_app(ems: EMS) -> None:
    """A control side that acts on its own: a call to the agent every 0.2 s."""
    while True:
        await ems.call(AGENT, AGENT_INTERFACE, "Rebirth", [], reply=False)
        await asyncio.sleep(0.2)


async def start_worker(broker: str, db: str, name: str) -> Worker:
    store = Store.open(db)
    ems = EMS(broker, name, store=store)
    await ems.start()
    ems.leadership = leadership_for(store, name, "two workers")
    changes: list[tuple[float, bool]] = []
    duties = LeaderDuties(
        ems.leadership, on_change=lambda running: changes.append((time.monotonic(), running))
    )
    duties.add("control", lambda: control_app(ems))
    await ems.leadership.start()
    await duties.start()
    server = await serve_api(ems, "127.0.0.1", 0, auth=ApiAuth.open())
    http = httpx.AsyncClient(base_url=server.url, timeout=20.0)
    return Worker(ems, store, duties, server, http, changes)


@pytest.fixture
def db(pg_server: PostgresServer) -> str:
    return pg_server.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def workers(mosquitto: Mosquitto, db: str) -> AsyncIterator[list[Worker]]:
    started = [await start_worker(mosquitto.url, db, f"ems-{k}") for k in (1, 2)]
    yield started
    for worker in started:
        await worker.stop()


async def metric(worker: Worker, name: str) -> float:
    for line in (await worker.http.get("/metrics")).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_only_the_leader_runs_the_control_side(
    mosquitto: Mosquitto, workers: list[Worker], db: str
) -> None:
    calls: list[tuple[float, str]] = []

    def on_call(message: Message) -> None:
        calls.append((time.monotonic(), json.loads(message.payload)["sender"]))

    agent = BusClient(mosquitto.url, AGENT, on_message=on_call)
    await agent.subscribe(Topics().call(AGENT, AGENT_INTERFACE, "Rebirth"), qos=1)
    await agent.start()
    try:
        await wait_for(lambda: any(w.duties.running for w in workers), 30.0)
        leader, standby = workers if workers[0].duties.running else workers[::-1]
        await asyncio.sleep(2.0)
        senders = {sender for _, sender in calls}
        assert senders == {leader.ems.bus.client_id}, senders
        assert not standby.duties.running
        health = [(await w.http.get("/health")).json() for w in (leader, standby)]
        assert [(h["leader"], h["election"]) for h in health] == [
            (True, "postgresql"),
            (False, "postgresql"),
        ]
        assert health[0]["worker"] == leader.ems.host_id
        assert [await metric(w, "sef_ems_leader") for w in (leader, standby)] == [1.0, 0.0]
        # the standby serves operator commands too
        await standby.ems.call(AGENT, AGENT_INTERFACE, "Rebirth", [], reply=False)

        # the leader's lock session ends under it: it fences itself, the standby takes over
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", (leader.lock.backend_pid,))
        await wait_for(lambda: standby.duties.running, 30.0)
        stopped = next(t for t, running in leader.term_changes if not running)
        started = next(t for t, running in standby.term_changes if running)
        assert stopped < started  # never both
        await asyncio.sleep(2.0)
        late = [t for t, sender in calls if sender == leader.ems.bus.client_id and t > stopped]
        assert not late, f"{len(late)} calls of the fenced leader after its fence"
        assert any(sender == standby.ems.bus.client_id and t > started for t, sender in calls)
        assert (await standby.http.get("/health")).json()["leader"] is True
        assert (await leader.http.get("/health")).json()["leader"] is False
        assert await metric(standby, "sef_ems_leader_terms_total") == 1.0
    finally:
        await agent.stop()


async def test_without_postgresql_the_ems_leads(mosquitto: Mosquitto, tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'ems.db'}")
    ems = EMS(mosquitto.url, "ems", store=store)
    await ems.start()
    server = await serve_api(ems, "127.0.0.1", 0, auth=ApiAuth.open())
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            health = (await http.get("/health")).json()
        assert (health["leader"], health["election"]) == (True, "none")
    finally:
        await server.stop()
        await ems.stop()
        store.close()


def sef_ems(broker: str, db: str, name: str, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "sef", "ems", "--insecure"),
            *("--broker", broker, "--db", db, "--id", name, "--worker-id", name),
            *("--api", f"127.0.0.1:{port}", "--leader-key", "cli", "--control", "small"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def leader_of(ports: dict[str, int]) -> list[str]:
    """The workers whose /health says leader (those answering)."""
    leaders = []
    async with httpx.AsyncClient(timeout=5.0) as http:
        for name, port in ports.items():
            try:
                health = (await http.get(f"http://127.0.0.1:{port}/health")).json()
            except httpx.HTTPError:
                continue
            if health["leader"]:
                leaders.append(name)
    return leaders


async def test_sef_ems_workers_hand_over_on_sigkill(mosquitto: Mosquitto, db: str) -> None:
    ports = {"ems-1": free_port(), "ems-2": free_port()}
    procs = {name: sef_ems(mosquitto.url, db, name, port) for name, port in ports.items()}
    try:
        leaders: list[str] = []
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline and not leaders:
            await asyncio.sleep(0.5)
            leaders = await leader_of(ports)
        assert len(leaders) == 1, leaders
        await asyncio.sleep(2.0)
        assert await leader_of(ports) == leaders
        killed = time.monotonic()
        procs[leaders[0]].send_signal(signal.SIGKILL)
        procs[leaders[0]].wait()
        (survivor,) = set(ports) - set(leaders)
        del ports[leaders[0]]
        while (took_over := await leader_of(ports) == [survivor]) is False:
            if time.monotonic() - killed > 60.0:
                break
            await asyncio.sleep(0.2)
        print(f"sef ems SIGKILLed: {survivor} leads after {time.monotonic() - killed:.1f} s")
    finally:
        outputs = {}
        for name, proc in procs.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                outputs[name] = proc.communicate(timeout=30)[0]
            except subprocess.TimeoutExpired:
                proc.kill()
                outputs[name] = proc.communicate()[0]
    assert took_over, f"the survivor did not take over in 60 s:\n{outputs[survivor]}"
    # the control app ran on the leader, then on the survivor once it led, never before
    for name in (leaders[0], survivor):
        lines = outputs[name].splitlines()
        assert "leader: this EMS worker runs the control side" in lines, outputs[name]
        control = [k for k, line in enumerate(lines) if line.startswith("control: mpc on")]
        assert len(control) == 1, outputs[name]
        assert control[0] > lines.index("leader: this EMS worker runs the control side")
    assert "leader election: worker" in outputs[survivor]


async def test_only_the_leader_resends_intents(mosquitto: Mosquitto) -> None:
    """An agent comes back online: a standby leaves re-sending its intents to the leader
    and keeps it due (it re-sends once it leads, at the agent's next message)."""
    ems = EMS(mosquitto.url, "ems-standby")
    asked: list[str] = []
    ems.registry.get = lambda agent_id: SimpleNamespace(online=True)  # type: ignore[method-assign,assignment,return-value]
    ems.reconciler.due = lambda agent_id: asked.append(agent_id) or []  # type: ignore[method-assign,func-returns-value]
    ems._reconcile_after_restart = {AGENT}
    standby = AlwaysLeader("ems-standby")
    standby.is_leader = False
    ems.leadership = standby
    ems._reconcile(AGENT)
    assert asked == [] and ems._reconcile_after_restart == {AGENT}
    standby.is_leader = True
    ems._reconcile(AGENT)
    assert asked == [AGENT] and not ems._reconcile_after_restart

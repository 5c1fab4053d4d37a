"""Issue 11, acceptance: "With a rogue anonymous client sending each attack, the EMS keeps
storing the real agents' telemetry with no gap longer than two telemetry periods, and a
legitimate API command issued during each attack succeeds."

One campaign against one stack: a real Mosquitto, a real EMS with a SQLite store and its
API (uvicorn on a free port), three real virtual batteries (``sef agent virtual-battery``
processes, real clock, one telemetry publish per ``PERIOD_S``) in one group. The batteries
run in processes of their own, as in a deployment: the rogue and the EMS share this
process, and a batch of flood messages the EMS handles in one event-loop pass (0.3-0.7 s on
a loaded CI machine) would otherwise hold back the batteries' own publishes, a gap at the
sender that says nothing of what the EMS stores. A rogue anonymous client (a
:class:`BusClient` publishing raw bytes, and raw HTTP) runs each attack of the issue for a
few seconds; during each one a legitimate command goes through the API and must come back
``ok``. Afterwards every battery's stored telemetry has no gap longer than two periods
(sender timestamps), the EMS is alive, still on its first connection, and ``/health`` is
200.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from sef.agents.virtual_battery import VirtualBatteryAgent
from sef.broker import Mosquitto
from sef.bus import BusClient, BusError, Message, Topics
from sef.ems import EMS
from sef.ems.api import ApiAuth, ApiServer, serve_api
from sef.ems.store import Store
from support import wait_for

pytestmark = [pytest.mark.xdist_group("rogue"), pytest.mark.timeout(150)]

T = Topics()
DEMO = "edu.pdx.powerlab.demo"
TELEMETRY = f"{DEMO}.Telemetry"
HOST = "ems-rogue"
GROUP = "feeder-r"
AGENTS = ("bat-1", "bat-2", "bat-3")
PERIOD_S = 0.5
"""The batteries' telemetry period, real s (``step_s``: one poll, one Telemetry publish
while the battery charges or discharges; an idle battery's Telemetry, whose TimeStamp has
whole seconds, only changes, hence is only published, once a second)."""
OPERATOR_IP = "127.0.0.2"
ROGUE_IP = "127.0.0.3"
ROGUE_IP_2 = "127.0.0.4"
"""Source addresses of the operator's and the rogue's HTTP connections (loopback): the API
limits concurrent requests per client address (64), so the rogue's 150 streams must not
share the operator's address (as on a real network)."""
ATTACK_S = 3.0
"""How long each attack runs, real s."""

EVIL_DEMO_XML = (
    b'<node><interface name="edu.pdx.powerlab.demo">'
    b'<method name="EnergyMethod"><arg name="cmds" type="s" direction="in"/></method>'
    b'<property name="Telemetry" type="s" access="read"/>'
    b"</interface></node>"
)
"""A redefinition of the demo interface: EnergyMethod takes a string, no int16 check."""


@dataclass
class Campaign:
    """The stack under attack, and what the rogue saw."""

    ems: EMS
    store: Store
    server: ApiServer
    http: httpx.AsyncClient
    agents: dict[str, subprocess.Popen[bytes]]
    bdseq: dict[str, int | None]
    """Each battery's session number before the campaign: a forged one taken, or a
    reconnection (a new session has a new bdseq), changes it."""
    rogue: BusClient
    calls: list[tuple[str, dict[str, Any]]]
    """Every call the rogue saw on the bus (topic, payload), to forge replies to."""
    commands: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def _record_call(calls: list[tuple[str, dict[str, Any]]], message: Message) -> None:
    with contextlib.suppress(ValueError):
        obj = json.loads(message.payload)
        if isinstance(obj, dict):
            calls.append((message.topic, obj))


@pytest.fixture
async def campaign(mosquitto: Mosquitto, tmp_path: Path) -> AsyncIterator[Campaign]:
    broker = mosquitto.url
    store = Store.open(f"sqlite:///{tmp_path / 'ems.db'}")
    ems = EMS(broker, HOST, store=store, keepalive_s=2)
    await ems.start()
    server = await serve_api(ems, "127.0.0.1", 0, auth=ApiAuth.open())
    # the operator and the rogue are different hosts (the API limits requests per client)
    http = httpx.AsyncClient(
        base_url=server.url,
        timeout=30.0,
        transport=httpx.AsyncHTTPTransport(local_address=OPERATOR_IP),
    )
    agents = {name: _spawn_battery(name, broker, tmp_path) for name in AGENTS}
    calls: list[tuple[str, dict[str, Any]]] = []
    rogue = BusClient(
        broker,
        f"rogue-{uuid.uuid4().hex[:8]}",
        keepalive_s=5,
        on_message=lambda message: _record_call(calls, message),
    )
    running = Campaign(ems, store, server, http, agents, {}, rogue, calls)
    for pattern in ("sef/agents/+/call/#", "sef/groups/+/call/#"):
        await rogue.subscribe(pattern, qos=0)
    await rogue.start()
    try:
        await wait_for(
            lambda: all(
                (r := ems.registry.get(a)) is not None
                and r.online is True
                and bool(r.groups)
                and TELEMETRY in r.properties
                for a in AGENTS
            ),
            60.0,
        )
        running.bdseq.update({a: ems.registry.agents[a].bdseq for a in AGENTS})
        yield running
    finally:
        await rogue.stop()
        await http.aclose()
        await server.stop()
        await asyncio.gather(*(asyncio.to_thread(_stop, p) for p in agents.values()))
        await ems.stop()
        store.close()


def _spawn_battery(name: str, broker: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    """A ``sef agent virtual-battery`` process, its output to a file (a pipe left unread
    would fill and stop it)."""
    with (tmp_path / f"{name}.log").open("wb") as out:
        return subprocess.Popen(
            [
                sys.executable, "-m", "sef", "agent", "virtual-battery", "--insecure",
                "--id", name, "--broker", broker, "--group", GROUP,
                "--step", str(PERIOD_S), "--keepalive", "2",
            ],
            env={**os.environ, "SEF_CLOCK": "real", "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- the attacks ------------------------------------------------------------------------------


def _status(state: str, bdseq: int, **extra: Any) -> bytes:
    return json.dumps({"v": 1, "state": state, "bdseq": bdseq, "ts": time.time(), **extra}).encode()


async def _repeat(seconds: float, burst: Callable[[int], None], pause_s: float = 0.05) -> int:
    """Call ``burst(round)`` every ``pause_s`` for ``seconds``; return the rounds."""
    end = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < end:
        with contextlib.suppress(BusError):
            burst(rounds)
        rounds += 1
        await asyncio.sleep(pause_s)
    return rounds


async def attack_bdseq(c: Campaign) -> None:
    """(a) a status with bdseq 2**63, a forged retained offline with bdseq 2**62."""

    def burst(i: int) -> None:
        c.rogue.publish(T.status("bat-1"), _status("online", 2**63), retain=i % 2 == 0)
        c.rogue.publish(T.status("bat-2"), _status("offline", 2**62, reason="will"), retain=True)
        c.rogue.publish(T.status("bat-3"), _status("online", 2**64 + 5))

    await _repeat(ATTACK_S, burst, 0.1)


async def attack_bad_telemetry(c: Campaign) -> None:
    """(b) telemetry dated 2096, garbage and non-JSON on property topics."""
    year_2096 = 3_976_300_800.0
    garbage = [
        b"\xff\xfe\x00garbage",
        b"{not json",
        b"[]",
        b"null",
        b'{"v":1,"value":NaN,"ts":1e400}',
        b'{"v":1,"seq":18446744073709551616,"ts":1,"value":1}',
        b"{" * 5000,
        b'{"v":1,"value":' + b"[" * 3000 + b"]" * 3000 + b"}",
    ]

    def burst(i: int) -> None:
        for agent in AGENTS:
            dated = {
                "v": 1,
                "seq": i,
                "ts": year_2096 + i,
                "value": {"TimeStamp": ["u", int(year_2096) + i], "Sys_SOC": ["d", 99.0]},
            }
            c.rogue.publish(T.prop(agent, DEMO, "Telemetry"), json.dumps(dated).encode())
            c.rogue.publish(T.prop(agent, DEMO, "Telemetry"), garbage[i % len(garbage)])
            c.rogue.publish(T.prop(agent, DEMO, "AssetName"), garbage[(i + 3) % len(garbage)])
            c.rogue.publish(T.signal(agent, DEMO, "Alarm"), garbage[(i + 5) % len(garbage)])

    await _repeat(ATTACK_S, burst)


async def attack_forged_replies(c: Campaign) -> None:
    """(c) replies forged to the EMS's reply topic in real agents' names: to every call
    the rogue sees, in the name of the real agents it was not sent to (ok and refusals,
    twice each), and to made-up call ids in every agent's name."""
    reply_topic = T.reply(c.ems.caller.sender)
    seen = 0

    def forged(call_id: str, agent: str, ok: bool) -> bytes:
        reply: dict[str, Any] = {"v": 1, "id": call_id, "agent": agent, "ok": ok}
        reply["ts"] = time.time()
        if ok:
            reply["result"] = []
        else:
            reply["error"] = {"name": "org.freedesktop.DBus.Error.Failed", "message": "forged"}
        return json.dumps(reply).encode()

    def burst(i: int) -> None:
        nonlocal seen
        for topic, call in c.calls[seen:]:
            call_id = call.get("id")
            if not isinstance(call_id, str):
                continue
            target = topic.split("/")[2] if topic.startswith("sef/agents/") else None
            for agent in AGENTS:
                if agent != target and target is not None:
                    for ok in (True, False, True, False):
                        c.rogue.publish(reply_topic, forged(call_id, agent, ok))
        seen = len(c.calls)
        for agent in AGENTS:
            c.rogue.publish(reply_topic, forged(uuid.uuid4().hex, agent, i % 2 == 0))
        c.rogue.publish(reply_topic, b"\x00\x01 not a reply")

    await _repeat(ATTACK_S, burst, 0.02)


async def attack_interface_hijack(c: Campaign) -> None:
    """(d) a retained interface XML redefining the demo interface under a made-up id."""

    def burst(i: int) -> None:
        evil = f"evil-{i % 5}"
        c.rogue.publish(T.interface_xml(evil, DEMO), EVIL_DEMO_XML, retain=True)
        about = {
            "v": 1,
            "seq": 0,
            "interfaces": [{"name": DEMO, "sha256": "0" * 64}],
            "groups": [GROUP],
        }
        c.rogue.publish(T.about(evil), json.dumps(about).encode(), retain=True)

    await _repeat(ATTACK_S, burst, 0.2)


async def attack_reply_to(c: Campaign) -> None:
    """(e) group calls (an idle, harmless if executed) with invalid ``reply_to``."""
    topic = T.group_call(GROUP, DEMO, "EnergyMethod")
    bad = ["sef/clients/+/reply", "sef/#", "", "sef/clients/x\x00y/reply", "#", "a/+/b\x00"]

    def burst(i: int) -> None:
        now = time.time()
        call = {
            "v": 1,
            "id": f"rogue-{i}",
            "ts": now,
            "exp": now + 30,
            "args": [[["idle", 0, 0]]],
            "reply_to": bad[i % len(bad)],
            "sender": "rogue",
        }
        c.rogue.publish(topic, json.dumps(call).encode())

    await _repeat(ATTACK_S, burst, 0.05)


async def attack_id_flood(c: Campaign) -> None:
    """(f) a flood of 20 000 made-up agent ids (births, then a property each)."""
    sent = 0
    bdseq = int(time.time() * 1000)

    def burst(i: int) -> None:
        nonlocal sent
        for _ in range(min(1000, 20_000 - sent)):
            agent = f"ghost-{sent:05d}"
            c.rogue.publish(T.status(agent), _status("online", bdseq), qos=0)
            sent += 1

    await _repeat(ATTACK_S, burst, 0.05)
    while sent < 20_000:
        burst(-1)
        await asyncio.sleep(0.01)


async def attack_host_status(c: Campaign) -> None:
    """(g) a forged retained host status ``offline`` for the EMS's own host id."""
    real = c.ems.session.bdseq

    def burst(i: int) -> None:
        bdseq = [real + 1, 2**62, real, 2**63 + 1][i % 4]
        c.rogue.publish(T.host_status(HOST), _status("offline", bdseq, reason="will"), retain=True)

    await _repeat(ATTACK_S, burst, 0.25)


async def attack_http(c: Campaign) -> None:
    """(h) a 5 MB body, 150 concurrent ``/events`` streams, ``every=5e-324``, duplicate
    JSON keys: refused with 4xx/503, nothing else harmed."""
    host, port = c.server.host, c.server.port
    streams: list[asyncio.StreamWriter] = []
    answers: list[bytes] = []

    async def open_stream() -> None:
        reader, writer = await asyncio.open_connection(host, port, local_addr=(ROGUE_IP, 0))
        streams.append(writer)
        writer.write(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        with contextlib.suppress(TimeoutError, asyncio.IncompleteReadError, OSError):
            answers.append(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10))

    async def big_body() -> int:
        """POST a 5 MB body on a raw connection; the status the server answers (0: it
        closed the connection without answering)."""
        reader, writer = await asyncio.open_connection(host, port, local_addr=(ROGUE_IP_2, 0))
        body = b'{"cmds": [["idle", 0, 0]], "pad": "' + b"x" * 5_000_000 + b'"}'
        head = (
            b"POST /agents/bat-1/commands HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        answer = asyncio.ensure_future(reader.readuntil(b"\r\n\r\n"))  # reads as it sends
        try:
            writer.write(head)
            with contextlib.suppress(OSError):  # the server may stop reading at its limit
                for i in range(0, len(body), 65536):
                    if answer.done():
                        break
                    writer.write(body[i : i + 65536])
                    await writer.drain()
            try:
                first = await asyncio.wait_for(answer, 10)
            except (asyncio.IncompleteReadError, OSError):
                return 0
            return int(first.split(b" ", 2)[1])
        finally:
            writer.close()

    async def rest() -> list[int]:
        # from another address: the streams use up the first one's request allowance
        transport = httpx.AsyncHTTPTransport(local_address=ROGUE_IP_2)
        async with httpx.AsyncClient(
            base_url=c.server.url, timeout=30.0, transport=transport
        ) as rogue:
            codes = [await big_body()]
            codes.append(
                (await rogue.get("/agents/bat-1/telemetry", params={"every": "5e-324"})).status_code
            )
            codes.append(
                (
                    await rogue.post(
                        "/agents/bat-1/commands",
                        content=b'{"cmds": [["idle", 0, 0]], "cmds": [["discharge", 8, 0]]}',
                        headers={"content-type": "application/json"},
                    )
                ).status_code
            )
            return codes

    try:
        await asyncio.gather(*(open_stream() for _ in range(150)))
        codes = await rest()
        await asyncio.sleep(max(0.0, ATTACK_S - 1.0))
    finally:
        for writer in streams:
            writer.close()
    heads = [a.split(b"\r\n", 1)[0] for a in answers]
    assert heads.count(b"HTTP/1.1 200 OK") <= 100, heads
    assert all(h.startswith((b"HTTP/1.1 200", b"HTTP/1.1 503")) for h in heads), heads
    assert codes[0] == 413 and codes[1] in (400, 422) and codes[2] == 400, codes


ATTACKS: list[tuple[str, Callable[[Campaign], Awaitable[None]]]] = [
    ("a bdseq", attack_bdseq),
    ("b bad telemetry", attack_bad_telemetry),
    ("c forged replies", attack_forged_replies),
    ("d interface hijack", attack_interface_hijack),
    ("e reply_to", attack_reply_to),
    ("f id flood", attack_id_flood),
    ("g host status", attack_host_status),
    ("h http", attack_http),
]


# -- the campaign -----------------------------------------------------------------------------


async def legitimate_command(c: Campaign, i: int) -> tuple[str, dict[str, Any]]:
    """A small charge or discharge, alternately to one battery and to the group."""
    cmd = ["charge", "discharge"][i % 2]
    body = {"cmds": [[cmd, 1 + i % 3, 0]], "timeout_s": 10}
    path = f"/agents/{AGENTS[i % 3]}/commands" if i % 2 == 0 else f"/groups/{GROUP}/commands"
    response = await c.http.post(path, json=body)
    assert response.status_code == 200, (path, response.status_code, response.text[:300])
    result: dict[str, Any] = response.json()
    return path, result


def gaps(ts: list[float], start: float, end: float) -> list[tuple[float, float]]:
    """Gaps longer than two periods among ``ts`` (sorted), including from ``start`` to
    the first and from the last to ``end``."""
    points = [start, *[t for t in ts if start < t < end], end]
    return [(a, b) for a, b in itertools.pairwise(points) if b - a > 2 * PERIOD_S]


async def test_rogue_campaign(campaign: Campaign) -> None:
    c = campaign
    ems = c.ems
    # every battery runs an open-ended charge: its telemetry changes at every step (an
    # idle battery's Telemetry, with its whole-second TimeStamp, is published when it changes)
    first = await c.http.post(f"/groups/{GROUP}/commands", json={"cmds": [["charge", 1, 0]]})
    assert first.status_code == 200 and first.json()["status"] == "ok", first.text
    await asyncio.sleep(3 * PERIOD_S)
    start = time.time()
    failures: list[str] = []
    for i, (name, attack) in enumerate(ATTACKS):
        task: asyncio.Future[None] = asyncio.ensure_future(attack(c))
        await asyncio.sleep(min(1.0, ATTACK_S / 3))  # the attack is under way
        path, result = await legitimate_command(c, i)
        c.commands.append((name, result))
        if result["status"] != "ok":
            failures.append(f"{name}: {path} -> {json.dumps(result)[:400]}")
        try:
            await task
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
    end = time.time()
    # what the store has, once the last period was committed
    await asyncio.sleep(2 * PERIOD_S)
    stored = {
        agent: sorted(
            row["ts"] for row in await asyncio.to_thread(c.store.telemetry, agent, key=TELEMETRY)
        )
        for agent in AGENTS
    }
    for agent, ts in stored.items():
        inside = [t for t in ts if start <= t <= end]
        if len(inside) < 0.8 * (end - start) / PERIOD_S:
            failures.append(f"{agent}: {len(inside)} rows in {end - start:.1f} s")
        found = gaps(ts, start, end)
        if found:
            failures.append(
                f"{agent}: telemetry gaps > {2 * PERIOD_S} s: "
                + ", ".join(f"{a - start:.2f}..{b - start:.2f} s" for a, b in found)
            )
        if any(not math.isfinite(t) or t > end + 60 for t in ts):
            failures.append(f"{agent}: telemetry stored from the future: {max(ts)}")

    # the EMS is alive, on its first connection, healthy
    assert ems.bus.connected and ems.bus.connections == 1, ems.bus.connections
    assert ems.recorder is not None and ems.recorder._task is not None
    assert not ems.recorder._task.done()
    assert len(ems._tasks) >= 1
    health = await c.http.get("/health")
    assert health.status_code == 200, health.text
    rows = {row.agent_id: row for row in await asyncio.to_thread(c.store.load_agents)}
    for agent, process in c.agents.items():
        assert process.poll() is None, f"{agent} exited with {process.returncode}"
        record = ems.registry.get(agent)
        assert record is not None and record.online is True, agent
        # the same session as before the campaign: no forged bdseq taken, no reconnection
        assert record.bdseq == c.bdseq[agent], "a forged bdseq was taken, or the agent reconnected"
        assert rows[agent].bdseq == c.bdseq[agent], "a forged bdseq was stored"
    # the flood was refused beyond the admission limits, the hijack per agent
    assert sum(ems.registry.refused.values()) > 0
    assert len(ems.registry.agents) < 3 + 20_000 + 5
    assert not failures, "\n".join(failures)


async def test_forged_newer_host_offline_is_repaired_for_agents(broker_url: str) -> None:
    """A forged offline of an unannounced (newer) session of the EMS: agents that see the
    EMS online ignore it (a real will follows its own session's birth)."""
    ems = EMS(broker_url, HOST, keepalive_s=2)
    await ems.start()
    agent = VirtualBatteryAgent("bat-h", broker_url, step_s=PERIOD_S, keepalive_s=2)
    await agent.start()
    rogue = BusClient(broker_url, f"rogue-{uuid.uuid4().hex[:8]}")
    await rogue.start()
    try:
        await wait_for(lambda: agent.host_online.get(HOST) is True, 10.0)
        forged = _status("offline", ems.session.bdseq + 1, reason="will")
        rogue.publish(T.host_status(HOST), forged, retain=True)
        await wait_for(lambda: ems.host_status_repairs > 0, 5.0)
        await asyncio.sleep(1.0)  # the repair reached the agent
        assert agent.host_online.get(HOST) is True, (agent.host_online, agent.host_bdseq)
    finally:
        await rogue.stop()
        await agent.stop()
        await ems.stop()

"""``sef swarm`` against a real Mosquitto and a real EMS: every agent listed with About and
groups, a group call reaching all (the swarm's receipt counts), Rebirth, wills when the
swarm is killed, and the conformance suite (``sef certify``) against one swarm agent."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

import sef.interface
from sef.broker import Mosquitto
from sef.bus import BusClient, Message, Status, decode_object
from sef.certify import CertifyOptions, Level, Outcome, run_certification
from sef.ems import EMS
from sef.swarm import SwarmConfig, SwarmRunner
from support import wait_for

AGENTS = 50
DEMO = "edu.pdx.powerlab.demo"
DEMO_XML = Path(sef.interface.__file__).parent / "data" / f"{DEMO}.xml"
REPO = Path(__file__).resolve().parents[2]


def ids(n: int, prefix: str = "swarm") -> list[str]:
    return [f"{prefix}-{i:06d}" for i in range(n)]


def workers_of(prefix: str) -> list[int]:
    """Pids of the swarm worker processes running agents ``prefix-...``."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if b"sef.swarm" in cmdline and f'"prefix": "{prefix}"'.encode() in cmdline:
            found.append(int(pid))
    return found


def listed(ems: EMS, agent_id: str) -> bool:
    """The EMS holds the agent online with its About and groups."""
    rec = ems.registry.get(agent_id)
    return (
        rec is not None
        and rec.online is True
        and rec.about.get("DeviceId") == agent_id
        and list(rec.groups) == ["g1"]
    )


async def test_ems_lists_the_swarm_and_a_group_call_reaches_every_agent(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    stats_file = tmp_path / "stats.json"
    config = SwarmConfig(AGENTS, mosquitto.url, processes=2, telemetry_s=2.0, stats_path=stats_file)
    async with SwarmRunner(config) as swarm:
        assert await swarm.wait_connected(timeout_s=30), swarm.stats.totals()
        ems = EMS(mosquitto.url, "ems-swarm")
        await ems.start()
        try:
            await wait_for(lambda: all(listed(ems, a) for a in ids(AGENTS)), 30.0, 0.05)
            # telemetry with increasing seq, no gaps
            await wait_for(lambda: swarm.stats.totals()["telemetry"] >= 2 * AGENTS, 15.0, 0.1)
            assert all(ems.registry.agents[a].gaps == 0 for a in ids(AGENTS))
            assert ems.registry.agents["swarm-000007"].prop(DEMO, "Telemetry") is not None

            replies = await ems.call(
                "group:g1", DEMO, "EnergyMethod", [[["charge", 4, 600]]], timeout_s=10.0,
                call_id="group-call-1",
            )  # fmt: skip
            assert sorted(r.agent for r in replies) == ids(AGENTS)
            assert all(r.ok and r.applied is True for r in replies)
            await wait_for(lambda: "group-call-1" in swarm.snapshot()["calls"], 5.0, 0.1)
            await wait_for(
                lambda: swarm.snapshot()["calls"]["group-call-1"]["agents"] == AGENTS, 5.0, 0.1
            )
            receipts = swarm.snapshot()["calls"]["group-call-1"]
            assert receipts["method"] == f"{DEMO}.EnergyMethod"
            assert receipts["duplicates"] == 0
            assert receipts["p50_ms"] is not None and receipts["p99_ms"] >= receipts["p50_ms"]
            # the stats file says the same (rewritten every second)
            await asyncio.sleep(1.2)
            written = json.loads(stats_file.read_text())
            assert written["calls"]["group-call-1"]["agents"] == AGENTS
            assert written["connected"] == AGENTS and written["births"] >= AGENTS

        finally:
            await ems.stop()


async def test_rebirth_republishes_the_birth_with_the_same_session(mosquitto: Mosquitto) -> None:
    async with SwarmRunner(SwarmConfig(3, mosquitto.url, processes=1)) as swarm:
        assert await swarm.wait_connected(timeout_s=20)
        statuses: list[Status] = []

        def on_message(message: Message) -> None:
            if not message.retain:
                statuses.append(Status.from_object(decode_object(message.payload)))

        watch = BusClient(mosquitto.url, "watch-rebirth", on_message=on_message)
        await watch.subscribe("sef/agents/swarm-000001/status", qos=1)
        await watch.start()
        ems = EMS(mosquitto.url, "ems-rebirth")
        await ems.start()
        try:
            await wait_for(lambda: all(listed(ems, a) for a in ids(3)), 20.0, 0.05)
            bdseq = ems.registry.agents["swarm-000001"].bdseq
            replies = await ems.call("swarm-000001", "sef.Agent", "Rebirth", [], timeout_s=5.0)
            assert [r.ok for r in replies] == [True]
            await wait_for(lambda: len(statuses) >= 1, 5.0)
            assert statuses[0].online and statuses[0].seq == 0 and statuses[0].bdseq == bdseq
            await wait_for(lambda: swarm.stats.totals()["rebirths"] == 1, 5.0, 0.1)
            assert swarm.stats.totals()["births"] == 4
            ping = await ems.call("swarm-000002", "sef.Agent", "Ping", [], timeout_s=5.0)
            assert ping[0].ok and abs(ping[0].result[0] - time.time()) < 5.0
        finally:
            await ems.stop()
            await watch.stop()


async def test_killing_the_swarm_makes_the_broker_publish_every_will(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    n = 20
    ems = EMS(mosquitto.url, "ems-wills")
    await ems.start()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sef", "swarm", "--insecure", "-q", "-n", str(n), "-p", "2",
         "-b", mosquitto.url, "--prefix", "kill"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    try:
        await wait_for(lambda: all(listed(ems, a) for a in ids(n, "kill")), 30.0, 0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        took = await wait_for(
            lambda: all(ems.registry.agents[a].online is False for a in ids(n, "kill")), 15.0
        )
        assert {ems.registry.agents[a].offline_reason for a in ids(n, "kill")} == {"will"}, took
        await wait_for(lambda: not workers_of("kill"), 5.0, 0.1)  # the workers died too
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await ems.stop()


async def test_a_swarm_agent_passes_the_conformance_suite(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """``sef certify`` against a one-agent swarm, restarts (SIGKILL, start) included.

    With per-agent interface topics (``v1``): the certifier reads the XML there."""
    pidfile, log = tmp_path / "swarm.pid", tmp_path / "swarm.log"
    command = shlex.join([sys.executable, "-m", "sef", "swarm", "--insecure", "-q", "-n", "1",
                          "-b", mosquitto.url, "--prefix", "cert", "--interface-topics", "v1",
                          "--telemetry-s", "5"])  # fmt: skip
    start = tmp_path / "start.sh"
    start.write_text(f"cd {shlex.quote(str(REPO))}\nnohup {command} >> {log} 2>&1 &\n"
                     f"echo $! > {pidfile}\n")  # fmt: skip
    restart = tmp_path / "restart.sh"
    restart.write_text(f'kill -9 "$(cat {pidfile})"\nsh {start}\n')
    watcher = EMS(mosquitto.url, "ems-cert-watch")
    await watcher.start()
    os.system(f"sh {start}")
    try:
        await wait_for(lambda: listed(watcher, "cert-000000"), 30.0, 0.05)
        await watcher.stop()
        with (tmp_path / "certify.log").open("w") as out:
            report = await run_certification(
                CertifyOptions(
                    broker=mosquitto.url,
                    agent_id="cert-000000",
                    level=Level.RECOMMENDED,
                    restart_cmd=f"sh {restart}",
                    interfaces={DEMO: DEMO_XML.read_bytes()},
                ),
                console=Console(file=out, width=200),
            )
        bad = [f"{r.check.id}: {r.outcome}: {r.evidence}" for r in report.results
               if r.outcome is not Outcome.PASS]  # fmt: skip
        assert not bad, bad
        passed = {r.check.id for r in report.results}
        assert {"birth.order", "birth.retained", "sessions.will", "sessions.restart"} <= passed
    finally:
        os.system(f'kill -9 "$(cat {pidfile})" 2>/dev/null')


async def test_agents_come_back_with_a_new_session_after_a_broker_restart(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    n = 10
    async with SwarmRunner(SwarmConfig(n, mosquitto.url, processes=1)) as swarm:
        assert await swarm.wait_connected(timeout_s=20)
        mosquitto.stop()
        await wait_for(lambda: swarm.stats.totals()["lost"] == n, 15.0, 0.1)
        (tmp_path / "again").mkdir()
        again = Mosquitto(port=mosquitto.port, workdir=tmp_path / "again").start()
        try:
            await wait_for(lambda: swarm.stats.totals()["connected"] == n, 30.0, 0.1)
            assert swarm.stats.totals()["births"] == 2 * n
            blobs: list[Message] = []
            ems = EMS(again.url, "ems-again")
            watch = BusClient(again.url, "watch-blobs", on_message=blobs.append)
            await watch.subscribe("sef/interfaces/+", qos=1)
            await watch.start()
            await ems.start()
            try:
                # the new broker has the interface XML again (the process republished it)
                await wait_for(lambda: len(blobs) == 2, 10.0)
                assert all(m.retain for m in blobs)
                await wait_for(lambda: all(listed(ems, a) for a in ids(n)), 20.0, 0.05)
            finally:
                await ems.stop()
                await watch.stop()
        finally:
            again.stop()

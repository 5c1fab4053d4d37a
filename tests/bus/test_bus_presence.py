"""Acceptance of the foundation against a real Mosquitto: discovery, presence, last known state.

Agents run as their own processes (``sef agent virtual-battery``) so SIGKILL is real.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

from sef.ems import EMS, Event
from support import AgentProcess, is_online, record, wait_for

KEEPALIVE_S = 2
DEMO = "edu.pdx.powerlab.demo"


async def start_agent(agent_id: str, url: str) -> AgentProcess:
    """Start an agent process without blocking the event loop (the EMS keeps running)."""
    proc = AgentProcess(agent_id, url, "--keepalive", str(KEEPALIVE_S), "--step", "0.2")
    return await asyncio.to_thread(proc.start)


@pytest.mark.parametrize("version", ["3.1.1", "5"])
async def test_discovery_kill_and_rebirth(
    broker_url: str, agent_processes: list[AgentProcess], version: str
) -> None:
    url = f"{broker_url}?version={version}"
    seen: dict[tuple[str, str], list[float]] = {}

    def on_event(event: Event) -> None:
        seen.setdefault((event.agent_id, event.kind), []).append(time.monotonic())

    async with EMS(url, "ems-test", keepalive_s=KEEPALIVE_S, on_event=on_event) as ems:
        a, b = await asyncio.gather(start_agent("bat-a", url), start_agent("bat-b", url))
        agent_processes += [a, b]
        await wait_for(lambda: is_online(ems, "bat-a") and is_online(ems, "bat-b"), 5.0)
        # the EMS lists both within 1 s of their start
        for proc in (a, b):
            delay = seen[(proc.agent_id, "online")][0] - proc.started
            assert delay < 1.0, f"{proc.agent_id} listed {delay:.3f} s after its start"
        # the About follows the birth status: wait for it before looking at the interfaces
        await wait_for(lambda: bool(record(ems, "bat-a").interfaces), 3.0)
        rec_a = record(ems, "bat-a")
        assert set(rec_a.interfaces) == {DEMO, "sef.Agent"}
        assert rec_a.about["DeviceId"] == "bat-a"
        await wait_for(lambda: record(ems, "bat-b").prop(DEMO, "Telemetry") is not None, 3.0)
        first_bdseq = record(ems, "bat-b").bdseq
        first_about_ts = record(ems, "bat-b").about
        assert record(ems, "bat-b").prop(DEMO, "Telemetry")["Sys_Rated_Energy"] == ["d", 60.0]

        # SIGKILL of one agent: offline within 1.5 x keepalive, last telemetry kept
        b.kill()
        killed = time.monotonic()
        await wait_for(lambda: record(ems, "bat-b").online is False, 1.5 * KEEPALIVE_S + 1)
        assert seen[("bat-b", "offline")][0] - killed <= 1.5 * KEEPALIVE_S
        dead = record(ems, "bat-b")
        assert dead.offline_reason == "will"
        kept = dead.prop(DEMO, "Telemetry")
        assert kept is not None and kept["Sys_SOC"][0] == "d"
        assert is_online(ems, "bat-a"), "the other agent is unaffected"

        # restarted: online again with a fresh About and a newer session number
        agent_processes.append(await start_agent("bat-b", url))
        await wait_for(lambda: is_online(ems, "bat-b"), 3.0)
        # the About follows the birth status (§4.2): it may be a moment behind it
        await wait_for(lambda: len(seen[("bat-b", "about")]) >= 2, 3.0)
        reborn = record(ems, "bat-b")
        assert reborn.bdseq is not None and first_bdseq is not None
        assert reborn.bdseq > first_bdseq
        assert reborn.about is not first_about_ts
        assert reborn.gaps == 0 and record(ems, "bat-a").gaps == 0


async def test_agents_cli_lists_offline_agent_with_last_telemetry(
    broker_url: str, agent_processes: list[AgentProcess]
) -> None:
    proc = await start_agent("cli-a", broker_url)
    agent_processes.append(proc)
    async with EMS(broker_url, "watcher") as ems:
        await wait_for(
            lambda: (
                is_online(ems, "cli-a") and record(ems, "cli-a").prop(DEMO, "Telemetry") is not None
            ),
            5.0,
        )
        proc.kill()
        await wait_for(lambda: record(ems, "cli-a").online is False, 1.5 * KEEPALIVE_S + 1)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sef",
            "agents",
            "--insecure",
            "--broker",
            broker_url,
            "--json",
            "--wait",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    listed = {entry["id"]: entry for entry in json.loads(out.stdout)}
    assert listed["cli-a"]["status"] == "offline"
    assert DEMO in listed["cli-a"]["interfaces"]
    telemetry = listed["cli-a"]["properties"][f"{DEMO}.Telemetry"]["value"]
    assert telemetry["Sys_Rated_Energy"] == ["d", 60.0]

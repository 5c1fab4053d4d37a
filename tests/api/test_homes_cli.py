"""``sef homes`` and the HOME column and ``--home`` filter of ``sef agents`` (from the API
and from the broker), as subprocesses against real Mosquitto, an EMS and its API."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

from api_stack import Stack
from sef.bus import BusClient, GatewayAgents, Topics

T = Topics()


async def sef(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``sef ARGS`` in a subprocess (in a thread: the loop keeps serving the API)."""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "sef", *args],
        capture_output=True,
        text=True,
        timeout=30.0,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})},
    )
    return done.returncode, done.stdout, done.stderr


async def test_sef_homes_and_agents_by_home(stack_no_store: Stack) -> None:
    stack = stack_no_store
    gw = BusClient(stack.broker, f"gateways-{time.monotonic_ns() % 10**9}")
    await gw.start()
    try:
        stats = {"v": 1, "home": "h1", "ts": int(time.time()), "queued": 7, "queue_limit": 500}
        for home, agents, up in (("h1", ["bat-1", "bat-2"], b"1"), ("h2", ["wh-9"], b"0")):
            gw.publish(
                T.gateway_agents(home), GatewayAgents(home, agents).to_payload(), retain=True
            )
            gw.publish(T.gateway_status(home), up, retain=True)
        gw.publish(T.gateway_stats("h1"), json.dumps({**stats, "dropped": 3}).encode(), retain=True)

        def ready() -> bool:
            h1 = stack.ems.homes.get("h1")
            return h1 is not None and h1.stats is not None and "wh-9" in stack.ems.homes.home_of

        deadline = time.monotonic() + 5
        while not ready():
            assert time.monotonic() < deadline, "the EMS never took the homes"
            await asyncio.sleep(0.02)
    finally:
        await gw.stop()

    api = stack.url
    env = {"SEF_API_TOKEN": stack.tokens["viewer"]}
    (
        (hcode, hout, herr),
        (jcode, jout, jerr),
        (acode, aout, aerr),
        (fcode, fout, ferr),
        (bcode, bout, berr),
    ) = await asyncio.gather(
        sef("homes", "--api", api, env=env),
        sef("homes", "--api", api, "--json", env=env),
        sef("agents", "--api", api, env=env),
        sef("agents", "--api", api, "--home", "h2", "--json", env=env),
        sef("agents", "--broker", stack.broker, "--insecure", "--home", "h1", "--json"),
    )
    assert hcode == 0, herr
    lines = {line.split("│")[1].strip(): line for line in hout.splitlines() if "│ h" in line}
    assert set(lines) == {"h1", "h2"}, hout
    assert " up " in lines["h1"] and "2/2" in lines["h1"] and "7/500" in lines["h1"]
    assert " 3 " in lines["h1"] and " ago)" in lines["h1"]
    assert " down " in lines["h2"] and "0/1" in lines["h2"]
    assert jcode == 0, jerr
    assert [(h["home"], h["uplink"]) for h in json.loads(jout)] == [("h1", "up"), ("h2", "down")]
    assert acode == 0, aerr
    assert "home" in aout
    rows = {line.split("│")[1].strip(): line for line in aout.splitlines() if "│" in line}
    assert " h1 " in rows["bat-1"] and " h2 " in rows["wh-9"], aout
    assert fcode == 0, ferr
    assert [(a["id"], a["home"]) for a in json.loads(fout)] == [("wh-9", "h2")]
    assert bcode == 0, berr
    assert [(a["id"], a["home"]) for a in json.loads(bout)] == [("bat-1", "h1"), ("bat-2", "h1")]

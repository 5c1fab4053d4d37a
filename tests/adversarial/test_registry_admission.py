"""Defect 6: made-up agent ids grew the registry (and the store's agent table) without
bound, and ``GET /agents`` answered every agent at once (100 000 agents: 32 MB, 2.7 s,
polled by the dashboard every 5 s).

Now new agent ids are admitted under a policy (allow-list, or operator approval; a rate
limit on new ids; a cap), refused ones are counted (``sef_agents_refused_total``) and
logged in aggregate, and ``GET /agents`` answers one bounded page at a time. Real
Mosquitto, a real EMS and API, real agents, a rogue client.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from registry_stack import TOPICS, battery, online_with_telemetry, start_stack

from sef.bus import BusClient
from support import wait_for

SEF = (sys.executable, "-m", "sef")


def status(bdseq: int | None = None) -> bytes:
    """A well-formed retained birth (a flood of made-up but valid agents)."""
    from sef.bus import Status

    return Status(True, bdseq or int(time.time() * 1000), time.time(), 10, 0).to_payload()


async def flood(stack_rogue: object, n: int, prefix: str = "ghost") -> None:
    """``n`` made-up agent ids announce themselves (in chunks, so the client keeps up)."""
    payload = status()
    for i in range(n):
        stack_rogue.publish(TOPICS.status(f"{prefix}-{i:06d}"), payload, qos=0)  # type: ignore[attr-defined]
        if i % 500 == 499:
            await asyncio.sleep(0.01)


async def test_made_up_ids_are_rate_limited_capped_counted_and_listed_by_pages(
    broker_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The default policy (100 new ids/s after a burst of 2000, at most 10 000 agents)
    against 12 000 made-up ids; the real agent, known before, keeps working."""
    caplog.set_level(logging.INFO, logger="sef")
    stack = await start_stack(broker_url)  # the default admission policy
    agent = await battery(broker_url, "bat-1", stack.ems)
    try:
        ems = stack.ems
        started = time.monotonic()
        n = 12_000
        before = ems.registry.messages
        await flood(stack.rogue, n)
        await wait_for(lambda: ems.registry.messages >= before + n, 60.0)
        elapsed = time.monotonic() - started
        admitted = len(ems.registry.agents) - 1
        # the default policy: a burst of 2000 new ids, then 100 a second
        assert admitted <= 2000 + 100 * elapsed + 1, (admitted, elapsed)
        assert ems.registry.refused["rate"] == n - admitted
        assert ems.registry.refused_ids == n - admitted
        metrics = (await stack.http.get("/metrics")).text
        assert f'sef_agents_refused_total{{reason="rate"}} {float(n - admitted)}' in metrics
        assert f"sef_agents_refused_ids_total {float(n - admitted)}" in metrics
        refusal_lines = [r for r in caplog.records if "not admitted" in r.getMessage()]
        assert 0 < len(refusal_lines) <= 20, len(refusal_lines)  # aggregated, not one per id

        # one bounded page at a time, in id order; the cursor walks all of them
        first = await stack.http.get("/agents")
        assert first.status_code == 200
        assert len(first.json()) == 100
        assert int(first.headers["x-total-count"]) == admitted + 1
        assert len(first.content) < 200_000
        seen: list[str] = []
        cursor: str | None = None
        while True:
            params: dict[str, str | int] = {"limit": 1000}
            if cursor is not None:
                params["cursor"] = cursor
            page = await stack.http.get("/agents", params=params)
            seen += [a["id"] for a in page.json()]
            cursor = page.headers.get("x-next-cursor")
            if cursor is None:
                break
            assert 'rel="next"' in page.headers["link"]
        assert seen == sorted(ems.registry.agents)
        assert (await stack.http.get("/agents", params={"limit": 1001})).status_code == 422
        online = await stack.http.get("/agents", params={"status": "online", "limit": 5})
        assert len(online.json()) == 5
        assert int(online.headers["x-total-count"]) == admitted + 1
        ok = await stack.http.post(
            "/agents/bat-1/commands", json={"cmds": [["charge", 4, 60]], "timeout_s": 5}
        )
        assert ok.status_code == 200 and ok.json()["status"] == "ok", ok.text
    finally:
        await agent.stop()
        await stack.stop()


async def test_cap_and_allow_list(broker_url: str) -> None:
    from sef.ems import Admission  # (in the test: the module is collected without it too)

    stack = await start_stack(
        broker_url, admission=Admission(allow=("bat-*", "wh-??"), max_agents=3)
    )
    agents = []
    try:
        ems = stack.ems
        agents.append(await battery(broker_url, "bat-1", ems))
        await flood(stack.rogue, 300, "ghost")  # not on the allow-list
        await flood(stack.rogue, 300, "bat-x")  # allowed, but the cap is 3
        await wait_for(lambda: sum(ems.registry.refused.values()) >= 598, 20.0)
        assert sorted(ems.registry.agents) == ["bat-1", "bat-x-000000", "bat-x-000001"]
        assert ems.registry.refused == {"not_allowed": 300, "cap": 298}
        admission = (await stack.http.get("/admission")).json()
        assert admission["allow"] == ["bat-*", "wh-??"]
        assert admission["max_agents"] == 3
        assert admission["refused"] == {"not_allowed": 300, "cap": 298}
        assert admission["refused_ids"] == 598
    finally:
        for agent in agents:
            await agent.stop()
        await stack.stop()


async def test_approval_mode(broker_url: str) -> None:
    """New agents wait as pending; an operator approves one (API), then one (CLI); each
    re-announces at once and can be commanded."""
    from sef.ems import Admission

    stack = await start_stack(broker_url, admission=Admission(approval=True))
    agents = []
    try:
        ems = stack.ems
        for name in ("bat-7", "bat-8"):
            agents.append(await battery(broker_url, name))
        await wait_for(lambda: set(ems.registry.pending) == {"bat-7", "bat-8"}, 5.0)
        assert (await stack.http.get("/agents")).json() == []
        pending = (await stack.http.get("/admission")).json()["pending"]
        assert sorted(p["id"] for p in pending) == ["bat-7", "bat-8"]
        assert all(p["messages"] >= 1 for p in pending)
        refused = await stack.http.post(
            "/agents/bat-7/commands", json={"cmds": [["idle", 0, 0]], "timeout_s": 2}
        )
        assert refused.status_code == 404

        approved = await stack.http.post("/agents/bat-7/approve")
        assert approved.status_code == 200, approved.text
        assert approved.json()["was_pending"] is True
        await wait_for(lambda: online_with_telemetry(ems, "bat-7"), 10.0)
        result = await asyncio.to_thread(
            subprocess.run,
            [*SEF, "registry", "approve", "bat-8", "--api", stack.server.url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        await wait_for(lambda: online_with_telemetry(ems, "bat-8"), 10.0)
        assert ems.registry.pending == {}
        ok = await stack.http.post(
            "/groups/feeder-1/commands", json={"cmds": [["charge", 2, 60]], "timeout_s": 5}
        )
        assert ok.status_code == 200 and ok.json()["status"] == "ok", ok.text
        bad = await stack.http.post("/agents/no%2Fslash/approve")
        assert bad.status_code in (404, 422)
    finally:
        for agent in agents:
            await agent.stop()
        await stack.stop()


async def test_an_agent_refused_by_the_rate_limit_is_admitted_later_and_reannounces(
    broker_url: str,
) -> None:
    """With one new id per 2 s, the second of two agents starting together is refused at
    its birth; its next message (telemetry) admits it, and the EMS asks it for its birth
    again, so it ends up online with its groups like the first."""
    from sef.ems import Admission

    stack = await start_stack(broker_url, admission=Admission(new_per_s=0.5, burst=1))
    agents = []
    try:
        ems = stack.ems
        agents = [await battery(broker_url, name) for name in ("bat-1", "bat-2")]
        await wait_for(lambda: ems.registry.refused.get("rate", 0) >= 1, 5.0)
        await wait_for(lambda: all(online_with_telemetry(ems, a) for a in ("bat-1", "bat-2")), 15.0)
    finally:
        for agent in agents:
            await agent.stop()
        await stack.stop()


async def test_sef_ems_admission_options(broker_url: str, tmp_path: Path) -> None:
    """``sef ems --allow ... --max-agents ... --pin-interface ...`` as a process."""
    pinned = tmp_path / "org.example.Pinned.xml"
    pinned.write_text(
        '<node><interface name="org.example.Pinned"><method name="Go"/></interface></node>'
    )
    process = subprocess.Popen(
        [
            *SEF,
            *(
                "ems",
                "--insecure",
                "--broker",
                broker_url,
                "--id",
                "ems-cli",
                "--api",
                "127.0.0.1:0",
            ),
            *("--allow", "bat-*", "--max-agents", "2", "--new-agents-per-s", "5"),
            *("--pin-interface", str(pinned), "--bdseq-ahead-s", "60"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.to_thread(process.stdout.readline)
        for _ in range(20):  # --insecure's warnings come first (stderr is merged)
            if line.startswith("API on ") or not line:
                break
            line = await asyncio.to_thread(process.stdout.readline)
        assert line.startswith("API on "), line
        url = line.split()[-1]
        async with httpx.AsyncClient(base_url=url, timeout=10.0) as http:
            admission = (await http.get("/admission")).json()
            assert admission["allow"] == ["bat-*"]
            assert (admission["max_agents"], admission["new_per_s"]) == (2, 5.0)
            rogue = BusClient(broker_url, "rogue-cli")
            await rogue.start()
            try:
                await flood(rogue, 5, "bat")
                await flood(rogue, 5, "ghost")
                forged = status(int(time.time() * 1000) + 120_000)  # 2 min ahead: refused
                rogue.publish(TOPICS.status("bat-000000"), forged, qos=1)
                other = b'<node><interface name="org.example.Pinned"><method name="Stop"/>'
                rogue.publish(
                    TOPICS.interface_xml("bat-000000", "org.example.Pinned"),
                    other + b"</interface></node>",
                    qos=1,
                )

                async def settled() -> dict[str, Any]:
                    for _ in range(100):
                        body: dict[str, Any] = (await http.get("/admission")).json()
                        if sum(body["refused"].values()) >= 8:
                            return body
                        await asyncio.sleep(0.1)
                    raise AssertionError(body)

                body = await settled()
                assert body["agents"] == 2
                assert body["refused"] == {"cap": 3, "not_allowed": 5}
                agents = (await http.get("/agents")).json()
                assert [a["id"] for a in agents] == ["bat-000000", "bat-000001"]
                assert agents[0]["status"] == "online"  # the forged status was refused
                metrics = (await http.get("/metrics")).text
                assert "sef_bad_messages_total 2.0" in metrics
            finally:
                await rogue.stop()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

"""The operator CLI against a running API: ``sef send``, ``sef telemetry --csv``,
``sef history --json``, ``sef agents --api``; plus its pure helpers."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from api_stack import T0, Stack
from sef.cli.operator import flatten, parse_event
from sef.ems.api import parse_listen, parse_time
from support import wait_for


async def sef(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``sef ARGS`` in a subprocess without blocking the loop serving the API.

    A thread waits for the process, not asyncio's child watcher: another test in the same
    worker (Playwright's driver) can leave the watcher unable to report an exit.
    """
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "sef", *args],
        capture_output=True,
        text=True,
        timeout=30.0,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})},
    )
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the CLI only sees the API
async def test_cli_send_telemetry_history_agents(stack: Stack) -> None:
    api = stack.url

    async def op(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        """``sef ARGS`` with the operator's token in $SEF_API_TOKEN."""
        return await sef(*args, env={"SEF_API_TOKEN": stack.tokens["operator"], **(env or {})})

    agent, clock = stack.agents["bat-1"], stack.clocks["bat-1"]
    for i in range(6):
        clock.t = T0 + 60 * i
        agent.publish(T0 + 60 * i, 10.0 * i)

    (
        (code, out, err),
        (bad_code, _, bad_err),
        (local_code, _, local_err),
        (ghost_code, _, ghost_err),
    ) = await asyncio.gather(
        op("send", "bat-1", "charge:4:1800", "discharge:8:1800", "--json", "--api", api),
        op("send", "bat-2", "charge:40000:1800", "--api", api),
        op("send", "bat-2", "charge:4.5:60", "--api", api),
        op("send", "ghost", "idle:0", "--api", api),
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "ok" and [r["agent"] for r in result["replies"]] == ["bat-1"]
    assert agent.executed == [[("charge", 4, 1800), ("discharge", 8, 1800)]]
    assert bad_code == 2 and "cmds[0][1]: 40000 out of range for int16" in bad_err
    assert local_code == 2 and "rate (kW) must be an integer" in local_err
    assert stack.agents["bat-2"].executed == []
    assert ghost_code == 2 and "404 unknown agent 'ghost'" in ghost_err

    code, out, err = await op("send", "group:feeder-1", "idle:0", env={"SEF_API": api})
    assert code == 0, err
    assert "bat-1" in out and "bat-2" in out and "ok" in out
    assert stack.agents["bat-2"].executed == [[("idle", 0, 0)]]

    await wait_for(
        lambda: stack.store is not None and stack.store.count_telemetry("bat-1") >= 6 + 2, 5.0
    )
    (
        (code, out, err),
        (hcode, hout, herr),
        (acode, aout, aerr),
        (tcode, tout, terr),
    ) = await asyncio.gather(
        op("telemetry", "bat-1", "--since", str(T0), "--key", "Telemetry", "--csv", "--api", api),
        op("history", "--json", "--api", api),
        op("agents", "--api", api, "--json"),
        op("telemetry", "bat-1", "--since", str(T0), "--every", "180", "--api", api),
    )
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [float(r["Sys_SOC"]) for r in rows] == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
    assert rows[0]["ts"] == str(float(T0)) and rows[0]["time"].endswith("Z")
    assert {r["key"] for r in rows} == {"edu.pdx.powerlab.demo.Telemetry"}
    assert hcode == 0, herr
    log = json.loads(hout)
    assert [e["target"] for e in log] == ["group:feeder-1", "bat-1"]
    assert all(e["status"] == "ok" for e in log)
    assert {e["sent_by"] for e in log} == {"olivia"}  # the operator token's name
    assert acode == 0, aerr
    assert sorted(a["id"] for a in json.loads(aout)) == ["bat-1", "bat-2", "wh-9"]
    assert tcode == 0, terr
    assert "2 points, every 180.0 s" in tout  # T0+120 and T0+300: last of each 180 s bucket

    (code, out, err), (acode, aout, aerr), (ucode, _, uerr) = await asyncio.gather(
        op("history", "--target", "bat-1", "--api", api),
        op("agents", "--api", api),
        op("history", "--api", "http://127.0.0.1:9"),
    )
    assert code == 0, err
    assert "charge:4:1800 discharge:8:1800" in out and "bat-1 ok" in out
    assert "sent by" in out and "olivia" in out
    assert acode == 0 and "online" in aout and "feeder-1" in aout, aerr
    assert ucode == 2 and "cannot reach the EMS API" in uerr


def test_parse_event() -> None:
    assert parse_event("charge:4:1800") == ["charge", 4, 1800]
    assert parse_event("idle:0") == ["idle", 0, 0]
    assert parse_event("discharge:-8:60") == ["discharge", -8, 60]  # the API refuses it
    for token, text in (
        ("charge", "expected CMD:RATE_KW[:DURATION_S]"),
        ("charge:4:1:2", "expected"),
        (":4:1", "expected"),
        ("charge:x:1", "rate (kW) must be an integer"),
        ("charge:4:1h", "duration (s) must be an integer"),
    ):
        with pytest.raises(
            ValueError, match=text.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
        ):
            parse_event(token)


def test_parse_time_and_listen() -> None:
    now = 1_767_225_600.0
    assert parse_time("1767225000", now) == 1767225000.0
    assert parse_time("1h", now) == now - 3600 and parse_time("-30m", now) == now - 1800
    assert parse_time("2026-01-01T00:00:00Z", now) == 1_767_225_600.0
    assert parse_time("2026-01-01T01:00:00+01:00", now) == 1_767_225_600.0
    assert parse_time("2026-01-01T00:00:00", now) == 1_767_225_600.0  # no zone: UTC
    assert parse_time("now", now) == now
    for bad in ("", "soon", "nan", "1x"):
        with pytest.raises(ValueError):
            parse_time(bad, now)
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:0") == ("::1", 0)
    for bad in ("8080", "host:", "host:99999", ":80"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def test_flatten() -> None:
    assert flatten({"TimeStamp": ["u", 5], "Sys_SOC": ["d", 1.5]}) == {
        "TimeStamp": 5,
        "Sys_SOC": 1.5,
    }
    assert flatten("bat-1") == {"value": "bat-1"}
    assert flatten([1, 2]) == {"value": "[1, 2]"}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_cli_without_a_token_is_refused(stack: Stack) -> None:
    """Without $SEF_API_TOKEN the CLI gets the API's 401, said plainly; a viewer's token
    reads but may not send."""
    (code, _, err), (vcode, _, verr), (hcode, hout, herr) = await asyncio.gather(
        sef("history", "--api", stack.url),
        sef("send", "bat-1", "idle:0", "--api", stack.url, env=_token(stack, "viewer")),
        sef("history", "--json", "--api", stack.url, env=_token(stack, "viewer")),
    )
    assert code == 2 and "401 authentication required" in err
    assert vcode == 2 and "403 victor (viewer) may not POST" in verr
    assert hcode == 0 and json.loads(hout) == [], herr
    assert stack.agents["bat-1"].executed == []


def _token(stack: Stack, role: str) -> dict[str, str]:
    return {"SEF_API_TOKEN": stack.tokens[role]}


async def test_sef_ems_serves_the_api(broker_url: str, tmp_path: Path) -> None:
    """``sef ems --db --api HOST:0`` prints where the API listens and serves it."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sef",
            "ems",
            "--insecure",
            "--broker",
            broker_url,
            "--id",
            "ems-cli",
            "--db",
            f"sqlite:///{tmp_path / 'cli.db'}",
            "--api",
            "127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a test worker may ignore SIGINT, and a child that inherits that never sees Ctrl-C
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 20.0)
        assert line.startswith("API on http://127.0.0.1:"), line
        url = line.split()[-1]
        async with httpx.AsyncClient(base_url=url) as http:
            health = (await http.get("/health")).json()
            assert health["broker_connected"] is True and health["store"] == "sqlite"
            assert (await http.get("/commands")).json() == []
            assert (await http.get("/agents")).json() == []
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = await asyncio.to_thread(process.wait, 30.0)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert code == 0  # a clean stop by signal (docs/operations.md)


async def test_sef_ems_refuses_a_bad_listen_address(broker_url: str) -> None:
    code, _, err = await sef("ems", "--insecure", "--broker", broker_url, "--api", "nowhere")
    assert code == 2 and "expected HOST:PORT" in err

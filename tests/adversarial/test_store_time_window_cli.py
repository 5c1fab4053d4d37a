"""``sef ems --max-future-s`` / ``--max-past-s`` reach the store's time window (defect 2).

A real ``sef ems`` process with a SQLite store and its API, a real Mosquitto.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from store_stack import birth, publisher, telemetry

from sef.broker import free_port


async def test_sef_ems_time_window_options(broker_url: str, tmp_path: Path) -> None:
    port = free_port()
    db = f"sqlite:///{tmp_path / 'ems.db'}"
    ems = subprocess.Popen(
        [sys.executable, "-m", "sef", "ems", "--insecure", "--broker", broker_url, "--db", db,
         "--api", f"127.0.0.1:{port}", "--max-future-s", "30", "--max-past-s", "3600"],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = await publisher(broker_url, "window-source")
    letters: list[dict[str, object]] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:

            async def dead_letters() -> None:
                try:
                    answer = await http.get("/deadletters", params={"agent": "win-1"})
                except httpx.TransportError:
                    return
                if answer.status_code == 200:
                    letters[:] = answer.json()

            deadline = time.monotonic() + 20
            while True:  # until the EMS is up: then publish once
                try:
                    if (await http.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "sef ems did not come up"
                await asyncio.sleep(0.1)
            now = time.time()
            birth(client, "win-1")
            telemetry(client, "win-1", 1, now + 120)  # beyond 30 s ahead: refused
            telemetry(client, "win-1", 2, now - 7200)  # beyond one hour old: refused
            telemetry(client, "win-1", 3, now)
            deadline = time.monotonic() + 10
            while len(letters) < 2 and time.monotonic() < deadline:
                await dead_letters()
                await asyncio.sleep(0.2)
        assert sorted(str(d["category"]) for d in letters) == ["future", "past"], letters
    finally:
        await client.stop()
        ems.send_signal(signal.SIGTERM)
        ems.wait(15)

"""Defect 13 (EMS side) and its acceptance: the EMS re-sends what a battery should be
running when the two meet again, and the command log shows it.

1. ``sef ems`` (SQLite store, API) commands an open-ended discharge; it is SIGKILLed; the
   BIS's host-loss policy idles the battery within grace + one poll of the EMS's will;
   a restarted ``sef ems`` (same store) restores the sequence from its command log and
   re-sends it: the battery discharges again, and the log holds a ``reconcile-`` call.
2. A frozen BIS (SIGSTOP past its keepalive) is declared offline, its battery reverts by
   itself; after SIGCONT the BIS comes back in a new session and the EMS re-sends the
   sequence (``reconcile-`` in the command log).

Real Mosquitto, real ``sef ems`` / ``sef bis`` processes, the battery emulator's Modbus TCP
server in this process.
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
import pytest

from sef.agents.bis import BISAgent
from sef.broker import free_port
from sef.clock import RealClock
from sef.ems import EMS
from sef.ems.store import Store
from sef.emulators.battery import BatteryEmulator
from sef.interface import DEMO_INTERFACE
from support import is_online, record, wait_for

POLL_S = 0.1
GRACE_S = 1.0
DISCHARGE = [["discharge", 4, 0]]


def sef_process(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "sef", *args],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def reconciled(db: str, agent_id: str) -> list[dict[str, object]]:
    store = Store.open(db)
    try:
        return [
            row
            for row in store.commands(target=agent_id, limit=1000)
            if str(row["call_id"]).startswith("reconcile-")
        ]
    finally:
        store.close()


async def start_emulator() -> tuple[BatteryEmulator, asyncio.Task[None]]:
    emulator = BatteryEmulator(port=0, clock=RealClock(), soc=0.5, tick_s=0.05)
    await emulator.start()
    return emulator, asyncio.create_task(emulator.run())


@pytest.mark.xdist_group("safe-state")
async def test_ems_killed_then_restarted_resends_the_running_sequence(
    broker_url: str, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'ems.db'}"
    port = free_port()
    ems_args = ("ems", "--insecure", "--broker", broker_url, "--id", "ems", "--keepalive", "1",
                "--db", db,
                "--api", f"127.0.0.1:{port}")  # fmt: skip
    ems = sef_process(*ems_args)
    emulator, stepper = await start_emulator()
    assert emulator.address is not None
    bis = BISAgent("bat-r", broker_url, modbus_host="127.0.0.1",
                   modbus_port=emulator.address[1], poll_s=POLL_S, host_loss_grace_s=GRACE_S,
                   keepalive_s=2)  # fmt: skip
    await bis.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:

            async def discharge_ok() -> bool:
                try:
                    answer = await http.post("/agents/bat-r/commands", json={"cmds": DISCHARGE})
                except httpx.TransportError:
                    return False
                return answer.status_code == 200 and answer.json()["status"] == "ok"

            deadline = time.monotonic() + 20
            while not await discharge_ok():
                assert time.monotonic() < deadline, "the EMS never took the command"
                await asyncio.sleep(0.2)
        await wait_for(lambda: emulator.setpoint_w() == pytest.approx(-4000), 3.0)
        ems.send_signal(signal.SIGKILL)
        ems.wait(5)
        await wait_for(lambda: bis.host_online.get("ems") is False, 5.0)
        will = time.monotonic()
        await wait_for(lambda: emulator.setpoint_w() == 0.0, GRACE_S + 3.0)
        assert time.monotonic() - will <= GRACE_S + POLL_S + 1.0  # + slack for a loaded CI
        ems = sef_process(*ems_args)  # the EMS comes back with its store
        await wait_for(lambda: emulator.setpoint_w() == pytest.approx(-4000), 20.0)
        await wait_for(lambda: bool(reconciled(db, "bat-r")), 5.0, step_s=0.2)
        (row,) = reconciled(db, "bat-r")
        assert row["args"] == [DISCHARGE] and row["method"] == "EnergyMethod"
        # the reply's status reaches the store with the EMS's next batch (a loaded CI run
        # took over 5 s); what matters is that it comes and is ok
        await wait_for(lambda: reconciled(db, "bat-r")[0]["status"] == "ok", 20.0, step_s=0.2)
    finally:
        await bis.stop()
        if ems.poll() is None:
            ems.send_signal(signal.SIGTERM)
            ems.wait(15)
        stepper.cancel()
        await emulator.stop()


@pytest.mark.xdist_group("safe-state")
async def test_frozen_bis_is_reconciled_when_it_comes_back(broker_url: str, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ems.db'}"
    emulator, stepper = await start_emulator()
    assert emulator.address is not None
    store = Store.open(db)
    async with EMS(broker_url, "ems-r", store=store, keepalive_s=2) as ems:
        bis = sef_process(
            "bis", "--insecure", "--modbus", f"tcp://127.0.0.1:{emulator.address[1]}",
            "--id", "bat-z",
            "--broker", broker_url, "--poll", str(POLL_S), "--keepalive", "1",
            "--open-revert", "1",
        )  # fmt: skip
        try:
            await wait_for(lambda: is_online(ems, "bat-z"), 15.0)
            replies = await ems.call("bat-z", DEMO_INTERFACE, "EnergyMethod", [DISCHARGE])
            assert [r.ok for r in replies] == [True]
            await wait_for(lambda: emulator.setpoint_w() == pytest.approx(-4000), 3.0)
            bis.send_signal(signal.SIGSTOP)
            await wait_for(lambda: emulator.setpoint_w() == 0.0, 3.0)  # reverted by itself
            await wait_for(lambda: record(ems, "bat-z").online is False, 10.0)
            bis.send_signal(signal.SIGCONT)
            await wait_for(lambda: is_online(ems, "bat-z"), 15.0)
            await wait_for(lambda: ems.reconciler.sent >= 1, 5.0)
            await wait_for(lambda: emulator.setpoint_w() == pytest.approx(-4000), 5.0)
            await ems.settle()
            await wait_for(lambda: bool(reconciled(db, "bat-z")), 5.0, step_s=0.2)
        finally:
            bis.send_signal(signal.SIGCONT)
            bis.send_signal(signal.SIGTERM)
            bis.wait(15)
            stepper.cancel()
            await emulator.stop()
    store.close()

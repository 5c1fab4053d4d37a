"""Defect 13: a battery kept discharging with nobody in charge.

* The EMS dies (SIGKILL) while a battery runs an open-ended discharge: the broker publishes
  the EMS's will, and the BIS's host-loss policy ends the event after its grace: the
  battery is idle within the grace plus one poll of the will.
* The BIS freezes (SIGSTOP): the battery ends the open-ended event by itself, because the
  BIS wrote it with a revert time that only a healthy BIS re-arms.

Real Mosquitto, a real ``sef ems`` / ``sef bis`` process, the battery emulator's Modbus TCP
server in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import pytest

from sef.agents.bis import BISAgent
from sef.clock import RealClock
from sef.ems import EMS
from sef.emulators.battery import BatteryEmulator
from sef.interface import DEMO_INTERFACE
from support import wait_for

POLL_S = 0.1
GRACE_S = 1.0


def sef_process(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "sef", *args],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@contextlib.asynccontextmanager
async def battery() -> AsyncIterator[BatteryEmulator]:
    emulator = BatteryEmulator(port=0, clock=RealClock(), soc=0.5, tick_s=0.05)
    await emulator.start()
    stepper = asyncio.create_task(emulator.run())
    try:
        yield emulator
    finally:
        stepper.cancel()
        await emulator.stop()


@pytest.mark.xdist_group("safe-state")
async def test_ems_killed_battery_idle_within_grace_plus_one_poll(broker_url: str) -> None:
    ems = sef_process(
        "ems", "--insecure", "--broker", broker_url, "--id", "ems", "--keepalive", "1"
    )
    async with battery() as emulator:
        assert emulator.address is not None
        bis = BISAgent(
            "bat-k",
            broker_url,
            modbus_host="127.0.0.1",
            modbus_port=emulator.address[1],
            poll_s=POLL_S,
            host_loss_grace_s=GRACE_S,
            keepalive_s=2,
        )
        await bis.start()
        try:
            await wait_for(lambda: bis.host_online.get("ems") is True, 15.0)
            await bis.energy_method([("discharge", 4, 0)])
            await wait_for(lambda: emulator.setpoint_w() == pytest.approx(-4000), 2.0)
            ems.send_signal(signal.SIGKILL)
            ems.wait(5)
            await wait_for(lambda: bis.host_online.get("ems") is False, 5.0)  # its will
            will_seen = time.monotonic()
            await wait_for(lambda: emulator.setpoint_w() == 0.0, GRACE_S + 3.0)
            took = time.monotonic() - will_seen
            print(f"battery idle {took:.2f} s after the EMS's will (grace {GRACE_S} s)")
            # grace + one poll, plus scheduling slack on a loaded 2-core CI machine
            assert took <= GRACE_S + POLL_S + 1.0
            assert bis.sequencer.current.cmd.value == "idle"
            await wait_for(lambda: bis.host_loss.applied == 1, 1.0)  # counted after the write
        finally:
            await bis.stop()
            if ems.poll() is None:
                ems.kill()


@pytest.mark.xdist_group("safe-state")
async def test_bis_frozen_battery_reverts_by_itself(broker_url: str) -> None:
    open_revert_s = 2.0
    async with battery() as emulator, EMS(broker_url, "ems-f", keepalive_s=2) as ems:
        assert emulator.address is not None
        bis = sef_process(
            "bis", "--insecure", "--modbus", f"tcp://127.0.0.1:{emulator.address[1]}",
            "--id", "bat-f",
            "--broker", broker_url, "--poll", str(POLL_S), "--keepalive", "2",
            "--open-revert", str(open_revert_s),
        )  # fmt: skip
        try:
            await wait_for(
                lambda: (r := ems.registry.get("bat-f")) is not None and r.online is True, 15.0
            )
            await ems.call("bat-f", DEMO_INTERFACE, "EnergyMethod", [[["discharge", 4, 0]]])
            await wait_for(lambda: emulator.setpoint_w() == pytest.approx(-4000), 3.0)
            await asyncio.sleep(open_revert_s)  # the BIS re-arms the revert meanwhile
            assert emulator.setpoint_w() == pytest.approx(-4000)
            bis.send_signal(signal.SIGSTOP)
            stopped = time.monotonic()
            await wait_for(lambda: emulator.setpoint_w() == 0.0, open_revert_s + 2.0)
            took = time.monotonic() - stopped
            print(f"battery reverted by itself {took:.2f} s after the BIS froze")
            assert took <= open_revert_s + 0.5
            bis.send_signal(signal.SIGCONT)
            # the BIS wakes, reads the reverted controls back and re-asserts its event
            await wait_for(lambda: emulator.setpoint_w() == pytest.approx(-4000), 10.0)
        finally:
            bis.send_signal(signal.SIGCONT)
            bis.kill()
            bis.wait(5)

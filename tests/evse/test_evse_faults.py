"""Peers killed and restarted: the charge point (a ``sef emulate evse`` process, SIGKILL)
and the agent (stopped, a new one on the same port). Faults are reported in telemetry and
both sides recover without a restart of the survivor."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from evse_rig import CP_ID, PASSWORD, agent_rig, make_tls
from sef.broker import free_port
from sef.clock import ScaledClock
from sef.emulators.evse import EVSEEmulator
from support import wait_for


def _start_emulator(port: int, tls_ca: Path, clock: ScaledClock) -> subprocess.Popen[str]:
    env = {**os.environ, "SEF_CLOCK": clock.spec(), "SEF_OCPP_PASSWORD": PASSWORD}
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "sef", "emulate", "evse",
            "--ocpp", f"wss://127.0.0.1:{port}/{CP_ID}", "--ocpp-version", "2.0.1",
            "--ca", str(tls_ca), "--need", "30", "--meter-interval", "10",
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None and "booted" in proc.stdout.readline()
    return proc


async def test_charge_point_killed_and_restarted(broker_url: str, tmp_path: Path) -> None:
    clock = ScaledClock(speed=60)
    tls = make_tls(tmp_path)
    port = free_port()
    async with agent_rig(broker_url, clock, tls=tls, port=port) as rig:
        loop = asyncio.get_running_loop()
        proc = await loop.run_in_executor(None, _start_emulator, port, tls.ca.ca_path, clock)
        try:
            await wait_for(lambda: rig.last().get("EV_Plugged") is True, 10.0)
            assert (await rig.send(("charge", 5, 0))).ok
            await wait_for(lambda: rig.last().get("EV_Rate_kW") == 5.0, 10.0)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            # the agent sees the link die (TCP reset, or the ping timeout) and says so
            await wait_for(lambda: rig.last().get("Comm_Fault") is True, 25.0)
            assert "ConnectionError" in rig.last()["Fault"]
            proc = await loop.run_in_executor(None, _start_emulator, port, tls.ca.ca_path, clock)
            await wait_for(lambda: rig.last().get("Comm_Fault") is False, 10.0)
            # the running event is applied again to the new charge point's transaction
            await wait_for(lambda: rig.last().get("EV_Rate_kW") == 5.0, 10.0)
            assert rig.agent.status.healthy and rig.charger.limit_kw == 5.0
        finally:
            proc.kill()
            proc.wait()


async def test_agent_restarted_charge_point_reconnects(broker_url: str, tmp_path: Path) -> None:
    clock = ScaledClock(speed=60)
    tls = make_tls(tmp_path)
    port = free_port()
    emulator = EVSEEmulator(
        f"wss://127.0.0.1:{port}/{CP_ID}",
        version="ocpp1.6",
        clock=clock,
        password=PASSWORD,
        ssl_context=tls.client,
        meter_interval_s=10.0,
    )
    task = asyncio.create_task(emulator.run())
    try:
        async with agent_rig(broker_url, clock, tls=tls, port=port) as rig:
            await wait_for(lambda: rig.last().get("EV_Plugged") is True, 10.0)
            assert (await rig.send(("charge", 4, 0))).ok
            await wait_for(lambda: emulator.limit_kw() == 4.0, 5.0)
        # agent gone: the charger keeps its profile (a charger does not need its CSMS)
        await wait_for(lambda: not emulator.booted.is_set(), 10.0)
        assert emulator.limit_kw() == 4.0
        async with agent_rig(broker_url, clock, tls=tls, port=port) as rig:
            await wait_for(lambda: emulator.boots >= 2, 15.0)
            # the new agent learns the running transaction from the meter values
            await wait_for(lambda: rig.last().get("EV_Plugged") is True, 10.0)
            await wait_for(lambda: rig.charger.state.transaction_id is not None, 10.0)
            await wait_for(lambda: rig.last().get("Comm_Fault") is False, 10.0)
            await wait_for(lambda: "EV_Departure" in rig.last(), 10.0)
            # and commands it again; its own idle (no sequence) released the charger first
            assert (await rig.send(("charge", 6, 0))).ok
            await wait_for(lambda: emulator.limit_kw() == 6.0, 5.0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

"""BIS end to end: EMS → Mosquitto → BIS → Modbus TCP → battery emulator, on a scaled clock."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from sef.agents.bis import BISAgent
from sef.broker import free_port
from sef.clock import Clock, ScaledClock
from sef.ems import EMS, Event
from sef.emulators.battery import BatteryEmulator
from sef.interface import DEMO_INTERFACE
from sef.models.battery import BatteryParams
from support import wait_for

PARAMS = BatteryParams()
ETA_C, ETA_D = PARAMS.charge_efficiency, PARAMS.discharge_efficiency


@dataclass
class Rig:
    clock: Clock
    emulator: BatteryEmulator
    bis: BISAgent
    ems: EMS
    telemetry: list[dict[str, Any]]

    def last(self) -> dict[str, Any]:
        return self.telemetry[-1] if self.telemetry else {}


@contextlib.asynccontextmanager
async def rig(
    broker_url: str, *, speed: float, soc: float, poll_s: float = 0.1
) -> AsyncIterator[Rig]:
    clock = ScaledClock(speed=speed)
    emulator = BatteryEmulator(port=0, clock=clock, soc=soc, tick_s=speed * 0.02)
    _, modbus_port = await emulator.start()
    stepper = asyncio.create_task(emulator.run())
    bis = BISAgent(
        "bis-1",
        broker_url,
        modbus_host="127.0.0.1",
        modbus_port=modbus_port,
        poll_s=poll_s,
        clock=clock,
        keepalive_s=2,
    )
    telemetry: list[dict[str, Any]] = []

    def keep(event: Event) -> None:
        if event.kind == "property" and event.detail == f"{DEMO_INTERFACE}.Telemetry":
            record = ems.registry.get(event.agent_id)
            assert record is not None
            value = record.prop(DEMO_INTERFACE, "Telemetry")
            telemetry.append({k: v[1] for k, v in value.items()})

    ems = EMS(broker_url, "ems-bis", clock=clock, on_event=keep)
    await ems.start()
    await bis.start()
    try:
        await wait_for(lambda: "Sys_SOC" in (telemetry[-1] if telemetry else {}), 5.0)
        yield Rig(clock, emulator, bis, ems, telemetry)
    finally:
        await bis.stop()
        await ems.stop()
        stepper.cancel()
        await emulator.stop()


def record_control_writes(
    emulator: BatteryEmulator, clock: Clock, writes: list[tuple[float, float, float]]
) -> None:
    """Record (clock s, stored kWh, setpoint W) at every control write the emulator applies.

    The emulator steps its model to the instant of a write before applying it, so these
    are exact event boundaries, however late the test's own event loop runs.
    """
    apply = emulator._apply

    def spy(new: dict[tuple[int, str], Any]) -> None:
        apply(new)
        writes.append((clock.now(), float(emulator.model.energy_kwh[0]), emulator.setpoint_w()))

    emulator._apply = spy  # type: ignore[method-assign]


def first(samples: list[tuple[float, float, float]], start: int, predicate: Any) -> int:
    for index in range(start, len(samples)):
        if predicate(samples[index][2]):
            return index
    raise AssertionError("transition not found")


async def test_charge_then_discharge_moves_energy_by_rate_times_efficiency(broker_url: str) -> None:
    async with rig(broker_url, speed=240, soc=0.5) as r:
        samples: list[tuple[float, float, float]] = []
        record_control_writes(r.emulator, r.clock, samples)
        replies = await r.ems.call(
            "bis-1", DEMO_INTERFACE, "EnergyMethod", [[["charge", 4, 1800], ["discharge", 8, 1800]]]
        )
        assert replies and replies[0].ok
        await wait_for(
            lambda: (
                len(samples) >= 2
                and abs(samples[-1][2]) < 1e-9
                and any(w < 0 for _, _, w in samples)
            ),
            30.0,
            step_s=0.05,
        )
        start = first(samples, 0, lambda w: w > 0)
        switch = first(samples, start, lambda w: w < 0)
        end = first(samples, switch, lambda w: abs(w) < 1e-9)
        (t0, e0, w0), (t1, e1, w1), (t2, e2, _) = samples[start], samples[switch], samples[end]
        assert w0 == pytest.approx(4000) and w1 == pytest.approx(-8000)
        assert t1 - t0 == pytest.approx(1800, abs=30) and t2 - t1 == pytest.approx(1800, abs=30)
        rise, fall = e1 - e0, e1 - e2
        print(
            f"charge {t1 - t0:.1f} s: +{rise:.4f} kWh; discharge {t2 - t1:.1f} s: -{fall:.4f} kWh"
        )
        standby = PARAMS.standby_kw * 0.5  # the 30 W standby draw runs all along (kWh)
        assert rise == pytest.approx(4 * 0.5 * ETA_C - standby, rel=0.01), rise
        assert fall == pytest.approx(8 * 0.5 / ETA_D + standby, rel=0.01), fall
        # the telemetry showed it
        await wait_for(lambda: r.last().get("Event") == "idle", 2.0)
        events = [t["Event"] for t in r.telemetry]
        assert "charge" in events and "discharge" in events
        # battery-side power: 4 kW x eta_c - standby while charging, -(8 kW / eta_d + standby)
        charging = [t["Sys_Power_kW"] for t in r.telemetry if t["Event"] == "charge"]
        assert 4 * ETA_C - PARAMS.standby_kw == pytest.approx(max(charging), abs=0.01)
        discharging = [t["Sys_Power_kW"] for t in r.telemetry if t["Event"] == "discharge"]
        assert -(8 / ETA_D + PARAMS.standby_kw) == pytest.approx(min(discharging), abs=0.01)
        assert all(t["Setpoint_kW"] == 4.0 for t in r.telemetry if t["Event"] == "charge")
        # the first idle telemetry may carry a reading polled just before the idle write
        # landed (8 kW on a 240x clock: 0.05 kWh in 0.1 s real): the next poll shows it
        await wait_for(lambda: abs(r.last()["Sys_Energy_kWh"] - e2) < 0.05, 5.0)
        assert not any(t["Comm_Fault"] for t in r.telemetry)


@pytest.mark.parametrize(
    ("soc", "cmd", "limit_pct"), [(0.94, "charge", 95.0), (0.06, "discharge", 5.0)]
)
async def test_soc_stops_at_its_limits(
    broker_url: str, soc: float, cmd: str, limit_pct: float
) -> None:
    async with rig(broker_url, speed=3600, soc=soc) as r:
        await r.ems.call("bis-1", DEMO_INTERFACE, "EnergyMethod", [[[cmd, 8, 3600]]])
        await wait_for(lambda: r.last().get("Sys_SOC") == pytest.approx(limit_pct, abs=0.01), 5.0)
        await asyncio.sleep(0.3)  # ten minutes more of the same command
        assert float(r.emulator.model.soc[0]) * 100 == pytest.approx(limit_pct, abs=1e-6)
        assert r.last()["State"] == "SOC_PROTECTION"
        assert r.last()["Sys_Power_kW"] == pytest.approx(0.0, abs=0.05)


async def test_rate_above_rating_is_clipped_and_reported(broker_url: str) -> None:
    async with rig(broker_url, speed=60, soc=0.5) as r:
        await r.ems.call("bis-1", DEMO_INTERFACE, "EnergyMethod", [[["charge", 12, 600]]])
        await wait_for(lambda: r.last().get("Event") == "charge", 2.0)
        assert r.last()["Clipped"] is True
        assert r.last()["Requested_kW"] == 12.0 and r.last()["Setpoint_kW"] == 8.0
        assert r.emulator.image.get(124, "InWRte") == pytest.approx(100.0)
        assert r.emulator.setpoint_w() == pytest.approx(8000)


async def test_emulator_killed_and_restarted(broker_url: str) -> None:
    clock = ScaledClock(speed=60)
    port = free_port()
    env = {**os.environ, "SEF_CLOCK": clock.spec()}

    def start_emulator() -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sef",
                "emulate",
                "battery",
                "--port",
                str(port),
                "--soc",
                "0.5",
            ],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and "listening" in proc.stdout.readline()
        return proc

    poll_s = 0.25
    emulator = start_emulator()
    bis = BISAgent(
        "bis-f", broker_url, modbus_host="127.0.0.1", modbus_port=port, poll_s=poll_s, clock=clock
    )
    try:
        await bis.start()
        await wait_for(lambda: bis.device.reading is not None, 5.0)
        await bis.energy_method([("charge", 4, 7200)])
        await wait_for(
            lambda: (
                bis.device.reading is not None
                and bis.device.reading.power_kw == pytest.approx(3.87, abs=0.05)
            ),
            3.0,
        )
        emulator.send_signal(signal.SIGKILL)
        emulator.wait()
        killed = time.monotonic()
        await wait_for(lambda: not bis.status.healthy, 2 * poll_s + 0.5)
        assert time.monotonic() - killed <= 2 * poll_s + 0.05
        telemetry = bis.get_property(DEMO_INTERFACE, "Telemetry")
        assert telemetry["Comm_Fault"].value is True and "Fault" in telemetry
        await asyncio.sleep(1.0)  # the BIS keeps running and retrying
        assert bis.bus.connected
        emulator = start_emulator()  # a fresh battery: idle until the BIS re-applies
        await wait_for(lambda: bis.status.healthy, 5.0)
        await wait_for(
            lambda: (
                bis.device.reading is not None
                and bis.device.reading.power_kw == pytest.approx(3.87, abs=0.05)
            ),
            3.0,
        )
        assert bis.get_property(DEMO_INTERFACE, "Telemetry")["Comm_Fault"].value is False
    finally:
        await bis.stop()
        emulator.kill()
        emulator.wait()

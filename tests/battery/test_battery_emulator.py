"""Battery emulator over Modbus TCP, read by pysunspec2 and by SEF's SunSpecClient."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import sunspec2.modbus.client as ssc
from pymodbus.client import AsyncModbusTcpClient

from sef.clock import ScaledClock
from sef.emulators.battery import BatteryEmulator, run_battery_emulator
from sef.models.battery import BatteryParams
from sef.protocols.sunspec import (
    ModelMissingError,
    NotSunSpecError,
    PointError,
    SunSpecClient,
    SunSpecCommError,
    SunSpecExceptionResponse,
)
from sef.protocols.sunspec.mdef import PointValue

SPEED = 3600.0  # one simulated hour per real second
ETA = 0.975


@pytest.fixture
async def emu() -> AsyncIterator[BatteryEmulator]:
    emulator = BatteryEmulator(port=0, clock=ScaledClock(speed=SPEED), tick_s=60.0)
    await emulator.start()
    task = asyncio.create_task(emulator.run())
    yield emulator
    task.cancel()
    await emulator.stop()


def number(value: PointValue) -> float:
    """A numeric point's value (fails the test on a string or an unimplemented point)."""
    assert isinstance(value, int | float), value
    return value


def bits(value: PointValue) -> int:
    """A bitfield point's value (fails the test on anything but an integer)."""
    assert isinstance(value, int), value
    return value


def _pysunspec(emulator: BatteryEmulator, work: Callable[[Any], Any]) -> Any:
    assert emulator.address is not None
    host, port = emulator.address
    dev = ssc.SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr=host, ipport=port, timeout=5)
    try:
        dev.scan()
        return work(dev)
    finally:
        dev.close()


async def test_pysunspec2_scans_and_reads(emu: BatteryEmulator) -> None:
    def read(dev: Any) -> dict[str, Any]:
        c, b, s = dev.common[0], dev.battery[0], dev.storage_basic[0]
        cap = dev.DERStorageCapacity[0]
        return {
            "ids": [m for m in dev.models if isinstance(m, int)],
            "addr": (b.model_addr, s.model_addr),
            "common": (c.Mn.cvalue, c.Md.cvalue, c.SN.cvalue),
            "802": {
                p: getattr(b, p).cvalue
                for p in (
                    "SoC",
                    "WHRtg",
                    "AHRtg",
                    "WChaRteMax",
                    "WDisChaRteMax",
                    "V",
                    "Typ",
                    "State",
                    "ChaSt",
                    "SoCMin",
                    "SoCMax",
                    "W",
                    "SetOp",
                )
            },
            "124": {
                p: getattr(s, p).cvalue
                for p in ("WChaMax", "StorCtl_Mod", "InWRte", "OutWRte", "ChaState", "InBatV")
            },
            "713": (cap.WHRtg.cvalue, cap.SoC.cvalue, cap.Sta.cvalue),
        }

    got = await asyncio.to_thread(_pysunspec, emu, read)
    assert got["ids"] == [1, 802, 124, 713]
    assert got["addr"] == (40070, 40134)
    assert emu.address is not None
    assert got["common"] == ("SEF", "SEF-BAT-8kW-60kWh", f"SEF-BAT-{emu.address[1]}-1")
    b = got["802"]
    assert b["SoC"] == pytest.approx(50.0, abs=0.02)
    assert b["WHRtg"] == 60000
    assert b["AHRtg"] == pytest.approx(60000 / 409.6, abs=0.01)
    assert b["WChaRteMax"] == b["WDisChaRteMax"] == 8000
    assert b["V"] == pytest.approx(3.27 * 128, abs=0.1)
    assert (b["Typ"], b["State"], b["ChaSt"], b["SetOp"]) == (4, 3, 6, 1)
    assert (b["SoCMin"], b["SoCMax"]) == (5.0, 95.0)
    assert b["W"] == 30  # standby drawn from the cells, + = discharge
    s = got["124"]
    assert (s["WChaMax"], s["StorCtl_Mod"], s["InWRte"], s["OutWRte"]) == (8000, 0, 100.0, 100.0)
    assert s["ChaState"] == pytest.approx(50.0, abs=0.02)
    assert got["713"][0] == 60000 and got["713"][2] == 0


async def test_pysunspec2_control_charges_battery(emu: BatteryEmulator) -> None:
    clock = emu.clock

    def command(dev: Any) -> float:
        s = dev.storage_basic[0]
        s.InWRte.cvalue, s.OutWRte.cvalue, s.StorCtl_Mod.value = 50.0, -50.0, 3
        before = dev.battery[0].SoC.cvalue
        s.write()
        return float(before)

    t0 = clock.monotonic()
    soc_before = await asyncio.to_thread(_pysunspec, emu, command)
    t1 = clock.monotonic()
    await asyncio.sleep(0.5)  # ≈ 1800 simulated s
    t2 = clock.monotonic()
    soc_after = await asyncio.to_thread(_pysunspec, emu, lambda d: d.battery[0].SoC.cvalue)
    t3 = clock.monotonic()
    gained_kwh = (soc_after - soc_before) / 100 * 60.0
    rate_kw = 4.0 * ETA - 0.03  # stored-energy rate while charging at 4 kW AC
    lo, hi = rate_kw * (t2 - t1) / 3600, rate_kw * (t3 - t0) / 3600
    assert lo * 0.99 - 0.006 <= gained_kwh <= hi * 1.01 + 0.006
    assert gained_kwh > 1.5


async def test_sunspec_client_discharge(emu: BatteryEmulator) -> None:
    assert emu.address is not None
    async with SunSpecClient(*emu.address, unit=1) as c:
        models = await c.scan()
        assert [m.model_id for m in models] == [1, 802, 124, 713]
        assert c.base_address == 40000
        common = await c.read_model(1)
        assert common["Mn"] == "SEF"
        await c.write_points(124, {"OutWRte": 25.0, "InWRte": -25.0, "StorCtl_Mod": 3})
        assert await c.read_point(124, "OutWRte") == 25.0
        await asyncio.sleep(0.05)
        bat = await c.read_points(802, ["W", "A", "V", "ChaSt", "SoC"])
        assert bat["ChaSt"] == 3  # DISCHARGING
        assert bat["W"] == pytest.approx(2000 / ETA + 30, abs=2)  # + = discharge
        assert bat["A"] == pytest.approx(number(bat["W"]) / number(bat["V"]), abs=0.02)
        with pytest.raises(PointError):
            await c.write_point(802, "SoC", 10.0)
        with pytest.raises(ModelMissingError):
            await c.read_model(704)


async def test_invalid_writes_get_modbus_exceptions(emu: BatteryEmulator) -> None:
    assert emu.address is not None
    host, port = emu.address
    raw = AsyncModbusTcpClient(host, port=port, timeout=2, retries=0)
    await raw.connect()
    try:
        soc = emu.image.address(802, "SoC")
        in_w = emu.image.address(124, "InWRte")
        cases = [
            (soc, [1], 2),  # read-only point
            (40000, [1], 2),  # SunS marker
            (emu.image.model_address[124], [124], 2),  # model header
            (39000, [1], 2),  # outside the map
            (in_w, [20000], 3),  # 200 % out of range
            (emu.image.address(802, "SetOp"), [7], 3),  # no such enum value
            (emu.image.address(124, "WChaMax"), [9000], 3),  # above the rating
        ]
        for addr, values, code in cases:
            rr = await raw.write_registers(addr, values, device_id=1)
            assert rr.isError() and rr.exception_code == code, (addr, values, rr)
        rr = await raw.write_register(in_w, 0x8000, device_id=1)  # "not implemented" marker
        assert rr.isError() and rr.exception_code == 3
        rr = await raw.read_holding_registers(40000, count=2, device_id=9)  # wrong unit
        assert rr.isError() and rr.exception_code == 0x0B
        rr = await raw.read_holding_registers(40000, count=2, device_id=1)
        assert rr.registers == [0x5375, 0x6E53]
    finally:
        raw.close()
    async with SunSpecClient(host, port) as c:
        await c.scan()
        with pytest.raises(SunSpecExceptionResponse) as err:
            await c.write_point(124, "InWRte", 150.0)
        assert err.value.exception_code == 3
        assert await c.read_point(124, "InWRte") == 100.0


async def test_soc_limit_disconnect_fault_and_revert() -> None:
    clock = ScaledClock(speed=SPEED)
    emulator = BatteryEmulator(port=0, clock=clock, soc=0.94, tick_s=60.0)
    host, port = await emulator.start()
    try:
        async with SunSpecClient(host, port) as c:
            await c.scan()
            await c.write_points(124, {"InWRte": 100.0, "OutWRte": -100.0, "StorCtl_Mod": 3})
            await asyncio.sleep(0.5)  # 0.6 kWh of headroom fills in ~5 simulated min
            bat = await c.read_points(802, ["SoC", "ChaSt", "State", "Evt1"])
            assert bat["SoC"] == pytest.approx(95.0, abs=0.01)
            assert (bat["ChaSt"], bat["State"]) == (5, 5)  # FULL, SOC PROTECTION
            assert bits(bat["Evt1"]) & (1 << 16)

            await c.write_point(802, "SetOp", 2)  # DISCONNECT
            bat = await c.read_points(802, ["ChaSt", "State"])
            assert (bat["ChaSt"], bat["State"]) == (1, 1)
            await c.write_point(802, "SetOp", 1)

            emulator.set_fault(True)
            assert await c.read_point(802, "State") == 99
            emulator.set_fault(False)
            evt = await c.read_point(802, "Evt1")
            assert bits(evt) & (1 << 25)  # latched
            await c.write_point(802, "AlmRst", 1)
            evt = await c.read_point(802, "Evt1")
            assert not bits(evt) & (1 << 25)

            # Discharge with a 600 s revert timeout: stops after 600 simulated s.
            e0 = float(emulator.model.energy_kwh[0])
            await c.write_points(
                124, {"InOutWRte_RvrtTms": 600, "OutWRte": 100.0, "InWRte": -100.0}
            )
            await asyncio.sleep(0.5)
            assert await c.read_point(124, "StorCtl_Mod") == 0
            used = e0 - float(emulator.model.energy_kwh[0])
            assert used == pytest.approx((8.0 / ETA + 0.03) * 600 / 3600, rel=0.01, abs=0.02)
    finally:
        await emulator.stop()


async def test_client_errors() -> None:
    with pytest.raises(SunSpecCommError):
        async with SunSpecClient("127.0.0.1", 1, timeout_s=0.5) as c:
            await c.scan()
    emulator = BatteryEmulator(port=0, clock=ScaledClock(speed=1.0))
    emulator.image.store(40000, [0, 0])  # break the marker
    host, port = await emulator.start()
    try:
        async with SunSpecClient(host, port, timeout_s=1.0) as c:
            with pytest.raises(NotSunSpecError):
                await c.scan()
    finally:
        await emulator.stop()


async def test_run_function_ready_and_cancel() -> None:
    ready = asyncio.Event()
    seen: list[BatteryEmulator] = []
    task = asyncio.create_task(
        run_battery_emulator(
            "127.0.0.1", 0, unit=3, clock=ScaledClock(speed=60.0), ready=ready,
            on_ready=seen.append, params=BatteryParams(capacity_kwh=13.5, rated_power_kw=5.0),
        )
    )  # fmt: skip
    await asyncio.wait_for(ready.wait(), 5)
    assert seen[0].address is not None
    async with SunSpecClient(*seen[0].address, unit=3) as c:
        await c.scan()
        assert await c.read_point(802, "WHRtg") == 13500
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_cli_prints_listening_line() -> None:
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": str(src)}
    code = "from sef.cli.emulate import app; app()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "battery", "--port", "0", "--unit", "2",
         "--clock", "scaled:60"],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("battery emulator listening on 127.0.0.1:")
        assert line.endswith(" unit 2")
    finally:
        proc.terminate()
        proc.wait(timeout=10)

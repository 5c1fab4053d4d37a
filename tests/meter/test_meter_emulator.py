"""Meter emulator over Modbus TCP: its map read by pysunspec2 and as raw registers at the
addresses of the SunSpec meter models, the sum of its sources (a real battery emulator and
a real water-heater emulator reporting over the CT input), and its energy registers."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
import sunspec2.modbus.client as ssc
from pymodbus.client import AsyncModbusTcpClient

from sef.clock import Clock, ScaledClock
from sef.emulators._meter_sources import BaseLoad, report_power
from sef.emulators.battery import BatteryEmulator
from sef.emulators.meter import MeterEmulator
from sef.emulators.waterheater import SGDEmulator
from sef.models.waterheater import WaterHeaterParams
from sef.protocols.sunspec import SunSpecClient, SunSpecExceptionResponse
from support import wait_for

DAY = 86400.0


class ManualClock(Clock):
    """A clock the test moves by hand (Unix s)."""

    def __init__(self, start: float) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t

    def spec(self) -> str:
        return "real"


@pytest.fixture
async def started() -> AsyncIterator[Callable[[MeterEmulator], Any]]:
    """Start meters for a test and stop them all at its end."""
    meters: list[MeterEmulator] = []

    async def start(meter: MeterEmulator) -> MeterEmulator:
        await meter.start()
        meters.append(meter)
        return meter

    yield start
    for meter in meters:
        await meter.stop()


def where(meter: MeterEmulator) -> tuple[str, int]:
    """The meter's bound Modbus (host, port)."""
    assert meter.address is not None
    return meter.address


def _pysunspec(address: tuple[str, int], model_id: int) -> dict[str, Any]:
    dev = ssc.SunSpecModbusClientDeviceTCP(
        slave_id=1, ipaddr=address[0], ipport=address[1], timeout=5
    )
    try:
        dev.scan()
        common, m = dev.models[1][0], dev.models[model_id][0]
        names = ("W", "A", "AphA", "PhV", "Hz", "TotWhImp", "TotWhExp", "WphA", "WphB", "PPV")
        return {
            "ids": [k for k in dev.models if isinstance(k, int)],
            "addr": m.model_addr,
            "common": (common.Mn.cvalue, common.Md.cvalue),
            "values": {n: getattr(m, n).cvalue for n in names},
            "sf": {n: getattr(m, n).value for n in ("W_SF", "A_SF", "V_SF", "Hz_SF", "TotWh_SF")},
        }
    finally:
        dev.close()


@pytest.mark.parametrize(("phases", "model_id"), [(1, 201), (3, 203)])
async def test_pysunspec2_reads_the_meter(
    started: Callable[[MeterEmulator], Any], phases: int, model_id: int
) -> None:
    meter = MeterEmulator(port=0, phases=phases, base_load=BaseLoad.constant(3.0), tick_s=60)
    meter.import_wh = 12345.6
    await started(meter)
    got = await asyncio.to_thread(_pysunspec, where(meter), model_id)
    assert got["ids"] == [1, model_id]
    assert got["addr"] == 40070
    assert got["common"] == ("SEF", f"SEF-METER-{model_id}")
    v, sf = got["values"], got["sf"]
    assert sf == {"W_SF": 1, "A_SF": -1, "V_SF": -1, "Hz_SF": -2, "TotWh_SF": 0}
    assert v["W"] == 3000 and v["Hz"] == 60.0
    volts = 240.0 if phases == 1 else 120.0
    assert v["PhV"] == volts
    assert v["A"] == pytest.approx(3000 / volts, abs=0.1)
    assert v["AphA"] == pytest.approx(3000 / volts / phases, abs=0.1)
    assert v["WphA"] == pytest.approx(3000 / phases, abs=10)
    assert v["TotWhImp"] == 12345
    assert v["TotWhExp"] is None  # an acc32 at 0 is "not accumulated" to pysunspec2
    if phases == 3:
        assert v["WphB"] == 1000 and v["PPV"] == pytest.approx(207.8)
    else:
        assert v["WphB"] is None and v["PPV"] is None  # not implemented: 0x8000


async def test_raw_registers_at_the_sunspec_201_addresses(
    started: Callable[[MeterEmulator], Any],
) -> None:
    """Hand-computed vectors: model 201's layout from the SunSpec meter model (offsets from
    the model's ID register: W 18, W_SF 22, PhV 7, V_SF 15, Hz 16, TotWhExp 38, TotWhImp 46,
    TotWh_SF 54, L = 105) after a 66-register common model at 40002."""
    clock = ManualClock(10 * DAY)
    meter = MeterEmulator(port=0, clock=clock, base_load=BaseLoad.constant(-4.5), tick_s=1e9)
    await started(meter)
    clock.t += 3600.0  # one hour exporting 4.5 kW: 4500 Wh out
    client = AsyncModbusTcpClient("127.0.0.1", port=where(meter)[1])
    await client.connect()
    try:
        rr = await client.read_holding_registers(40000, count=125, device_id=1)
        regs = list(rr.registers)
        rr = await client.read_holding_registers(40125, count=54, device_id=1)
        regs += rr.registers
    finally:
        client.close()
    at = {a: regs[a - 40000] for a in range(40000, 40179)}
    assert (at[40000], at[40001]) == (0x5375, 0x6E53)  # "SunS"
    assert (at[40002], at[40003]) == (1, 66)
    assert (at[40070], at[40071]) == (201, 105)
    assert at[40088] == (-450) & 0xFFFF  # W = -4500 W at W_SF 1
    assert at[40092] == 1
    assert at[40077] == 2400 and at[40085] == 0xFFFF  # PhV 240.0 V at V_SF -1
    assert at[40086] == 6000 and at[40087] == 0xFFFE  # Hz 60.00 at Hz_SF -2
    assert (at[40108] << 16 | at[40109]) == 4500  # TotWhExp, Wh
    assert (at[40116] << 16 | at[40117]) == 0  # TotWhImp
    assert at[40124] == 0  # TotWh_SF
    assert (at[40177], at[40178]) == (0xFFFF, 0)  # end marker


def test_energy_registers_integrate_base_steps_ct_changes_and_midnight() -> None:
    t0 = 20 * DAY  # a UTC midnight
    clock = ManualClock(t0)
    base = BaseLoad.from_series(np.array([2.0, -1.0, 3.0]), 600.0)  # 3.0 kW from 00:20 on
    meter = MeterEmulator(clock=clock, base_load=base, ct_timeout_s=1e9)
    clock.t = t0 + 300
    meter.advance()
    assert meter.import_wh == pytest.approx(2000 * 300 / 3600)
    meter.on_ct("heater", 500.0)  # from 00:05 on, +0.5 kW
    clock.t = t0 + 1500
    meter.advance()
    # 00:05-00:10 2.5 kW in, 00:10-00:20 0.5 kW out, 00:20-00:25 3.5 kW in
    imported = (2000 * 300 + 2500 * 300 + 3500 * 300) / 3600
    exported = 500 * 600 / 3600
    assert meter.import_wh == pytest.approx(imported)
    assert meter.export_wh == pytest.approx(exported)
    assert meter.image.get(201, "TotWhImp") == math.floor(imported)
    assert meter.image.get(201, "TotWhExp") == math.floor(exported)
    assert meter.image.get(201, "W") == 3500
    meter.on_ct("battery", -6000.0)  # discharging: the feeder exports 2.5 kW
    clock.t = t0 + DAY + 600  # across midnight: 3.0 kW until 24:00, then 2.0 kW
    meter.advance()
    exported += 2500 * (DAY - 1500) / 3600 + 3500 * 600 / 3600
    assert meter.export_wh == pytest.approx(exported)
    assert meter.import_wh == pytest.approx(imported)
    assert meter.image.get(201, "W") == -1000 + 500 - 6000  # 00:10: the -1.0-kW step
    meter.import_wh = 2.0**32 + 5.7  # the acc32 register rolls over
    meter.advance()
    assert meter.image.get(201, "TotWhImp") == 5


async def test_power_is_the_sum_of_the_base_load_and_the_real_devices(
    started: Callable[[MeterEmulator], Any],
) -> None:
    clock = ScaledClock(speed=60.0)
    meter = MeterEmulator(
        port=0, clock=clock, base_load=BaseLoad.constant(2.0), ct_port=0, ct_timeout_s=0.5
    )
    await started(meter)
    assert meter.ct_address is not None
    battery = BatteryEmulator(port=0, clock=clock, tick_s=1.0)
    await battery.start()
    heater = SGDEmulator(clock, params=WaterHeaterParams(initial_c=30.0), draws=np.zeros(0))
    tasks = [
        asyncio.create_task(battery.run()),
        asyncio.create_task(heater.run_model()),
        asyncio.create_task(
            report_power(lambda: float(battery.model.ac_power_kw[0]) * 1e3, meter.ct_address, "b")
        ),
    ]
    heater_ct = asyncio.create_task(report_power(lambda: heater.power_w, meter.ct_address, "wh"))
    try:
        assert battery.address is not None
        async with SunSpecClient(*battery.address) as bat, SunSpecClient(*where(meter)) as mtr:
            await bat.scan()
            await mtr.scan()
            # charge at 4 kW (docs/battery.md): the battery draws 4 kW from the grid
            await bat.write_points(124, {"OutWRte": -50.0, "InWRte": 50.0})
            await bat.write_point(124, "StorCtl_Mod", 3)
            readings: list[float] = []

            async def settled(expected_w: float) -> bool:
                readings.append(float(await mtr.read_point(201, "W") or 0))
                return abs(readings[-1] - expected_w) <= 20

            expected = 2000 + 4000 + 4500  # base + charging battery + one 4.5-kW element
            assert heater.power_w == pytest.approx(4500)
            await _until(lambda: settled(expected), 5.0)
            assert meter.sources.keys() == {"b", "wh"}
            heater_ct.cancel()  # the heater's circuit goes dead: after 0.5 s it reads 0 W
            await _until(lambda: settled(expected - 4500), 5.0)
            assert "wh" not in meter.sources
    finally:
        heater_ct.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, heater_ct, return_exceptions=True)
        await battery.stop()


async def _until(check: Callable[[], Any], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_garbage_ct_datagrams_are_dropped_and_writes_refused(
    started: Callable[[MeterEmulator], Any],
) -> None:
    meter = await started(MeterEmulator(port=0, base_load=BaseLoad.constant(1.0), ct_port=0))
    assert meter.ct_address is not None and meter.ct_receiver is not None
    garbage = [
        b"\xff\xfe",
        b"[1, 2]",
        b'{"src": "x", "w": NaN}',
        b'{"src": "x", "w": "100"}',
        b'{"src": "", "w": 1}',
        b'{"src": "x", "w": 1e12}',
        json.dumps({"src": "x" * 65, "w": 1}).encode(),
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for data in [*garbage, json.dumps({"src": "ok", "w": 250.5}).encode()]:
            sock.sendto(data, meter.ct_address)
    await wait_for(lambda: "ok" in meter.sources, 2.0)
    assert meter.ct_receiver.dropped == len(garbage)
    assert meter.sources.keys() == {"ok"}
    async with SunSpecClient(*where(meter)) as client:
        await client.scan()
        assert await client.read_point(201, "W") == 1250  # 1000 + 250.5, at 10 W steps
        with pytest.raises(SunSpecExceptionResponse) as refused:
            await client.write_registers(40002 + 66, [1])  # model 1 DA
        assert refused.value.exception_code == 2
    async with SunSpecClient(*where(meter), unit=7) as other_unit:
        with pytest.raises(SunSpecExceptionResponse) as wrong_unit:
            await other_unit.read_registers(40000, 2)
        assert wrong_unit.value.exception_code == 11

"""The emulated water heater's Intermediate DR answers (issue 13 §3): both setpoints kept,
non-water-heater device types refused, Temperature Offset and Advanced Load Up (CTA-2045-B),
over a real pseudo-terminal link with the UCM side played by our own Link."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
import pytest

from cta_helpers import FAST, frame
from sef.clock import Clock
from sef.emulators.waterheater import SGDEmulator, f_to_c
from sef.models.waterheater import DRMode, WaterHeaterParams
from sef.protocols import cta2045 as cta

OK = cta.ResponseCode.SUCCESS
BAD = cta.ResponseCode.BAD_VALUE
U = cta.AdvancedLoadUpUnits


class ManualClock(Clock):
    """A clock the test moves by hand (Unix s)."""

    def __init__(self, t: float = 1_782_921_600.0) -> None:  # 2026-07-01 16:00 UTC
        self.t = t

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t

    def spec(self) -> str:
        return "manual"


@asynccontextmanager
async def session(sgd: SGDEmulator) -> AsyncIterator[cta.Link]:
    """The emulator on a pty master; our Link (the UCM side) on pyserial at the slave."""
    master = cta.open_pty()
    server = asyncio.create_task(sgd.serve(master))
    try:
        async with cta.Link(cta.open_serial(master.slave_path), timing=FAST, name="ucm") as ucm:
            yield ucm
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


def emulator(clock: Clock | None = None) -> SGDEmulator:
    return SGDEmulator(
        clock or ManualClock(), draws=np.zeros(0), timing=FAST, comm_timeout_s=float("inf")
    )


async def test_two_setpoints_are_kept_and_reported() -> None:
    sgd = emulator()
    async with session(sgd) as ucm:
        request = cta.SetSetpointRequest(cta.DeviceType.ELECTRIC_WATER_HEATER, 0, 130, 120)
        assert request.encode() == frame("08 02 00 09 03 03 00 02 00 00 82 00 78")
        assert await ucm.request(request) == cta.IntermediateReply(0x03, 0x83, OK)
        got = await ucm.request(cta.GetSetpointRequest(), cta.SetpointReply)
        assert got.encode() == frame("08 02 00 0A 03 83 00 00 02 00 00 82 00 78")
        assert float(sgd.model.setpoint_c[0]) == pytest.approx(f_to_c(130))
        # one setpoint again: setpoint 2 is no longer reported
        await ucm.request(cta.SetSetpointRequest(setpoint1=125))
        again = await ucm.request(cta.GetSetpointRequest(), cta.SetpointReply)
        assert (again.setpoint1, again.setpoint2) == (125, None)


@pytest.mark.parametrize(
    "request_",
    [
        cta.SetSetpointRequest(0x0000, 0, 120),  # unspecified device type
        cta.SetSetpointRequest(0x0005, 0, 120),  # not a water heater
        cta.SetSetpointRequest(2, 7, 120),  # units neither °F nor °C
        cta.SetSetpointRequest(2, 0, 120, 200),  # setpoint 2 above the maximum (60 °C)
    ],
)
async def test_set_setpoint_refusals_change_nothing(request_: cta.SetSetpointRequest) -> None:
    sgd = emulator()
    before = float(sgd.model.setpoint_c[0])
    async with session(sgd) as ucm:
        assert await ucm.request(request_) == cta.IntermediateReply(0x03, 0x83, BAD)
        got = await ucm.request(cta.GetSetpointRequest(), cta.SetpointReply)
    assert got.setpoint2 is None
    assert float(sgd.model.setpoint_c[0]) == before


async def test_temperature_offset_get_and_set() -> None:
    sgd = emulator()
    async with session(sgd) as ucm:
        first = await ucm.request(cta.GetTemperatureOffsetRequest())
        assert first.encode() == frame("08 02 00 05 03 82 00 00 00")
        done = await ucm.request(cta.SetTemperatureOffsetRequest(4, cta.TemperatureUnits.CELSIUS))
        assert done == cta.IntermediateReply(0x03, 0x82, OK)
        assert await ucm.request(cta.GetTemperatureOffsetRequest()) == cta.TemperatureOffsetReply(
            0, 4, cta.TemperatureUnits.CELSIUS
        )
        refused = await ucm.request(cta.SetTemperatureOffsetRequest(4, 9))
        assert refused == cta.IntermediateReply(0x03, 0x82, BAD)


async def test_advanced_load_up_runs_for_its_duration() -> None:
    clock = ManualClock()
    sgd = emulator(clock)
    info = sgd.handle(cta.GetInformationRequest())
    assert isinstance(info, cta.GetInformationReply)
    assert info.capabilities & cta.Capability.ADVANCED_LOAD_UP
    async with session(sgd) as ucm:
        idle = await ucm.request(cta.GetAdvancedLoadUpRequest())
        assert idle == cta.AdvancedLoadUpReply(0, 0, 0, U.NOT_ACTIVE)
        # the spec example: 60 min, 5 × 100 Wh, sent as the notes' exact bytes
        assert cta.SetAdvancedLoadUpRequest(60, 5, U.WH_100).encode() == bytes.fromhex(
            "08 02 00 07 0C 00 00 3C 00 05 02 A9 4B"
        )
        ok = await ucm.request(cta.SetAdvancedLoadUpRequest(60, 5, U.WH_100))
        assert ok == cta.IntermediateReply(0x0C, 0x80, OK)
        assert sgd.model.mode[0] == DRMode.LOAD_UP
        raise_k = 500 * 3600 / (4183 * 170)  # 500 Wh into a 170-L tank, ≈ 2.53 K
        assert float(sgd.model.dr.advanced_offset_k[0]) == pytest.approx(raise_k, rel=1e-3)
        state = await ucm.request(cta.OperationalStateQuery(), cta.OperationalStateResponse)
        assert state.state in (
            cta.OperationalState.RUNNING_HEIGHTENED,
            cta.OperationalState.IDLE_HEIGHTENED,
        )
        assert await ucm.request(cta.GetAdvancedLoadUpRequest()) == cta.AdvancedLoadUpReply(
            0, 60, 5, U.WH_100
        )
        clock.t += 25 * 60
        running = await ucm.request(cta.GetAdvancedLoadUpRequest(), cta.AdvancedLoadUpReply)
        assert running.duration_min == 35
        clock.t += 36 * 60  # past the end: the model's event expired
        assert await ucm.request(cta.GetAdvancedLoadUpRequest()) == idle
        assert sgd.model.mode[0] == DRMode.NORMAL
        assert float(sgd.model.dr.advanced_offset_k[0]) == 0.0


async def test_advanced_load_up_probe_refusal_and_end_shed() -> None:
    sgd = emulator()
    async with session(sgd) as ucm:
        probe = cta.SetAdvancedLoadUpRequest(0, 0, U.NOT_ACTIVE)  # "no effect": support probe
        assert await ucm.request(probe) == cta.IntermediateReply(0x0C, 0x80, OK)
        assert sgd.model.mode[0] == DRMode.NORMAL
        reserved = cta.SetAdvancedLoadUpRequest(60, 5, 0x07)
        assert await ucm.request(reserved) == cta.IntermediateReply(0x0C, 0x80, BAD)
        # as much as possible: up to the maximum setpoint (60 °C) for an open-ended event
        await ucm.request(cta.SetAdvancedLoadUpRequest(0, 0xFFFF, U.WH_1000))
        top = float(sgd.model.max_setpoint_c[0] - sgd.model.setpoint_c[0])
        assert float(sgd.model.dr.advanced_offset_k[0]) == pytest.approx(top)
        reply = await ucm.request(cta.GetAdvancedLoadUpRequest(), cta.AdvancedLoadUpReply)
        assert (reply.duration_min, reply.value, reply.units) == (0, 0xFFFF, U.WH_1000)
        assert await ucm.request(cta.EndShed()) == cta.AppAck(cta.BasicOpcode.END_SHED)
        after = await ucm.request(cta.GetAdvancedLoadUpRequest(), cta.AdvancedLoadUpReply)
        assert after.units == U.NOT_ACTIVE and sgd.model.mode[0] == DRMode.NORMAL


def test_basic_load_up_replaces_advanced_load_up() -> None:
    sgd = emulator()
    sgd.handle(cta.SetAdvancedLoadUpRequest(60, 2, U.WH_1000))
    assert float(sgd.model.dr.advanced_offset_k[0]) > 0
    sgd.handle(cta.LoadUp(0x2B))
    assert float(sgd.model.dr.advanced_offset_k[0]) == 0.0
    state = sgd.handle(cta.GetAdvancedLoadUpRequest())
    assert isinstance(state, cta.AdvancedLoadUpReply) and state.units == U.NOT_ACTIVE


def test_lowered_setpoint_keeps_total_at_least_present() -> None:
    """The reported case: a full tank, then the setpoint lowered by 20 °F."""
    sgd = emulator()
    sgd.handle(cta.SetSetpointRequest(setpoint1=105))
    reads = sgd.handle(cta.CommodityReadRequest())
    assert isinstance(reads, cta.CommodityReadReply)
    total = reads.get(cta.CommodityCode.TOTAL_ENERGY_STORAGE)
    present = reads.get(cta.CommodityCode.PRESENT_ENERGY_STORAGE)
    assert total is not None and present is not None
    assert present.cumulative > 0
    assert total.cumulative >= present.cumulative


def test_advanced_load_up_stores_more_than_basic_load_up() -> None:
    """Model level: ALU heats above the setpoint; Basic Load Up tops off to it."""
    from sef.models.waterheater import WaterHeaterModel

    params = WaterHeaterParams(initial_c=45.0, nodes=6)
    basic, advanced = WaterHeaterModel(params, n=1), WaterHeaterModel(params, n=1)
    basic.load_up(None, 3 * 3600)
    advanced.advanced_load_up(None, 3 * 3600, 1500 * 3600 / (4183 * 170))
    for _ in range(120):
        basic.step(60.0, 0.0)
        advanced.step(60.0, 0.0)
    extra_wh = float(advanced.present_energy_storage_wh[0] - basic.present_energy_storage_wh[0])
    assert 1000 < extra_wh < 1700
    assert float(advanced.temperatures_c.max()) > float(advanced.setpoint_c[0]) + 3.0
    assert float(advanced.total_energy_storage_wh[0]) >= float(
        advanced.present_energy_storage_wh[0]
    )

"""Unit tests: demo-interface events → CTA-2045 bytes, and the SGD emulator's answers."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from sef.agents.ucm import event_message
from sef.clock import ScaledClock
from sef.emulators.waterheater import SGDEmulator, c_to_f, f_to_c
from sef.interface import Command
from sef.models.waterheater import DRMode, WaterHeaterParams
from sef.protocols import cta2045 as cta
from sef.protocols.cta2045 import state_name


def notes_check_bytes(data: bytes) -> bytes:
    """The checksum exactly as written in the reference notes (section 4)."""
    s1, s2 = 0xAA, 0x00
    for b in data:
        s1 = (s1 + b) % 255
        s2 = (s2 + s1) % 255
    ck1 = 255 - ((s1 + s2) % 255)
    ck2 = 255 - ((s1 + ck1) % 255)
    return bytes([ck1, ck2])


# Literal frames. The first is the notes' worked example (§4: "08 01 00 02 01 2B B5 68",
# Shed for 1 h → n = 0x2B); the others follow the notes' layout (§6: op1 02 End Shed,
# 17 Load Up, 0A Critical Peak; §6.1: ceil rule, 2 h = 0x3C, 3 h → 0x4A = 10 952 s) with
# check bytes worked out by the notes' algorithm.
LITERAL = [
    (Command.SHED, 3600, "08 01 00 02 01 2B B5 68"),
    (Command.SHED, 10800, "08 01 00 02 01 4A 77 87"),
    (Command.SHED, 0, "08 01 00 02 01 00 0C 3D"),
    (Command.ENDSHED, 0, "08 01 00 02 02 00 09 3F"),
    (Command.ENDSHED, 600, "08 01 00 02 02 00 09 3F"),
    (Command.IDLE, 1800, "08 01 00 02 02 00 09 3F"),
    (Command.CHARGE, 7200, "08 01 00 02 17 3C 51 A5"),
    (Command.CHARGE, 0, "08 01 00 02 17 00 C9 69"),
    (Command.DISCHARGE, 3600, "08 01 00 02 0A 2B 9A 7A"),
    (Command.SHED, 200_000, "08 01 00 02 01 FF 0C 3D"),
]


@pytest.mark.parametrize(("cmd", "duration_s", "wire"), LITERAL)
def test_event_bytes_match_literal_frames(cmd: Command, duration_s: int, wire: str) -> None:
    frame = bytes.fromhex(wire)
    assert notes_check_bytes(frame[:-2]) == frame[-2:]  # the literal is self-consistent
    assert event_message(cmd, duration_s).encode() == frame


@pytest.mark.parametrize(
    ("cmd", "cls"),
    [(Command.SHED, cta.Shed), (Command.CHARGE, cta.LoadUp), (Command.DISCHARGE, cta.CriticalPeak)],
)
@pytest.mark.parametrize("duration_s", [1, 2, 3, 299, 300, 3600, 7200, 10800, 14400, 129_032])
def test_event_bytes_match_the_codec(
    cmd: Command, cls: type[cta.Shed | cta.LoadUp | cta.CriticalPeak], duration_s: int
) -> None:
    message = event_message(cmd, duration_s)
    code = cta.encode_duration(duration_s)
    assert message == cls(code)
    assert message.encode() == cta.encode_frame(0x08, 0x01, bytes((cls.OPCODE, code)))
    assert cta.decode(message.encode()) == message
    # the duration byte never shortens an event, and is the smallest that does not
    assert 2 * code * code >= duration_s > 2 * (code - 1) ** 2


def test_state_names() -> None:
    assert state_name(2) == "RUNNING_CURTAILED" and state_name(11) == "IDLE_OPTED_OUT"
    assert state_name(99) == "STATE_99"


# --- the SGD emulator's application layer -------------------------------------------------


def sgd(**kwargs: Any) -> SGDEmulator:
    clock = ScaledClock(speed=1.0, sim_start=1_782_921_600.0)  # 2026-07-01 16:00 UTC
    return SGDEmulator(clock, draws=np.zeros(0), **kwargs)


async def test_emulator_applies_dr_commands_with_their_durations() -> None:
    e = sgd()
    assert e.handle(cta.Shed(0x4A)) == cta.AppAck(0x01)
    assert e.model.mode[0] == DRMode.SHED
    assert e.model.dr.event_end_s[0] == pytest.approx(e.model.t_s + 10952)
    assert e.handle(cta.LoadUp(0)) == cta.AppAck(0x17)
    assert e.model.mode[0] == DRMode.LOAD_UP and np.isinf(e.model.dr.event_end_s[0])
    assert e.handle(cta.CriticalPeak(1)) == cta.AppAck(0x0A)
    assert e.handle(cta.GridEmergency(2)) == cta.AppAck(0x0B)
    assert e.model.mode[0] == DRMode.GRID_EMERGENCY
    assert e.handle(cta.EndShed()) == cta.AppAck(0x02)
    assert e.model.mode[0] == DRMode.NORMAL
    assert e.handle(cta.OutsideCommStatus(1)) == cta.AppAck(0x0E)
    assert e.handle(cta.OperationalStateQuery()) == cta.OperationalStateResponse(0)
    assert e.handle(cta.SimpleTimeSync(3, 17)) == cta.AppAck(0x16)
    for unsupported in (
        cta.PowerLevel(63),
        cta.PresentRelativePrice(0x41),
        cta.GridGuidance(0),
        cta.TimeRemaining(3),
        cta.Sleep(),
    ):
        assert e.handle(unsupported) == cta.AppNak(cta.AppNakReason.OPCODE1_NOT_SUPPORTED)
    assert e.handle(cta.AppAck(0x11)) is None


async def test_emulator_override_and_comm_watchdog() -> None:
    e = sgd(nak_on_override=True, comm_timeout_s=0.05)
    e.handle(cta.Shed(0))
    e.press_override(True)  # no link: only the model
    assert e.override and e.handle(cta.OperationalStateQuery()) == cta.OperationalStateResponse(
        cta.OperationalState.IDLE_OPTED_OUT
    )
    assert e.handle(cta.Shed(5)) == cta.AppNak(cta.AppNakReason.CUSTOMER_OVERRIDE)
    assert e.handle(cta.LoadUp(5)) == cta.AppAck(0x17)
    e.press_override()  # toggles off
    assert not e.override
    e.handle(cta.Shed(0x4A))
    e.handle(cta.OutsideCommStatus(1))
    await asyncio.sleep(0.1)
    e.handle(cta.OperationalStateQuery())  # steps the model and checks the watchdog
    assert e.model.mode[0] == DRMode.NORMAL  # watchdog: no heartbeat for 0.05 s real
    e.handle(cta.Shed(0))
    e.handle(cta.OutsideCommStatus(0))  # connection lost: event cancelled at once
    assert e.model.mode[0] == DRMode.NORMAL


async def test_emulator_intermediate_replies() -> None:
    e = sgd(params=WaterHeaterParams(initial_c=47.0))
    info = e.handle(cta.GetInformationRequest())
    assert isinstance(info, cta.GetInformationReply)
    assert info.device_type == cta.DeviceType.ELECTRIC_WATER_HEATER
    assert info.model == "SEF-EWH-50" and info.serial == "SEF-WH-0001"
    assert len(info.encode()) == 59  # LEN 0x35 with every optional field
    reads = e.handle(cta.CommodityReadRequest())
    assert isinstance(reads, cta.CommodityReadReply) and len(reads.records) == 4
    rated = reads.get(cta.CommodityCode.RATED_MAX_CONSUMPTION)  # the Nameplate's Element_kW
    assert rated is not None and rated.instantaneous == 4500
    present = reads.get(cta.CommodityCode.PRESENT_ENERGY_STORAGE)
    total = reads.get(cta.CommodityCode.TOTAL_ENERGY_STORAGE)
    assert present is not None and total is not None and not present.measured
    assert present.cumulative == pytest.approx(170 * 4183 * (47.0 - 43.33) / 3600, abs=2)
    assert total.cumulative == pytest.approx(170 * 4183 * (51.67 - 43.33) / 3600, abs=2)
    one = e.handle(cta.CommodityReadRequest(0x80))  # measured flag masked
    assert isinstance(one, cta.CommodityReadReply) and one.records[0].commodity == 0
    assert e.handle(cta.CommodityReadRequest(3)) == cta.IntermediateReply(0x06, 0x80, 2)
    assert e.handle(cta.GetSetpointRequest()) == cta.SetpointReply(setpoint1=125)
    assert e.handle(cta.SetSetpointRequest(setpoint1=130)) == cta.IntermediateReply(0x03, 0x83)
    assert float(e.model.setpoint_c[0]) == pytest.approx(f_to_c(130))
    assert e.handle(cta.SetSetpointRequest(units=1, setpoint1=99)) == cta.IntermediateReply(
        0x03, 0x83, cta.ResponseCode.BAD_VALUE
    )
    temp = e.handle(cta.GetPresentTemperatureRequest())
    assert temp == cta.PresentTemperatureReply(temperature=c_to_f(47.0))
    utc = e.handle(cta.GetUtcTimeRequest())
    assert isinstance(utc, cta.UtcTimeReply)
    assert utc.utc.isoformat().startswith("2026-07-01T16:00")
    assert e.handle(cta.SetUtcTimeRequest(utc.utc_seconds + 3600)) == cta.IntermediateReply(
        0x02, 0x80
    )
    later = e.handle(cta.GetUtcTimeRequest())
    assert isinstance(later, cta.UtcTimeReply) and later.utc.hour == 17

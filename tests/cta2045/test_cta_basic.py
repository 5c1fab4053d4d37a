"""Basic DR messages and field encodings (reference notes §6)."""

from __future__ import annotations

import math

import pytest

from cta_helpers import frame
from sef.protocols.cta2045 import (
    DURATION_MAX_S,
    AppAck,
    AppNak,
    AppNakReason,
    BasicMessage,
    BasicOpcode,
    CommStatus,
    CriticalPeak,
    CtaDecodeError,
    CustomerOverride,
    EndShed,
    GridEmergency,
    GridGuidance,
    GuidanceLevel,
    LoadUp,
    NakReason,
    NextRelativePrice,
    OperationalState,
    OperationalStateQuery,
    OperationalStateResponse,
    OutsideCommStatus,
    PendingEventTime,
    PendingEventType,
    PowerLevel,
    PresentRelativePrice,
    Shed,
    SimpleTimeSync,
    Sleep,
    TimeRemaining,
    Wake,
    decode,
    decode_basic,
    decode_duration,
    decode_power_level,
    decode_relative_price,
    encode_duration,
    encode_power_level,
    encode_relative_price,
)


@pytest.mark.parametrize(
    ("seconds", "code"),
    [
        (0, 0),
        (1, 1),
        (2, 1),
        (3, 2),
        (8, 2),
        (9, 3),
        (300, 0x0D),
        (600, 0x12),
        (900, 0x16),
        (1800, 0x1E),
        (3600, 0x2B),
        (7200, 0x3C),
        (14400, 0x55),
        (28800, 0x78),
        (3528, 42),
        (3529, 43),
        (DURATION_MAX_S, 0xFE),
        (DURATION_MAX_S + 1, 0xFF),
        (10**9, 0xFF),
        (2.5, 2),
    ],
)
def test_duration_encoding_rounds_up(seconds: float, code: int) -> None:
    assert encode_duration(seconds) == code
    if 0 < code < 0xFF:
        assert 2 * code * code >= seconds > 2 * (code - 1) ** 2


def test_duration_decoding() -> None:
    assert decode_duration(0) == 0
    assert decode_duration(1) == 2
    assert decode_duration(0x2B) == 3698
    assert decode_duration(0xFE) == 129032
    assert decode_duration(0xFF) == 130050  # "longer than the maximum": a lower bound
    assert all(encode_duration(decode_duration(n)) == n for n in range(256))
    for bad in (-1, math.nan):
        with pytest.raises(ValueError):
            encode_duration(bad)
    with pytest.raises(ValueError):
        decode_duration(256)


def test_relative_price() -> None:
    assert decode_relative_price(0) is None
    assert decode_relative_price(0xFF) == math.inf
    assert decode_relative_price(0x01) == 0.0
    assert decode_relative_price(0x41) == 1.0
    assert decode_relative_price(0x65) == pytest.approx(2.0, abs=0.01)
    assert decode_relative_price(0x99) == pytest.approx(4.0, abs=0.01)
    assert [encode_relative_price(p) for p in (None, 0.0, 1.0, 2.0, 4.0)] == [0, 1, 65, 101, 153]
    assert encode_relative_price(9.79) == 0xFE
    assert encode_relative_price(10.0) == 0xFF
    assert all(encode_relative_price(decode_relative_price(n)) == n for n in range(1, 255))
    with pytest.raises(ValueError):
        encode_relative_price(-0.1)


def test_power_level() -> None:
    assert encode_power_level(50) == 0x3F
    assert encode_power_level(100) == 0x7F
    assert encode_power_level(0) == 0
    assert encode_power_level(100, produce=True) == 0xFF
    percent, produce = decode_power_level(0x3F)
    assert percent == pytest.approx(49.6, abs=0.1) and produce is False
    assert decode_power_level(0xFF) == (100.0, True)
    assert PowerLevel.from_percent(50).encode() == frame("08 01 00 02 06 3F")
    for bad in (-1, 101, math.nan):
        with pytest.raises(ValueError):
            encode_power_level(bad)


ALL_BASIC: list[tuple[BasicMessage, str]] = [
    (Shed(0x2B), "01 2B"),
    (EndShed(), "02 00"),
    (AppAck(BasicOpcode.SHED), "03 01"),
    (AppNak(AppNakReason.CUSTOMER_OVERRIDE), "04 05"),
    (PowerLevel(0x3F), "06 3F"),
    (PresentRelativePrice(0x65), "07 65"),
    (NextRelativePrice(0x99), "08 99"),
    (TimeRemaining(0x1E), "09 1E"),
    (CriticalPeak(0x3C), "0A 3C"),
    (GridEmergency(0x55), "0B 55"),
    (GridGuidance(GuidanceLevel.GOOD), "0C 02"),
    (OutsideCommStatus(CommStatus.CONNECTED), "0E 01"),
    (CustomerOverride(True), "11 01"),
    (CustomerOverride(False), "11 00"),
    (OperationalStateQuery(), "12 00"),
    (OperationalStateResponse(OperationalState.RUNNING_OPTED_OUT), "13 0C"),
    (Sleep(), "14 00"),
    (Wake(), "15 00"),
    (SimpleTimeSync(weekday=3, hour=14), "16 6E"),
    (LoadUp(0x78), "17 78"),
    (PendingEventTime(0x12), "18 12"),
    (PendingEventType(BasicOpcode.CRITICAL_PEAK), "19 0A"),
]


@pytest.mark.parametrize(("message", "payload"), ALL_BASIC)
def test_every_basic_message_round_trips(message: BasicMessage, payload: str) -> None:
    raw = frame("08 01 00 02 " + payload)
    assert message.encode() == raw
    assert decode(raw) == message
    assert decode_basic(bytes.fromhex(payload)) == message


def test_worked_example_and_epri_vectors() -> None:
    assert Shed(encode_duration(3600)).encode() == bytes.fromhex("08 01 00 02 01 2B B5 68")
    comm_ack = AppAck(BasicOpcode.OUTSIDE_COMM_STATUS)
    assert decode(bytes.fromhex("08 01 00 02 03 0E E9 4F")) == comm_ack
    assert decode(bytes.fromhex("08 01 00 02 03 0B EF 4C")) == AppAck(BasicOpcode.GRID_EMERGENCY)
    assert decode(bytes.fromhex("08 01 00 02 03 07 F7 48")) == AppAck(7)
    assert decode(bytes.fromhex("08 01 00 02 03 01 04 42")) == AppAck(1)
    assert decode(bytes.fromhex("08 01 00 02 01 01 0A 3E")) == Shed(1)
    assert AppAck(BasicOpcode.CUSTOMER_OVERRIDE).encode() == bytes.fromhex(
        "08 01 00 02 03 11 E3 52"
    )


def test_all_operational_states_decode() -> None:
    names = [s.name for s in OperationalState][:13]
    assert names[0] == "IDLE_NORMAL" and names[12] == "RUNNING_OPTED_OUT"
    for state in range(13):
        msg = decode_basic(bytes([0x13, state]))
        assert isinstance(msg, OperationalStateResponse)
        assert isinstance(msg.state, OperationalState)
    unknown = decode_basic(b"\x13\x40")  # unknown states are kept, not rejected
    assert isinstance(unknown, OperationalStateResponse) and unknown.state == 0x40


def test_properties_and_replies() -> None:
    assert Shed(0x2B).duration_s == 3698
    assert PresentRelativePrice(0x41).ratio == 1.0
    assert PowerLevel(0xBF).produce and PowerLevel(0xBF).percent == pytest.approx(49.6, abs=0.1)
    assert Shed(1).is_reply(AppAck(1)) and Shed(1).is_reply(AppNak(3))
    assert not Shed(1).is_reply(AppAck(2))
    assert OperationalStateQuery().is_reply(OperationalStateResponse(1))
    assert not AppAck(1).is_reply(AppAck(1))
    assert CustomerOverride(True).is_reply(AppAck(0x11))
    assert SimpleTimeSync.from_opcode2(0x6E) == SimpleTimeSync(3, 14)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("01", NakReason.INVALID_LENGTH),
        ("01 02 03", NakReason.INVALID_LENGTH),
        ("05 00", NakReason.REQUEST_NOT_SUPPORTED),
        ("FF 00", NakReason.REQUEST_NOT_SUPPORTED),
        ("11 02", NakReason.INVALID_BYTE),
        ("0C 03", NakReason.INVALID_BYTE),
        ("0E 09", NakReason.INVALID_BYTE),
        ("16 F8", NakReason.INVALID_BYTE),  # weekday 7
        ("16 18", NakReason.INVALID_BYTE),  # hour 24
    ],
)
def test_decode_errors(payload: str, reason: NakReason) -> None:
    with pytest.raises(CtaDecodeError) as info:
        decode_basic(bytes.fromhex(payload))
    assert info.value.reason == reason


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        Shed(256)
    with pytest.raises(ValueError):
        AppAck(-1)
    with pytest.raises(ValueError):
        SimpleTimeSync(7, 0)
    with pytest.raises(ValueError):
        GridGuidance(5)

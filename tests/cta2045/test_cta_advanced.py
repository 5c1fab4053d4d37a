"""CTA-2045-B Temperature Offset and Advanced Load Up codec: independent vectors (the spec
examples quoted in the reference notes §7.1, with the notes' own check bytes), hand-written
layouts, and hypothesis round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cta_helpers import frame
from sef.protocols import cta2045 as cta

U = cta.AdvancedLoadUpUnits


def test_spec_examples_advanced_load_up() -> None:
    # notes §7.1: "60 min, 5 × 100 Wh" and "30 min, 1 × 1000 Wh, efficiency 0", check bytes
    # as written in the notes (computed there, not by our encoder)
    ex1 = bytes.fromhex("08 02 00 07 0C 00 00 3C 00 05 02 A9 4B")
    ex2 = bytes.fromhex("08 02 00 08 0C 00 00 1E 00 01 03 00 56 BE")
    assert ex1 == frame("08 02 00 07 0C 00 00 3C 00 05 02")
    assert ex2 == frame("08 02 00 08 0C 00 00 1E 00 01 03 00")
    first = cta.decode(ex1)
    assert first == cta.SetAdvancedLoadUpRequest(60, 5, U.WH_100)
    assert isinstance(first, cta.SetAdvancedLoadUpRequest)
    assert (first.duration_s, first.energy_wh) == (3600, 500)
    second = cta.decode(ex2)
    assert second == cta.SetAdvancedLoadUpRequest(30, 1, U.WH_1000, efficiency=0)
    assert cta.SetAdvancedLoadUpRequest(60, 5, U.WH_100).encode() == ex1
    assert cta.SetAdvancedLoadUpRequest(30, 1, U.WH_1000, 0).encode() == ex2
    # "Set reply, success: 08 02 00 03 0C 80 00"
    ok = cta.decode(frame("08 02 00 03 0C 80 00"))
    assert ok == cta.IntermediateReply(0x0C, 0x80, cta.ResponseCode.SUCCESS)
    assert cta.SetAdvancedLoadUpRequest(60, 5, U.WH_100).is_reply(ok)


def test_get_advanced_load_up_layouts() -> None:
    assert cta.GetAdvancedLoadUpRequest().encode() == frame("08 02 00 02 0C 00")
    assert cta.decode(frame("08 02 00 02 0C 00")) == cta.GetAdvancedLoadUpRequest()
    active = frame("08 02 00 08 0C 80 00 00 78 01 2C 01")  # 120 min, 300 × 10 Wh
    reply = cta.decode(active)
    assert reply == cta.AdvancedLoadUpReply(0, 120, 300, U.WH_10)
    assert isinstance(reply, cta.AdvancedLoadUpReply) and reply.energy_wh == 3000
    idle = cta.AdvancedLoadUpReply(0, 0, 0, U.NOT_ACTIVE)
    assert idle.encode() == frame("08 02 00 08 0C 80 00 00 00 00 00 FF")
    assert cta.GetAdvancedLoadUpRequest().is_reply(reply)
    full = cta.SetAdvancedLoadUpRequest(60, 0xFFFF, U.WH_1000, 1, 0xA1B2C3D4, 789, 5, 10)
    assert full.encode() == frame(
        "08 02 00 12 0C 00 00 3C FF FF 03 01 A1 B2 C3 D4 00 00 03 15 05 0A"
    )
    assert full.energy_wh is None  # "as much as possible"


def test_temperature_offset_layouts() -> None:
    assert cta.GetTemperatureOffsetRequest().encode() == frame("08 02 00 02 03 02")
    assert cta.SetTemperatureOffsetRequest(5, cta.TemperatureUnits.FAHRENHEIT).encode() == frame(
        "08 02 00 04 03 02 05 00"
    )
    reply = cta.decode(frame("08 02 00 05 03 82 00 03 01"))
    assert reply == cta.TemperatureOffsetReply(0, 3, cta.TemperatureUnits.CELSIUS)
    assert cta.GetTemperatureOffsetRequest().is_reply(reply)
    set_ok = cta.decode(frame("08 02 00 03 03 82 00"))
    assert set_ok == cta.IntermediateReply(0x03, 0x82, 0)
    assert cta.SetTemperatureOffsetRequest(1, 0).is_reply(set_ok)
    assert not cta.SetTemperatureOffsetRequest(1, 0).is_reply(reply)


@pytest.mark.parametrize(
    "payload", ["0C 00 00 3C 00 05", "0C 00 00 3C 00 05 02 00 01", "03 02 05", "03 82 00 05"]
)
def test_bad_lengths(payload: str) -> None:
    with pytest.raises(cta.CtaDecodeError) as info:
        cta.decode_intermediate(bytes.fromhex(payload))
    assert info.value.reason == cta.NakReason.INVALID_LENGTH


def test_optional_fields_are_positional() -> None:
    with pytest.raises(ValueError):
        cta.SetAdvancedLoadUpRequest(60, 5, 2, event_id=1)  # event id without efficiency
    with pytest.raises(ValueError):
        cta.SetAdvancedLoadUpRequest(0x10000, 5, 2)


_u8 = st.integers(0, 0xFF)
_u16 = st.integers(0, 0xFFFF)
_u32 = st.integers(0, 0xFFFFFFFF)


@st.composite
def _alu_fields(draw: st.DrawFn) -> tuple[int, ...]:
    head = (draw(_u16), draw(_u16), draw(_u8))
    tail = (draw(_u8), draw(_u32), draw(_u32), draw(_u8), draw(_u8))
    return head + tail[: draw(st.integers(0, 5))]


@given(_alu_fields())
def test_advanced_load_up_round_trips(fields: tuple[int, ...]) -> None:
    request = cta.SetAdvancedLoadUpRequest(*fields)
    raw = request.encode()
    assert raw == frame(raw[:-2].hex(" "))
    assert cta.decode(raw) == request
    reply = cta.AdvancedLoadUpReply(0, *fields)
    assert cta.decode(reply.encode()) == reply
    assert reply.encode()[6] == 0 and reply.encode()[7:-2] == raw[6:-2]


@given(_u8, _u8, _u8)
def test_temperature_offset_round_trips(rc: int, offset: int, units: int) -> None:
    assert cta.decode(cta.SetTemperatureOffsetRequest(offset, units).encode()) == (
        cta.SetTemperatureOffsetRequest(offset, units)
    )
    reply = cta.TemperatureOffsetReply(rc, offset, units)
    assert reply.encode() == frame(f"08 02 00 05 03 82 {rc:02X} {offset:02X} {units:02X}")
    assert cta.decode(reply.encode()) == reply

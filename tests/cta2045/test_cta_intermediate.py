"""Intermediate DR and data-link messages (reference notes §5.3, §7)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest

from cta_helpers import frame
from sef.protocols.cta2045 import (
    BitRateRequest,
    CommodityCode,
    CommodityReadReply,
    CommodityReadRequest,
    CommodityRecord,
    CtaDecodeError,
    DeviceType,
    FirmwareInfo,
    GetInformationReply,
    GetInformationRequest,
    GetPresentTemperatureRequest,
    GetSetpointRequest,
    GetUtcTimeRequest,
    IntermediateReply,
    MaxPayloadQuery,
    MaxPayloadReply,
    Message,
    MessageTypeQuery,
    NakReason,
    PowerModeRequest,
    PresentTemperatureReply,
    SetpointReply,
    SetSetpointRequest,
    SetUtcTimeRequest,
    TemperatureUnits,
    UtcTimeReply,
    cta_seconds,
    decode,
    decode_datalink,
    decode_intermediate,
    from_cta_seconds,
    max_payload_code,
)


def info_reply_by_table() -> bytes:
    """Device-info reply built byte by byte from the offset table in notes §7.2."""
    body = bytearray(b"\x08\x02\x00\x35")  # 0–3
    body += b"\x01\x81"  # 4–5
    body += b"\x00"  # 6 response code
    body += b"10"  # 7–8 version '1' '0' (EPRI test)
    body += b"\x44\x55"  # 9–10 vendor id
    body += b"\x00\x03"  # 11–12 device type: heat-pump WH
    body += b"\x00\x07"  # 13–14 device revision
    body += b"\x00\x00\x00\x41"  # 15–18 capability bitmap
    body += b"\x00"  # 19 reserved
    body += b"HPWH-50".ljust(16, b"\0")  # 20–35 model
    body += b"SN12345".ljust(16, b"\0")  # 36–51 serial
    body += bytes([24, 3, 15, 3, 1])  # 52–56 fw 2024, March (month byte = month), 15th, v3.1
    assert len(body) == 57
    return frame(body.hex())


def test_get_information_reply_layout() -> None:
    raw = info_reply_by_table()
    assert raw[:11] == bytes.fromhex("08 02 00 35 01 81 00 31 30 44 55")  # notes' prefix
    assert len(raw) == 59
    msg = decode(raw)
    assert msg == GetInformationReply(
        response_code=0,
        cta_version=b"10",
        vendor_id=0x4455,
        device_type=DeviceType.HEAT_PUMP_WATER_HEATER,
        device_revision=7,
        capabilities=0x41,
        model="HPWH-50",
        serial="SN12345",
        firmware=FirmwareInfo(2024, 3, 15, 3, 1),
    )
    assert isinstance(msg, GetInformationReply) and msg.firmware is not None
    assert msg.firmware.date == datetime(2024, 3, 15).date()
    assert msg.encode() == raw


@pytest.mark.parametrize("length", [16, 32, 48, 53])
def test_get_information_optional_lengths(length: int) -> None:
    full = info_reply_by_table()[4:-2]
    payload = full[:length]
    msg = decode_intermediate(payload)
    assert isinstance(msg, GetInformationReply)
    assert (msg.model is None) == (length < 32)
    assert (msg.serial is None) == (length < 48)
    assert (msg.firmware is None) == (length < 53)
    assert msg.payload() == payload


def test_get_information_request_vector() -> None:
    assert GetInformationRequest().encode() == bytes.fromhex("08 02 00 02 01 01 04 43")
    assert GetInformationRequest().is_reply(GetInformationReply())
    assert GetInformationRequest().is_reply(IntermediateReply(0x01, 0x81, 1))


def test_commodity_read_reply_48_bytes() -> None:
    records = (
        "80 000000001194 000000003039"  # measured electricity: 4500 W, 12345 Wh
        "06 000000000000 000000000FA0"  # estimated total storage 4000 Wh
        "87 000000000000 0000000007D0"  # measured present storage 2000 Wh
    )
    raw = frame("08 02 00 2A 06 80 00" + records)
    assert len(raw) == 48
    msg = decode(raw)
    assert isinstance(msg, CommodityReadReply)
    assert msg.records == (
        CommodityRecord(CommodityCode.ELECTRICITY_CONSUMED, 4500, 12345, measured=True),
        CommodityRecord(CommodityCode.TOTAL_ENERGY_STORAGE, 0, 4000, measured=False),
        CommodityRecord(CommodityCode.PRESENT_ENERGY_STORAGE, 0, 2000, measured=True),
    )
    assert msg.get(7) == msg.records[2] and msg.get(3) is None
    assert msg.encode() == raw


def test_commodity_requests() -> None:
    assert CommodityReadRequest().encode() == frame("08 02 00 02 06 00")
    assert CommodityReadRequest(0).encode() == frame("08 02 00 03 06 00 00")
    assert decode(frame("08 02 00 03 06 00 07")) == CommodityReadRequest(7)
    assert decode(frame("08 02 00 03 06 80 05")) == CommodityReadReply(5, ())


def test_setpoints_and_temperature() -> None:
    assert GetSetpointRequest().encode() == frame("08 02 00 02 03 03")
    set1 = SetSetpointRequest(DeviceType.ELECTRIC_WATER_HEATER, TemperatureUnits.FAHRENHEIT, 120)
    assert set1.encode() == frame("08 02 00 07 03 03 00 02 00 00 78")
    set2 = SetSetpointRequest(2, TemperatureUnits.CELSIUS, 49, -5)
    assert set2.encode() == frame("08 02 00 09 03 03 00 02 01 00 31 FF FB")
    assert decode(set2.encode()) == set2
    get = SetpointReply(0, 2, 0, 125, None)
    assert get.encode() == frame("08 02 00 08 03 83 00 00 02 00 00 7D")
    assert decode(frame("08 02 00 0A 03 83 00 00 03 01 FF F6 00 32")) == SetpointReply(
        0, 3, TemperatureUnits.CELSIUS, -10, 50
    )
    assert decode(frame("08 02 00 03 03 83 00")) == IntermediateReply(3, 0x83, 0)
    assert set1.is_reply(IntermediateReply(3, 0x83, 0))
    assert GetSetpointRequest().is_reply(get)
    temp = PresentTemperatureReply(0, 2, 0, 118)
    assert temp.encode() == frame("08 02 00 08 03 84 00 00 02 00 00 76")
    assert GetPresentTemperatureRequest().encode() == frame("08 02 00 02 03 04")
    assert decode(temp.encode()) == temp


def test_utc_time() -> None:
    moment = datetime(2024, 1, 1, tzinfo=UTC)
    seconds = cta_seconds(moment)
    assert seconds == 757382400
    assert from_cta_seconds(seconds) == moment
    req = SetUtcTimeRequest(seconds, -32, 4)  # UTC−8 h, DST +1 h
    assert req.encode() == frame("08 02 00 08 02 00 2D 24 BD 00 E0 04")
    assert decode(req.encode()) == req
    reply = UtcTimeReply(0, seconds, -32, 4)
    assert reply.encode() == frame("08 02 00 09 02 80 00 2D 24 BD 00 E0 04")
    assert decode(reply.encode()) == reply and reply.utc == moment
    assert GetUtcTimeRequest().encode() == frame("08 02 00 02 02 00")
    assert GetUtcTimeRequest().is_reply(reply)
    assert req.is_reply(IntermediateReply(2, 0x80, 0)) and not req.is_reply(reply)
    with pytest.raises(ValueError):
        cta_seconds(datetime(2024, 1, 1))


def test_data_link_messages() -> None:
    assert MaxPayloadQuery().encode() == bytes.fromhex("08 03 00 02 18 00 BA 75")
    assert MaxPayloadReply(13).max_payload == 4096
    assert MaxPayloadReply.for_length(60) == MaxPayloadReply(4)  # 32 bytes
    assert max_payload_code(4096) == 13 and max_payload_code(1499) == 10
    assert decode(frame("08 03 00 02 19 07")) == MaxPayloadReply(7)
    assert BitRateRequest(3).baud == 115200
    assert decode(frame("08 03 00 02 16 05")) == PowerModeRequest(5)
    with pytest.raises(CtaDecodeError) as info:
        decode_datalink(b"\x16\x06")
    assert info.value.reason == NakReason.INVALID_BYTE
    with pytest.raises(CtaDecodeError) as info:
        decode_datalink(b"\x1a\x00")
    assert info.value.reason == NakReason.REQUEST_NOT_SUPPORTED


ALL_OTHER: list[Message] = [
    MessageTypeQuery(8, 2),
    GetInformationRequest(),
    GetInformationReply(0, b"B\x00", 1, 2, 3, 4, "m", "s", FirmwareInfo(2020, 12, 31, 1, 0)),
    GetInformationReply(1),
    GetUtcTimeRequest(),
    SetUtcTimeRequest(123, 1, -1),
    UtcTimeReply(0, 0xFFFFFFFF, 127, -128),
    GetSetpointRequest(),
    SetSetpointRequest(2, 1, -32768, 32767),
    SetpointReply(0, 1, 0, 120, 110),
    GetPresentTemperatureRequest(),
    PresentTemperatureReply(0, 2, 1, 50),
    CommodityReadRequest(),
    CommodityReadRequest(6),
    CommodityReadReply(0, (CommodityRecord(0, (1 << 48) - 1, 1, False),)),
    IntermediateReply(0x03, 0x83, 7),
    MaxPayloadQuery(),
    MaxPayloadReply(0),
    PowerModeRequest(0),
    BitRateRequest(8),
]


@pytest.mark.parametrize("message", ALL_OTHER, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: Message) -> None:
    raw = message.encode()
    assert raw[2:4] == struct.pack(">H", len(raw) - 6)
    assert decode(raw) == message


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("01", NakReason.INVALID_LENGTH),
        ("01 01 00", NakReason.INVALID_LENGTH),
        ("03 03 00 02", NakReason.INVALID_LENGTH),
        ("06 80 00 01", NakReason.INVALID_LENGTH),
        ("01 81 00 31 30", NakReason.INVALID_LENGTH),
        ("07 00", NakReason.REQUEST_NOT_SUPPORTED),
        ("0C 00 00 3C 00 05", NakReason.INVALID_LENGTH),  # Advanced Load Up cut short
        ("04 00", NakReason.REQUEST_NOT_SUPPORTED),  # autonomous cycling: not implemented
    ],
)
def test_intermediate_decode_errors(payload: str, reason: NakReason) -> None:
    with pytest.raises(CtaDecodeError) as info:
        decode_intermediate(bytes.fromhex(payload))
    assert info.value.reason == reason


def test_unsupported_message_type() -> None:
    with pytest.raises(CtaDecodeError) as info:
        decode(bytes.fromhex("08 32 00 02 01 01 E2 34"))
    assert info.value.reason == NakReason.UNSUPPORTED_MESSAGE_TYPE
    with pytest.raises(CtaDecodeError):
        decode(b"\x06\x00")


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        GetInformationReply(model="x" * 17)
    with pytest.raises(ValueError):
        SetSetpointRequest(2, 0, 40000)
    with pytest.raises(ValueError):
        CommodityRecord(0x80)
    with pytest.raises(ValueError):
        UtcTimeReply(0, -1)


def test_a_response_code_reply_expects_no_reply() -> None:
    from sef.protocols.cta2045 import IntermediateReply

    reply = IntermediateReply(0x03, 0x83)
    assert reply.is_reply(IntermediateReply(0x03, 0x83)) is False

"""Framing and the incremental deframer."""

from __future__ import annotations

import pytest

from cta_helpers import frame
from sef.protocols.cta2045 import (
    AckFrame,
    CtaDecodeError,
    Deframer,
    Frame,
    FrameError,
    NakFrame,
    NakReason,
    encode_frame,
    parse_frame,
)

SHED = bytes.fromhex("08 01 00 02 01 2B B5 68")


def test_encode_frame_examples() -> None:
    assert encode_frame(8, 1, b"\x01\x2b") == SHED
    assert encode_frame(8, 1) == bytes.fromhex("08 01 00 00 7E CD")
    assert encode_frame(8, 3, b"\x18\x00") == bytes.fromhex("08 03 00 02 18 00 BA 75")
    assert Frame(8, 1, b"\x01\x2b").encode() == SHED
    assert AckFrame().encode() == b"\x06\x00"
    assert NakFrame(5).encode() == b"\x15\x05"
    with pytest.raises(ValueError):
        encode_frame(0x100, 1)


def test_parse_frame() -> None:
    assert parse_frame(SHED) == Frame(8, 1, b"\x01\x2b")
    assert parse_frame(b"\x06\x00") == AckFrame(0)
    assert parse_frame(b"\x15\x03") == NakFrame(3)
    mtsq = parse_frame(bytes.fromhex("08 01 00 00 7E CD"))
    assert isinstance(mtsq, Frame) and mtsq.is_type_query


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", NakReason.INVALID_LENGTH),
        (b"\x06\x00\x00", NakReason.INVALID_LENGTH),
        (b"\x42\x00", NakReason.INVALID_BYTE),
        (bytes.fromhex("08 01 00 02 01"), NakReason.INVALID_LENGTH),
        (SHED + b"\x00", NakReason.INVALID_LENGTH),
        (bytes.fromhex("08 01 00 02 03 02 04 42"), NakReason.CHECKSUM_ERROR),
        (bytes.fromhex("08 01 20 00 00 00"), NakReason.INVALID_LENGTH),  # LEN 8192 > 4096
    ],
)
def test_parse_frame_errors(raw: bytes, reason: NakReason) -> None:
    with pytest.raises(CtaDecodeError) as info:
        parse_frame(raw)
    assert info.value.reason == reason


def test_byte_at_a_time_and_coalesced() -> None:
    d = Deframer()
    stream = b"\x06\x00" + SHED + frame("08 02 00 03 06 80 00") + b"\x15\x06"
    events = []
    for i, b in enumerate(stream):
        events += d.feed(bytes([b]), now=i * 0.001)
    expected = [AckFrame(0), Frame(8, 1, b"\x01\x2b"), Frame(8, 2, b"\x06\x80\x00"), NakFrame(6)]
    assert events == expected
    assert Deframer().feed(stream, 0.0) == expected
    assert d.deadline is None and d.pending == b""


def test_ack_and_response_in_one_read() -> None:
    events = Deframer().feed(b"\x06\x00" + frame("08 01 00 02 03 01"), 0.0)
    assert events == [AckFrame(0), Frame(8, 1, b"\x03\x01")]


def test_garbage_resync_reports_once_per_run() -> None:
    events = Deframer().feed(b"\x00\x42\xff\x10" + SHED + b"\x77\x77" + SHED, 0.0)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["FrameError", "Frame", "FrameError", "Frame"]
    assert isinstance(events[0], FrameError) and events[0].reason == NakReason.INVALID_BYTE


def test_checksum_error_then_good_frame() -> None:
    bad = bytearray(SHED)
    bad[-1] ^= 0x01
    events = Deframer().feed(bytes(bad) + SHED, 0.0)
    assert isinstance(events[0], FrameError) and events[0].reason == NakReason.CHECKSUM_ERROR
    assert events[1] == Frame(8, 1, b"\x01\x2b")


def test_length_above_max_payload() -> None:
    d = Deframer(max_payload=64)
    events = d.feed(bytes.fromhex("08 02 01 00") + SHED, 0.0)
    assert isinstance(events[0], FrameError) and events[0].reason == NakReason.INVALID_LENGTH
    assert events[-1] == Frame(8, 1, b"\x01\x2b")


def test_partial_frame_timeout_decision() -> None:
    d = Deframer(timeout_s=0.5)
    assert d.feed(SHED[:5], now=10.0) == []
    assert d.deadline == pytest.approx(10.5)
    assert d.feed(SHED[5:6], now=10.3) == []  # measured from the first byte of the frame
    assert d.poll(10.499) == []
    events = d.poll(10.5)
    assert len(events) == 1 and isinstance(events[0], FrameError)
    assert events[0].reason == NakReason.MESSAGE_TIMEOUT and events[0].data == SHED[:6]
    assert d.deadline is None
    # the rest of the late frame is garbage now, and a new frame parses normally
    events = d.feed(SHED[6:] + SHED, now=11.0)
    assert events[-1] == Frame(8, 1, b"\x01\x2b")


def test_expired_partial_is_dropped_before_new_bytes() -> None:
    d = Deframer(timeout_s=0.5)
    d.feed(SHED[:3], now=0.0)
    events = d.feed(SHED, now=1.0)
    assert isinstance(events[0], FrameError) and events[0].reason == NakReason.MESSAGE_TIMEOUT
    assert events[1] == Frame(8, 1, b"\x01\x2b")


def test_partial_after_complete_frame_gets_new_start_time() -> None:
    d = Deframer(timeout_s=0.5)
    d.feed(SHED[:4], now=0.0)
    d.feed(SHED[4:] + SHED[:2], now=0.4)
    assert d.deadline == pytest.approx(0.9)

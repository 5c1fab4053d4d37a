"""Unsupported requests: link ACK + application answer for Basic / Intermediate DR, link NAK
07 only for data-link requests (issue 13 §3). Over a real pseudo-terminal pair; expected
frames are written out by hand with the reference notes' checksum (cta_helpers.frame)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cta_helpers import FAST, RawPeer, frame, pty_pair
from sef.emulators.waterheater import SGDEmulator
from sef.protocols import cta2045 as cta

ACK = b"\x06\x00"


async def _exchange(raw: RawPeer, request: bytes, answer_len: int) -> tuple[bytes, bytes]:
    """Send ``request``; return (link answer, application answer) and ACK the latter."""
    await raw.write(request)
    link_answer, _ = await raw.read_exactly(2)
    if answer_len == 0:
        return link_answer, await raw.silence(0.3)
    app, _ = await raw.read_exactly(answer_len)
    await raw.write(ACK)
    return link_answer, app


@pytest.mark.parametrize(
    ("request_hex", "link_answer", "app_answer_hex"),
    [
        ("08 01 00 02 05 00", ACK, "08 01 00 02 04 01"),  # unknown Basic opcode1 05
        ("08 01 00 02 FF 33", ACK, "08 01 00 02 04 01"),  # unknown Basic opcode1 FF
        ("08 02 00 02 07 00", ACK, "08 02 00 03 07 80 01"),  # unknown Intermediate
        ("08 02 00 06 04 00 01 02 03 04", ACK, "08 02 00 03 04 80 01"),  # cycling, any LEN
        ("08 02 00 04 0B 01 00 02", ACK, "08 02 00 03 0B 81 01"),  # user preference level
        ("08 02 00 04 07 80 00 00", ACK, None),  # an unknown *reply*: ACK, never answered
        ("08 03 00 02 30 00", b"\x15\x07", None),  # unknown data-link request: NAK 07
        ("08 05 00 02 01 00", b"\x15\x06", None),  # unsupported message type: NAK 06
    ],
)
async def test_link_answers_unsupported_requests(
    request_hex: str, link_answer: bytes, app_answer_hex: str | None
) -> None:
    master, serial_side = await pty_pair()
    raw = RawPeer(serial_side)
    expected = b"" if app_answer_hex is None else frame(app_answer_hex)
    async with cta.Link(master, timing=FAST, name="device") as link:
        got_link, got_app = await _exchange(raw, frame(request_hex), len(expected))
        assert got_link == link_answer
        assert got_app == expected
        await asyncio.sleep(0.05)
        assert link.stats.unsupported_received == (0 if request_hex.startswith("08 05") else 1)
        if app_answer_hex is not None:
            assert link.stats.messages_sent == 1  # the answer was link-ACKed by us, once
        with pytest.raises(TimeoutError):  # the application never sees the request
            await asyncio.wait_for(link.receive(), 0.1)
    await serial_side.close()


async def test_two_links_unknown_intermediate_request_gets_not_implemented() -> None:
    """Our own Link as the requester sees the reply with response code 1."""
    a, b = await pty_pair()
    async with cta.Link(a, timing=FAST, name="ucm") as ucm, cta.Link(b, timing=FAST) as sgd:
        raw = cta.Frame(0x08, 0x02, bytes.fromhex("0A 00"))  # Get Activation Status (VB)
        await ucm.send(raw)
        answer = await asyncio.wait_for(ucm.receive(), 2.0)
        assert answer == cta.IntermediateReply(0x0A, 0x80, cta.ResponseCode.NOT_IMPLEMENTED)
        assert sgd.stats.unsupported_received == 1


@pytest.mark.parametrize(
    ("message", "answer_hex"),
    [
        (cta.PowerLevel(0x3F), "08 01 00 02 04 01"),
        (cta.PresentRelativePrice(0x41), "08 01 00 02 04 01"),
        (cta.GridGuidance(cta.GuidanceLevel.GOOD), "08 01 00 02 04 01"),
    ],
)
async def test_emulator_naks_known_but_unhandled_basic(
    message: cta.Message, answer_hex: str
) -> None:
    master, serial_side = await pty_pair()
    sgd = SGDEmulator(timing=FAST, draws=np.zeros(0))
    server = asyncio.create_task(sgd.serve(master))
    raw = RawPeer(serial_side)
    try:
        got_link, got_app = await _exchange(raw, message.encode(), len(frame(answer_hex)))
        assert (got_link, got_app) == (ACK, frame(answer_hex))
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
        await serial_side.close()


# --- the codec functions H6 shares on the UCM side -------------------------------------

_KNOWN_BASIC = {int(op) for op in cta.BasicOpcode}


@given(op1=st.integers(0, 255).filter(lambda op: op not in _KNOWN_BASIC), op2=st.integers(0, 255))
def test_unknown_basic_opcode_raises_and_answers_app_nak_01(op1: int, op2: int) -> None:
    payload = bytes((op1, op2))
    with pytest.raises(cta.CtaUnsupportedRequest) as info:
        cta.decode_basic(payload)
    assert info.value.reason == cta.NakReason.REQUEST_NOT_SUPPORTED
    answer = cta.unsupported_answer_for(info.value)
    assert answer is not None and answer.encode() == frame("08 01 00 02 04 01")


@given(op1=st.integers(0, 255), op2=st.integers(0, 0x7F), rest=st.binary(max_size=20))
def test_intermediate_request_answer_is_op1_op2_or_80_rc_01(
    op1: int, op2: int, rest: bytes
) -> None:
    answer = cta.unsupported_answer(cta.INTERMEDIATE_DR, bytes((op1, op2)) + rest)
    assert answer is not None
    assert answer.encode() == frame(f"08 02 00 03 {op1:02X} {op2 | 0x80:02X} 01")
    assert cta.unsupported_answer(cta.INTERMEDIATE_DR, bytes((op1, op2 | 0x80)) + rest) is None


def test_data_link_and_responses_get_no_application_answer() -> None:
    assert cta.unsupported_answer(cta.DATA_LINK, bytes.fromhex("30 00")) is None
    with pytest.raises(cta.CtaUnsupportedRequest):
        cta.decode_datalink(bytes.fromhex("30 00"))
    for msg in (
        cta.AppAck(1),
        cta.AppNak(1),
        cta.OperationalStateResponse(0),
        cta.IntermediateReply(3, 0x83, 0),
    ):
        assert cta.not_implemented_answer(msg) is None
    assert cta.not_implemented_answer(cta.Sleep()) == cta.AppNak(
        cta.AppNakReason.OPCODE1_NOT_SUPPORTED
    )
    assert cta.not_implemented_answer(cta.GetSetpointRequest()) == cta.IntermediateReply(
        3, 0x83, cta.ResponseCode.NOT_IMPLEMENTED
    )

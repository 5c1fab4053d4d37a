"""Random bytes into either side's parsers and into a live Link: NAKs or clean errors only."""

from __future__ import annotations

import asyncio
import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cta_helpers import FAST, RawPeer, frame, socket_pair
from sef.protocols.cta2045 import (
    AckFrame,
    CtaDecodeError,
    Deframer,
    Frame,
    FrameError,
    Link,
    NakFrame,
    decode,
    decode_basic,
    decode_datalink,
    decode_intermediate,
    decode_message,
    parse_frame,
)

SHED = bytes.fromhex("08 01 00 02 01 2B B5 68")
chunks = st.lists(st.binary(min_size=1, max_size=64), max_size=20)
# Bytes biased towards frame starts and plausible lengths, to reach the deeper parser paths.
frame_like = st.lists(
    st.one_of(
        st.binary(max_size=8),
        st.sampled_from([b"\x08\x01\x00\x02", b"\x08\x02\x00", b"\x06\x00", b"\x15", b"\x08"]),
        st.builds(lambda p: frame("08 02 " + f"{len(p):04X}" + p.hex()), st.binary(max_size=60)),
        st.builds(lambda p: frame("08 01 00 02" + p.hex()), st.binary(min_size=2, max_size=2)),
    ),
    max_size=12,
).map(b"".join)


@given(chunks, st.lists(st.floats(0, 0.3), min_size=20, max_size=20))
def test_deframer_never_raises(parts: list[bytes], gaps: list[float]) -> None:
    d = Deframer(timeout_s=0.5, max_payload=256)
    now = 0.0
    for part, gap in zip(parts, gaps, strict=False):
        now += gap
        for event in d.feed(part, now):
            assert isinstance(event, Frame | AckFrame | NakFrame | FrameError)
    assert len(d.pending) <= 256 + 6
    d.poll(now + 1.0)
    assert d.feed(SHED, now + 1.0)[-1] == Frame(8, 1, b"\x01\x2b")


@given(frame_like)
def test_decoders_only_raise_decode_errors(data: bytes) -> None:
    for decoder in (decode_basic, decode_intermediate, decode_datalink):
        try:
            result = decoder(data)
        except CtaDecodeError:
            continue
        assert decoder(result.payload()) == result
    for parser in (decode, parse_frame):
        with contextlib.suppress(CtaDecodeError):
            parser(data)
    for event in Deframer().feed(data, 0.0):
        if isinstance(event, Frame):
            try:
                message = decode_message(event)
            except CtaDecodeError:
                continue
            assert decode(message.encode()) == message


@given(st.binary(max_size=80))
def test_payload_decoders_random(payload: bytes) -> None:
    for decoder in (decode_basic, decode_intermediate, decode_datalink):
        try:
            message = decoder(payload)
        except CtaDecodeError as exc:
            assert 0 <= exc.reason <= 7
        else:
            assert decoder(message.payload()) == message


async def _fuzz_live(blobs: list[bytes]) -> None:
    a, b = await socket_pair()
    raw = RawPeer(b)
    async with Link(a, timing=FAST) as link:
        for blob in blobs:
            await raw.write(blob)
        await asyncio.sleep(FAST.partial_frame_timeout_s + 0.05)
        junk = await raw.silence(0.05)
        # Everything the link said was link ACK/NAKs, a max-payload reply it was asked for,
        # or the answer to an unsupported request (App NAK 04 01, Intermediate rc 01).
        while junk:
            if junk[0] in (0x06, 0x15):
                junk = junk[2:]
            else:
                assert junk.startswith((b"\x08\x03\x00\x02\x19", b"\x08\x01\x00\x02\x04\x01")) or (
                    junk.startswith(b"\x08\x02\x00\x03") and junk[5] & 0x80 and junk[6] == 1
                ), junk.hex(" ")
                junk = junk[6 + junk[3] :]
                await raw.write(b"\x06\x00")
                await asyncio.sleep(0.05)
                junk += await raw.silence(0.05)
        assert not link.closed
        await raw.write(SHED)
        tail = await raw.silence(0.1)
        assert tail.endswith(b"\x06\x00"), tail.hex(" ")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(min_size=1, max_size=40), frame_like), max_size=6))
def test_live_link_survives_random_bytes(blobs: list[bytes]) -> None:
    asyncio.run(asyncio.wait_for(_fuzz_live(blobs), 10.0))

"""Link layer over a real pseudo-terminal pair (pyserial on the slave) and TCP loopback."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

import pytest

from cta_helpers import FAST, RawPeer, frame, pty_pair, socket_pair, tcp_pair
from sef.protocols.cta2045 import (
    AppAck,
    AppNak,
    BasicOpcode,
    CommodityReadReply,
    CommodityReadRequest,
    CommodityRecord,
    Frame,
    GetInformationReply,
    GetInformationRequest,
    Link,
    LinkClosed,
    LinkNak,
    LinkTimeout,
    LinkTiming,
    NakReason,
    OperationalState,
    OperationalStateQuery,
    OperationalStateResponse,
    ResponseTimeout,
    Shed,
    Transport,
)

REAL = LinkTiming()
SHED = bytes.fromhex("08 01 00 02 01 2B B5 68")


async def sgd_responder(link: Link) -> None:
    """A minimal SGD: App-ACKs commands and answers the queries used below."""
    async for msg in link:
        if isinstance(msg, OperationalStateQuery):
            await link.send(OperationalStateResponse(OperationalState.RUNNING_CURTAILED))
        elif isinstance(msg, GetInformationRequest):
            await link.send(GetInformationReply(model="SEF-WH", serial="1"))
        elif isinstance(msg, CommodityReadRequest):
            await link.send(CommodityReadReply(0, (CommodityRecord(0, 4500, 10),)))
        elif isinstance(msg, Shed):
            await link.send(AppAck(BasicOpcode.SHED))


@pytest.mark.parametrize("pair", [pty_pair, tcp_pair])
async def test_request_response_between_two_links(
    pair: Callable[[], Awaitable[tuple[Transport, Transport]]],
) -> None:
    a, b = await pair()
    async with Link(a, timing=FAST, name="ucm") as ucm, Link(b, timing=FAST, name="sgd") as sgd:
        task = asyncio.create_task(sgd_responder(sgd))
        assert await ucm.request(Shed(0x2B)) == AppAck(BasicOpcode.SHED)
        state = await ucm.request(OperationalStateQuery(), OperationalStateResponse)
        assert state.state == OperationalState.RUNNING_CURTAILED
        info = await ucm.request(GetInformationRequest(), GetInformationReply)
        assert info.model == "SEF-WH"
        reading = await ucm.request(CommodityReadRequest())
        assert isinstance(reading, CommodityReadReply) and reading.records[0].instantaneous == 4500
        assert await ucm.query_type_supported(0x08, 0x02)
        assert not await ucm.query_type_supported(0x08, 0x05)
        assert await ucm.query_max_payload() == 4096
        assert ucm.peer_max_payload == 4096
        task.cancel()


async def test_ack_delay_real_timing_pty() -> None:
    master, serial_side = await pty_pair()
    raw = RawPeer(serial_side)
    async with Link(master, timing=REAL) as link:
        t0 = await raw.write(SHED)
        ack, t1 = await raw.read_exactly(2)
        assert ack == b"\x06\x00"
        assert REAL.ack_delay_s - 0.005 <= t1 - t0 < 0.2, t1 - t0
        assert await asyncio.wait_for(link.receive(), 1.0) == Shed(0x2B)


async def test_retries_three_times_500ms_apart_real_timing() -> None:
    a, b = await socket_pair()
    raw = RawPeer(b)
    async with Link(a, timing=REAL) as link:
        loop = asyncio.get_running_loop()
        start = loop.time()
        send = asyncio.create_task(link.send(Shed(1)))
        stamps = []
        for _ in range(3):
            data, stamp = await raw.read_exactly(8, timeout=2.0)
            assert data == Shed(1).encode()
            stamps.append(stamp)
        with pytest.raises(LinkTimeout):
            await send
        elapsed = loop.time() - start
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        assert all(REAL.ack_timeout_s + REAL.retry_delay_s - 0.02 <= g < 1.0 for g in gaps), gaps
        assert 3 * REAL.ack_timeout_s + 2 * REAL.retry_delay_s - 0.05 <= elapsed < 2.5
        assert await raw.silence(0.1) == b""  # no fourth try
        assert link.stats.retries == 2


async def test_partial_frame_nak_05_real_timing_pty() -> None:
    master, serial_side = await pty_pair()
    raw = RawPeer(serial_side)
    async with Link(master, timing=REAL):
        t0 = await raw.write(SHED[:5])
        nak, t1 = await raw.read_exactly(2, timeout=2.0)
        assert nak == b"\x15\x05"
        assert 0.5 <= t1 - t0 < 0.5 + 0.2 + 0.1, t1 - t0
        await raw.write(SHED)  # the link recovered
        assert (await raw.read_exactly(2))[0] == b"\x06\x00"


@pytest.mark.parametrize(
    ("data", "reply"),
    [
        (SHED[:-1] + b"\x69", b"\x15\x03"),  # corrupted checksum
        (bytes.fromhex("08 32 00 02 01 01 E2 34"), b"\x15\x06"),  # unsupported type
        (bytes.fromhex("08 05 00 00") + frame("08 05 00 00")[-2:], b"\x15\x06"),  # MTSQ, no
        (frame("08 02 00 00"), b"\x06\x00"),  # MTSQ Intermediate: yes
        (frame("08 03 00 02 30 00"), b"\x15\x07"),  # unknown data-link request
        (frame("08 01 00 03 01 00 00"), b"\x15\x02"),  # Basic with LEN 3
        (frame("08 03 00 02 17 03"), b"\x15\x07"),  # bit-rate change not supported
        (b"\x42", b"\x15\x01"),  # invalid byte
    ],
)
async def test_naks(data: bytes, reply: bytes) -> None:
    a, b = await tcp_pair()
    raw = RawPeer(b)
    async with Link(a, timing=FAST) as link:
        await raw.write(data)
        assert (await raw.read_exactly(2))[0] == reply
        assert await raw.silence(0.05) == b""
        assert link.stats.frames_received + sum(link.stats.naks_sent.values()) >= 1


async def test_peer_nak_raises_linknak_without_retry() -> None:
    a, b = await socket_pair()
    async with Link(a, timing=FAST) as ucm, Link(b, timing=FAST):
        with pytest.raises(LinkNak) as info:
            await ucm.send(Frame(0x08, 0x32, b"\x01\x01"))
        assert info.value.reason == NakReason.UNSUPPORTED_MESSAGE_TYPE
        assert ucm.stats.retries == 0


async def test_retryable_nak_is_retried() -> None:
    a, b = await socket_pair()
    raw = RawPeer(b)
    async with Link(a, timing=FAST) as link:
        send = asyncio.create_task(link.send(Shed(2)))
        await raw.read_exactly(8)
        await raw.write(b"\x15\x03")
        await raw.read_exactly(8)
        await raw.write(b"\x06\x00")
        await asyncio.wait_for(send, 1.0)
        assert link.stats.retries == 1


async def test_spacing_and_response_delay_real_timing() -> None:
    a, b = await socket_pair()
    raw = RawPeer(b)
    async with Link(a, timing=REAL) as link:
        # tIM: two consecutive sends, the peer ACKs immediately.
        sends = asyncio.create_task(_send_two(link))
        _, t1 = await raw.read_exactly(8)
        await raw.write(b"\x06\x00")
        _, t2 = await raw.read_exactly(8)
        await raw.write(b"\x06\x00")
        await asyncio.wait_for(sends, 2.0)
        assert t2 - t1 >= REAL.inter_message_s - 0.005, t2 - t1
        # tAR: the link ACKs a request, then its response follows >= 100 ms later.
        await asyncio.sleep(0.15)
        await raw.write(OperationalStateQuery().encode())
        query = await asyncio.wait_for(link.receive(), 1.0)
        assert isinstance(query, OperationalStateQuery)
        reply = asyncio.create_task(link.send(OperationalStateResponse(1)))
        ack, t_ack = await raw.read_exactly(2)
        data, t_resp = await raw.read_exactly(8)
        assert ack == b"\x06\x00" and data == OperationalStateResponse(1).encode()
        assert t_resp - t_ack >= REAL.response_delay_s - 0.005, t_resp - t_ack
        await raw.write(b"\x06\x00")
        await asyncio.wait_for(reply, 1.0)


async def _send_two(link: Link) -> None:
    await link.send(Shed(1))
    await link.send(Shed(2))


async def test_ack_and_response_in_one_write() -> None:
    a, b = await socket_pair()
    raw = RawPeer(b)
    async with Link(a, timing=FAST) as link:
        req = asyncio.create_task(link.request(Shed(3)))
        await raw.read_exactly(8)
        await raw.write(b"\x06\x00" + AppNak(5).encode())
        assert await asyncio.wait_for(req, 1.0) == AppNak(5)
        assert (await raw.read_exactly(2))[0] == b"\x06\x00"


async def test_unsolicited_message_goes_to_queue_during_request() -> None:
    a, b = await socket_pair()
    raw = RawPeer(b)
    async with Link(a, timing=FAST) as link:
        req = asyncio.create_task(link.request(Shed(3)))
        await raw.read_exactly(8)
        await raw.write(b"\x06\x00")
        await raw.write(frame("08 01 00 02 11 01"))  # customer override first
        await raw.read_exactly(2)
        await raw.write(AppAck(1).encode())
        assert await asyncio.wait_for(req, 1.0) == AppAck(1)
        override = await asyncio.wait_for(link.receive(), 1.0)
        assert override.encode() == frame("08 01 00 02 11 01")


async def test_response_timeout() -> None:
    a, b = await socket_pair()
    async with Link(a, timing=FAST) as ucm, Link(b, timing=FAST):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(ResponseTimeout):
            await ucm.request(Shed(1), timeout_s=0.3)
        assert 0.3 <= loop.time() - t0 < 1.0


async def test_close_and_eof() -> None:
    a, b = await socket_pair()
    link = await Link(a, timing=FAST).start()
    peer = Link(b, timing=FAST)
    await peer.start()
    await peer.close()
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(link.receive(), 1.0)
    assert link.closed
    with pytest.raises(LinkClosed):
        await link.send(Shed(1))
    await link.close()
    await link.close()  # idempotent

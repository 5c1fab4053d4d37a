"""Write coalescing (``sef.bus._coalesce``): the writes of one event-loop iteration reach
the socket as one write with the same bytes in the same order; close flushes, abort and a
closing transport drop; a paused (full) transport keeps its flow-control semantics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from gmqtt.mqtt.constants import MQTTCommands
from gmqtt.mqtt.package import CommandWithMidPacket

from sef.broker import Mosquitto
from sef.bus import BusClient, Message
from sef.bus._coalesce import CoalescingTransport, WriteStats
from support import wait_for


@dataclass
class Sink(asyncio.Protocol):
    """The server side: records every byte received and when the peer closed."""

    data: bytearray = field(default_factory=bytearray)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> bool:
        self.closed.set()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


class Writer(asyncio.Protocol):
    """The client side: follows pause_writing/resume_writing of its transport."""

    def __init__(self) -> None:
        self.paused = 0
        self.resumed = 0

    def pause_writing(self) -> None:
        self.paused += 1

    def resume_writing(self) -> None:
        self.resumed += 1


class Counting:
    """The real transport, with its writes counted (each is one send() at most)."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


@asynccontextmanager
async def socket_pair() -> AsyncIterator[tuple[Sink, Any, Writer]]:
    """A real TCP connection on loopback (free port): server sink, client transport."""
    loop = asyncio.get_running_loop()
    sinks: list[Sink] = []

    def make_sink() -> Sink:
        sinks.append(Sink())
        return sinks[-1]

    server = await loop.create_server(make_sink, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport, writer = await loop.create_connection(Writer, "127.0.0.1", port)
    await wait_for(lambda: bool(sinks), 5.0)
    try:
        yield sinks[0], transport, writer
    finally:
        transport.abort()
        server.close()
        await server.wait_closed()


def pubacks(n: int) -> list[bytes]:
    return [
        CommandWithMidPacket.build_package(MQTTCommands.PUBACK, mid, False, proto_ver=4)
        for mid in range(1, n + 1)
    ]


async def test_a_burst_of_pubacks_in_one_iteration_is_one_write_with_the_same_bytes() -> None:
    async with socket_pair() as (sink, transport, _):
        counting = Counting(transport)
        stats = WriteStats()
        wrapper = CoalescingTransport(counting, stats)
        packets = pubacks(500)
        for packet in packets:  # one iteration: no await in between
            wrapper.write(packet)
        assert counting.writes == []  # nothing sent before the iteration ends
        await asyncio.sleep(0)
        assert counting.writes == [b"".join(packets)]
        assert (stats.packets, stats.writes, stats.bytes) == (500, 1, 4 * 500)
        # the next burst is the next write
        wrapper.write(packets[0])
        wrapper.write(bytearray(packets[1]))
        await asyncio.sleep(0)
        assert len(counting.writes) == 2
        await wait_for(lambda: len(sink.data) == 4 * 502, 5.0)
        assert bytes(sink.data) == b"".join(packets + packets[:2])


async def test_a_large_burst_is_flushed_when_max_pending_is_reached() -> None:
    async with socket_pair() as (sink, transport, _):
        counting = Counting(transport)
        wrapper = CoalescingTransport(counting, max_pending=40)
        packets = pubacks(25)  # 100 B: flushed at 40, 80, then the rest
        for packet in packets:
            wrapper.write(packet)
        assert [len(w) for w in counting.writes] == [40, 40]
        await asyncio.sleep(0)
        assert [len(w) for w in counting.writes] == [40, 40, 20]
        await wait_for(lambda: len(sink.data) == 100, 5.0)
        assert bytes(sink.data) == b"".join(packets)


async def test_close_flushes_first_and_abort_drops() -> None:
    async with socket_pair() as (sink, transport, _):
        wrapper = CoalescingTransport(transport)
        wrapper.write(b"\xe0\x00")  # DISCONNECT, then close in the same iteration
        wrapper.close()
        assert wrapper.is_closing()
        await asyncio.wait_for(sink.closed.wait(), 5.0)
        assert bytes(sink.data) == b"\xe0\x00"
        wrapper.write(b"late")  # after close: dropped and counted, never raised
        await asyncio.sleep(0)
        assert wrapper.stats.dropped == 4 and wrapper.stats.writes == 1
    async with socket_pair() as (sink, transport, _):
        wrapper = CoalescingTransport(transport)
        wrapper.write(b"never sent")
        wrapper.abort()
        await asyncio.wait_for(sink.closed.wait(), 5.0)
        await asyncio.sleep(0)
        assert bytes(sink.data) == b"" and wrapper.stats.dropped == 10


async def test_a_paused_transport_keeps_flow_control_and_order() -> None:
    """The peer stops reading: the real transport buffers, pauses its protocol; the bytes
    still arrive complete and in order once the peer reads again."""
    async with socket_pair() as (sink, transport, writer):
        sink.transport.pause_reading()
        transport.set_write_buffer_limits(high=1024)
        wrapper = CoalescingTransport(transport)
        chunks = [bytes([n % 251]) * 1000 for n in range(20_000)]  # 20 MB > socket buffers
        for start in range(0, len(chunks), 100):
            for chunk in chunks[start : start + 100]:
                wrapper.write(chunk)
            await asyncio.sleep(0)
        assert writer.paused >= 1  # the protocol was told, as without the wrapper
        assert wrapper.pending_bytes == 0
        assert wrapper.get_write_buffer_size() == transport.get_write_buffer_size() > 0
        sink.transport.resume_reading()
        await wait_for(lambda: len(sink.data) == 20_000_000, 20.0)
        assert writer.resumed >= 1
        assert bytes(sink.data) == b"".join(chunks)


async def test_bus_client_acks_a_burst_with_far_fewer_writes(mosquitto: Mosquitto) -> None:
    """A real drain: 2 000 QoS 1 messages queued for an offline session, then received by
    a coalescing BusClient that stops as soon as it has them all: every one delivered and
    acknowledged, in far fewer writes than packets, and a new connection with the same
    client id made at once gets nothing again. Three rounds: before the stop barrier
    (``BusClient.stop`` waits for an UNSUBACK) 1 round in 6 got 335-1 370 messages again
    (Mosquitto 2.0 reads one packet per pass over its sockets and the takeover dropped
    the PUBACKs it had not read)."""
    for round_ in range(3):
        topic = f"t/coalesce{round_}"
        got: list[Message] = []
        consumer = BusClient(mosquitto.url, f"drainer{round_}", on_message=got.append,
                             clean_session=False)  # fmt: skip
        await consumer.subscribe(f"{topic}/#")
        await consumer.start()
        await consumer.stop()
        producer = BusClient(mosquitto.url, "producer", coalesce_writes=False)
        assert producer.write_stats is None
        await producer.start()
        try:
            acked = [producer.publish_acked(f"{topic}/{n}", b"%d" % n) for n in range(2000)]
            await asyncio.wait_for(asyncio.gather(*acked), 10.0)
        finally:
            await producer.stop()
        consumer = BusClient(mosquitto.url, f"drainer{round_}", on_message=got.append,
                             clean_session=False, coalesce_writes=True)  # fmt: skip
        await consumer.subscribe(f"{topic}/#")
        await consumer.start()
        try:
            await wait_for(lambda got=got: len(got) == 2000, 10.0, step_s=0.001)  # type: ignore[misc]
            assert [m.payload for m in got] == [b"%d" % n for n in range(2000)]
            stats = consumer.write_stats
            assert stats is not None and stats.packets >= 2000
            assert stats.writes * 5 < stats.packets, stats
        finally:
            await consumer.stop()  # at once: no time for the broker to read the PUBACKs
        again: list[Message] = []
        consumer = BusClient(mosquitto.url, f"drainer{round_}", on_message=again.append,
                             clean_session=False)  # fmt: skip
        await consumer.subscribe(f"{topic}/#")
        await consumer.start()
        try:
            await asyncio.sleep(0.5)
            assert again == [], f"round {round_}: {len(again)} messages delivered again"
        finally:
            await consumer.stop()


def test_coalescing_is_on_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """On by default; SEF_BUS_COALESCE=0 or coalesce_writes=False turns it off."""
    monkeypatch.delenv("SEF_BUS_COALESCE", raising=False)
    assert BusClient("mqtt://127.0.0.1:1", "c1").write_stats is not None
    assert BusClient("mqtt://127.0.0.1:1", "c2", coalesce_writes=False).write_stats is None
    monkeypatch.setenv("SEF_BUS_COALESCE", "0")
    assert BusClient("mqtt://127.0.0.1:1", "c3").write_stats is None
    assert BusClient("mqtt://127.0.0.1:1", "c4", coalesce_writes=True).write_stats is not None

"""Shared helpers for the CTA-2045 tests (imported by module name; no package)."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from sef.protocols.cta2045 import (
    LinkTiming,
    StreamTransport,
    Transport,
    listen_tcp,
    open_pty,
    open_serial,
    open_tcp,
)

#: Short timings for most link tests (the real ones are used in a few).
FAST = LinkTiming(
    ack_delay_s=0.005,
    ack_timeout_s=0.15,
    response_delay_s=0.02,
    response_timeout_s=1.0,
    inter_message_s=0.02,
    partial_frame_timeout_s=0.1,
    retry_delay_s=0.05,
    max_tries=3,
)


def independent_check_bytes(data: bytes) -> bytes:
    """The checksum exactly as written in the reference notes (section 4)."""
    s1, s2 = 0xAA, 0x00
    for b in data:
        s1 = (s1 + b) % 255
        s2 = (s2 + s1) % 255
    ck1 = 255 - ((s1 + s2) % 255)
    ck2 = 255 - ((s1 + ck1) % 255)
    return bytes([ck1, ck2])


def frame(hexstr: str) -> bytes:
    """Header + payload given in hex, with independently computed check bytes appended."""
    body = bytes.fromhex(hexstr)
    return body + independent_check_bytes(body)


class RawPeer:
    """A byte-level peer that records arrival times (loop time) of what it reads."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.buf = bytearray()
        self.arrivals: list[tuple[float, bytes]] = []

    async def write(self, data: bytes) -> float:
        await self.transport.write(data)
        return asyncio.get_running_loop().time()

    async def read_exactly(self, n: int, timeout: float = 2.0) -> tuple[bytes, float]:
        """Return ``n`` bytes and the arrival time of the chunk that completed them."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        stamp = loop.time()
        while len(self.buf) < n:
            chunk = await asyncio.wait_for(self.transport.read(), max(0.0, end - loop.time()))
            if not chunk:
                raise EOFError("peer closed")
            stamp = loop.time()
            self.arrivals.append((stamp, chunk))
            self.buf += chunk
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out, stamp

    async def silence(self, duration: float) -> bytes:
        """Everything received during ``duration`` seconds."""
        with contextlib.suppress(TimeoutError):
            await self.read_exactly(1 << 20, timeout=duration)
        out = bytes(self.buf)
        self.buf.clear()
        return out


async def pty_pair() -> tuple[Transport, Transport]:
    """(pty master, pyserial on the slave path)."""
    master = open_pty()
    return master, open_serial(master.slave_path)


async def tcp_pair() -> tuple[Transport, Transport]:
    """(server side, client side) over loopback on a free port."""
    listener = await listen_tcp("127.0.0.1", 0)
    client = await open_tcp("127.0.0.1", listener.port)
    server = await asyncio.wait_for(listener.accept(), 2.0)
    await listener.close()
    return server, client


async def socket_pair() -> tuple[Transport, Transport]:
    """Two connected stream transports without a listening port."""
    a, b = socket.socketpair()
    ra, wa = await asyncio.open_connection(sock=a)
    rb, wb = await asyncio.open_connection(sock=b)
    return StreamTransport(ra, wa, "sock-a"), StreamTransport(rb, wb, "sock-b")

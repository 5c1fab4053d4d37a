"""Byte transports for the CTA-2045 link: serial port, pseudo-terminal pair, TCP.

Serial and pty transports drive a non-blocking file descriptor from the asyncio loop
(``loop.add_reader`` / ``add_writer``); no pyserial-asyncio is needed. TCP uses asyncio
streams. Every transport reads at least one byte per call and returns ``b""`` at EOF.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import termios
import tty
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import partial
from types import TracebackType
from typing import TypeVar

from ._errors import LinkClosed, logger

__all__ = [
    "SERIAL_BAUDRATE",
    "FdTransport",
    "PtyTransport",
    "SerialTransport",
    "StreamTransport",
    "TcpListener",
    "Transport",
    "listen_tcp",
    "open_pty",
    "open_serial",
    "open_tcp",
]

#: CTA-2045 default serial settings: 19200 baud, 8 data bits, no parity, 1 stop bit.
SERIAL_BAUDRATE = 19200
_READ_CHUNK = 4096
_T = TypeVar("_T")
_HANGUP_ERRNOS = frozenset({errno.EIO, errno.EBADF, errno.ENXIO, errno.ECONNRESET})


class Transport(ABC):
    """A bidirectional byte stream."""

    name: str = "transport"

    @abstractmethod
    async def read(self) -> bytes:
        """Wait for and return at least one byte; ``b""`` at end of stream.

        Must be safe to cancel: no byte is lost when the call is cancelled.
        """

    @abstractmethod
    async def write(self, data: bytes) -> None:
        """Write all of ``data``."""

    @abstractmethod
    async def close(self) -> None:
        """Release the underlying resource (idempotent)."""


class FdTransport(Transport):
    """Transport over a non-blocking file descriptor (pty master, tty, serial port)."""

    def __init__(
        self, fd: int, *, name: str = "fd", on_close: Callable[[], None] | None = None
    ) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self.name = name
        self._on_close = on_close
        self._closed = False

    @property
    def fd(self) -> int:
        """The file descriptor."""
        return self._fd

    async def _wait(self, writable: bool) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        if writable:
            loop.add_writer(self._fd, wake)
        else:
            loop.add_reader(self._fd, wake)
        try:
            await ready
        finally:
            if writable:
                loop.remove_writer(self._fd)
            else:
                loop.remove_reader(self._fd)

    async def _retry(self, op: Callable[[], _T], *, writable: bool) -> _T | None:
        """Call the non-blocking ``op``, waiting for readiness while it would block.

        Return None, without calling ``op`` again, once the transport is closed.
        """
        while not self._closed:
            try:
                return op()
            except BlockingIOError:
                await self._wait(writable)
        return None

    async def read(self) -> bytes:
        """See :meth:`Transport.read`."""
        try:
            data = await self._retry(partial(os.read, self._fd, _READ_CHUNK), writable=False)
        except OSError as exc:
            if exc.errno in _HANGUP_ERRNOS:
                logger.info("%s: read hang-up (%s)", self.name, exc)
                return b""
            raise
        return b"" if data is None else data

    async def write(self, data: bytes) -> None:
        """See :meth:`Transport.write`."""
        view = memoryview(bytes(data))
        while view:
            try:
                sent = await self._retry(partial(os.write, self._fd, view), writable=True)
            except OSError as exc:
                if exc.errno in _HANGUP_ERRNOS:
                    raise LinkClosed(f"{self.name}: write failed: {exc}") from exc
                raise
            if sent is None:
                raise LinkClosed(f"{self.name} is closed")
            view = view[sent:]

    async def close(self) -> None:
        """Close the descriptor (and whatever owns it)."""
        if self._closed:
            return
        self._closed = True
        if self._on_close is not None:
            self._on_close()
        else:
            with contextlib.suppress(OSError):
                os.close(self._fd)


class PtyTransport(FdTransport):
    """The master side of a pseudo-terminal pair in raw mode.

    The peer opens :attr:`slave_path` like a serial port (e.g. with :func:`open_serial`).
    The slave descriptor stays open here so the master never sees a hang-up while the peer
    reconnects.
    """

    def __init__(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave, termios.TCSANOW)
        self._slave_fd = slave
        self.slave_path = os.ttyname(slave)
        super().__init__(master, name=f"pty {self.slave_path}", on_close=self._close_both)

    def _close_both(self) -> None:
        for fd in (self._fd, self._slave_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def open_pty() -> PtyTransport:
    """Create a raw pseudo-terminal pair; use the result's ``slave_path`` for the peer."""
    transport = PtyTransport()
    logger.info("created pseudo-terminal %s", transport.slave_path)
    return transport


class SerialTransport(FdTransport):
    """A serial port opened with pyserial (19200 8N1 by default), driven non-blocking."""

    def __init__(self, port: str, baudrate: int = SERIAL_BAUDRATE) -> None:
        import serial

        self.serial = serial.Serial(
            port=port,
            baudrate=baudrate,
            bytesize=serial.EIGHTBITS,
            parity=serial.PARITY_NONE,
            stopbits=serial.STOPBITS_ONE,
            timeout=0,
            xonxoff=False,
            rtscts=False,
        )
        fd = self.serial.fileno()
        # pyserial sets VMIN = 0 for timeout=0, which makes read() return b"" when no data is
        # waiting, indistinguishable from EOF. VMIN = 1 makes a non-blocking read raise EAGAIN.
        attrs = termios.tcgetattr(fd)
        attrs[6][termios.VMIN] = 1
        attrs[6][termios.VTIME] = 0
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        super().__init__(fd, name=f"serial {port}", on_close=self.serial.close)


def open_serial(port: str, baudrate: int = SERIAL_BAUDRATE) -> SerialTransport:
    """Open a serial port (or a pty slave path) at ``baudrate`` 8N1."""
    transport = SerialTransport(port, baudrate)
    logger.info("opened serial port %s at %d 8N1", port, baudrate)
    return transport


class StreamTransport(Transport):
    """Transport over an asyncio stream pair (TCP)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str = "tcp"
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.name = name
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def read(self) -> bytes:
        """See :meth:`Transport.read`."""
        try:
            return await self._reader.read(_READ_CHUNK)
        except (ConnectionError, OSError) as exc:
            logger.info("%s: read failed (%s)", self.name, exc)
            return b""

    async def write(self, data: bytes) -> None:
        """See :meth:`Transport.write`."""
        if self._writer.is_closing():
            raise LinkClosed(f"{self.name} is closed")
        try:
            self._writer.write(bytes(data))
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise LinkClosed(f"{self.name}: write failed: {exc}") from exc

    async def close(self) -> None:
        """Close the connection."""
        if self._writer.is_closing():
            return
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()


async def open_tcp(host: str, port: int) -> StreamTransport:
    """Connect to a CTA-2045-over-TCP peer."""
    reader, writer = await asyncio.open_connection(host, port)
    logger.info("connected to %s:%d", host, port)
    return StreamTransport(reader, writer, name=f"tcp {host}:{port}")


class TcpListener:
    """A TCP server whose connections are handed out by :meth:`accept`."""

    def __init__(self) -> None:
        self._pending: asyncio.Queue[StreamTransport] = asyncio.Queue()
        self._server: asyncio.Server | None = None
        self.host = ""
        self.port = 0

    async def _start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._on_connect, host, port)
        self.host, self.port = self._server.sockets[0].getsockname()[:2]

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        logger.info("accepted TCP connection from %s", peer)
        await self._pending.put(StreamTransport(reader, writer, name=f"tcp {peer}"))

    async def accept(self) -> StreamTransport:
        """Wait for the next incoming connection."""
        return await self._pending.get()

    async def close(self) -> None:
        """Stop listening and close connections nobody accepted."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        while not self._pending.empty():
            await self._pending.get_nowait().close()

    async def __aenter__(self) -> TcpListener:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def listen_tcp(host: str = "127.0.0.1", port: int = 0) -> TcpListener:
    """Listen for CTA-2045-over-TCP peers; ``port=0`` picks a free port (see ``.port``)."""
    listener = TcpListener()
    await listener._start(host, port)
    logger.info("listening on %s:%d", listener.host, listener.port)
    return listener

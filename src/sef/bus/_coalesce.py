"""Write coalescing for the MQTT connection: one transport write per event-loop iteration.

gmqtt writes every packet it makes (each PUBACK of a received QoS 1 message, each
PUBLISH, PINGREQ, ...) to its asyncio transport at once, and an asyncio socket transport
with an empty buffer turns each write into one ``send()`` system call. On loopback each
``send()`` also runs the receiver's TCP processing in the sender's context, so an EMS
draining a queue of QoS 1 messages spent most of its time in ``socket.send``, one per
PUBACK (1.28 s of 1.41 s for 5 000 replies).

:class:`CoalescingTransport` sits between gmqtt and the real transport: writes made
within one event-loop iteration are kept in order in a list and handed to the real
transport as one ``write`` by a callback scheduled with ``loop.call_soon`` (it runs at
the start of the next iteration, after every callback of this one). The bytes and their
order are exactly those gmqtt wrote; only the number of writes (and so of system calls)
changes. :func:`install` puts one on a gmqtt connection (``MQTTConnection``) right
after it was made, before gmqtt sends CONNECT.

Semantics kept:

* **close**: :meth:`CoalescingTransport.close` first hands the pending bytes to the real
  transport, which sends its buffer before it closes the socket (gmqtt's DISCONNECT
  then still goes out); :meth:`~CoalescingTransport.abort` drops them, like the real
  abort drops its buffer.
* **flow control**: the real transport still calls the protocol's ``pause_writing`` /
  ``resume_writing``; gmqtt ignores them (it never awaits ``drain``) and the real
  transport buffers what it cannot send, as before. The wrapper holds at most one
  iteration's bytes, and hands them over at once when they reach ``max_pending`` bytes.
* **lost connection**: bytes pending when the real transport is already closing are
  dropped and counted (:attr:`WriteStats.dropped`), as the real transport drops writes
  after a lost connection; a failing ``write`` is logged, never raised into the loop.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_PENDING_BYTES", "CoalescingTransport", "WriteStats", "install"]

log = logging.getLogger("sef.bus")

MAX_PENDING_BYTES = 256 * 1024
"""Pending bytes (B) at which a write is handed to the real transport at once instead of
waiting for the end of the event-loop iteration (bounds the memory of one burst)."""


@dataclass
class WriteStats:
    """Counters of one :class:`~sef.bus.BusClient` over all its connections."""

    packets: int = 0
    """Writes gmqtt made (one per MQTT packet)."""
    writes: int = 0
    """Writes handed to the real transport (each at most one ``send()`` system call)."""
    bytes: int = 0
    """Bytes handed to the real transport (B)."""
    dropped: int = 0
    """Bytes dropped because the connection was closing or failed (B)."""


class CoalescingTransport:
    """An :class:`asyncio.Transport` stand-in that batches writes per loop iteration.

    Args:
        transport: the real :class:`asyncio.Transport` (TCP or TLS) of the connection.
        stats: counters to add to (shared across a client's connections).
        max_pending: flush at once when this many bytes are pending (B).
    """

    def __init__(
        self,
        transport: Any,
        stats: WriteStats | None = None,
        *,
        max_pending: int = MAX_PENDING_BYTES,
    ) -> None:
        self.transport: Any = transport
        self.stats = stats if stats is not None else WriteStats()
        self.max_pending = max_pending
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._scheduled: asyncio.Handle | None = None
        self._loop = asyncio.get_running_loop()

    # -- writes -----------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` for the flush at the end of this loop iteration."""
        # a copy of mutable buffers: the caller may reuse them before the flush
        chunk = data if type(data) is bytes else bytes(data)
        if not chunk:
            return
        self.stats.packets += 1
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        if self._pending_bytes >= self.max_pending:
            self.flush()
        elif self._scheduled is None:
            self._scheduled = self._loop.call_soon(self.flush)

    def writelines(self, chunks: Any) -> None:
        """Queue each chunk in order (like :meth:`asyncio.WriteTransport.writelines`)."""
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Hand the pending bytes to the real transport in one write (or drop them if it
        is closing). Called by the loop; safe to call at any time."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        if not self._pending:
            return
        pending, size = self._pending, self._pending_bytes
        self._pending, self._pending_bytes = [], 0
        if self.transport.is_closing():
            self.stats.dropped += size
            log.debug("dropped %d B written to a closing MQTT connection", size)
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        try:
            self.transport.write(data)
        except Exception as exc:  # the real transport reports socket errors itself
            self.stats.dropped += size
            log.warning("MQTT connection write of %d B failed: %s", size, exc)
            return
        self.stats.writes += 1
        self.stats.bytes += size

    @property
    def pending_bytes(self) -> int:
        """Bytes written but not yet handed to the real transport (B)."""
        return self._pending_bytes

    # -- the rest of the transport interface --------------------------------------------
    def close(self) -> None:
        """Flush, then close the real transport (which sends its buffer first)."""
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        """Drop the pending bytes and abort the real transport."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        self.stats.dropped += self._pending_bytes
        self._pending, self._pending_bytes = [], 0
        self.transport.abort()

    def is_closing(self) -> bool:
        return bool(self.transport.is_closing())

    def get_write_buffer_size(self) -> int:
        """Pending bytes plus the real transport's buffer (B)."""
        return self._pending_bytes + int(self.transport.get_write_buffer_size())

    def can_write_eof(self) -> bool:
        return bool(self.transport.can_write_eof())

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def __getattr__(self, name: str) -> Any:
        # get_extra_info, pause_reading, set_write_buffer_limits, ...: the real transport's
        return getattr(self.transport, name)


def install(connection: Any, stats: WriteStats) -> CoalescingTransport:
    """Route a gmqtt ``MQTTConnection``'s writes through a :class:`CoalescingTransport`.

    gmqtt writes through two references to the same transport: the connection's
    (``send_package``: resent QoS messages) and its protocol's (``write_data``: every
    other packet); both are replaced. Raises :class:`TypeError` when the installed gmqtt
    has neither (it then changed; the caller keeps the plain transport)."""
    protocol = getattr(connection, "_protocol", None)
    transport = getattr(connection, "_transport", None)
    if (
        transport is None
        or protocol is None
        or getattr(protocol, "_transport", None) is not transport
    ):
        raise TypeError("gmqtt connection without the expected _transport/_protocol")
    wrapper = CoalescingTransport(transport, stats)
    connection._transport = wrapper
    protocol._transport = wrapper
    return wrapper

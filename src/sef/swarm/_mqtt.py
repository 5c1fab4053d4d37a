"""A lean MQTT 3.1.1 client over :class:`asyncio.Protocol`, one object per connection.

``sef swarm`` holds tens of thousands of connections in one process; a general client
costs too much per connection for that (see :mod:`sef.swarm` for the measured figures).
This one does only what a SEF agent needs: CONNECT with a will and a clean session,
SUBSCRIBE (all filters in one packet), PUBLISH at QoS 0 or 1 (PUBACKs counted, not
tracked: a clean session drops unacknowledged messages anyway), receiving PUBLISH at
QoS 0/1 (answered with PUBACK), PINGREQ (sent by the caller's keepalive ticker, not by a
timer per connection) and DISCONNECT. No QoS 2, no MQTT 5, no retransmission.

Subclasses implement the ``on_*`` hooks; the same object serves every connection of one
client (``loop.create_connection(lambda: obj, ...)`` again after a loss).
"""

from __future__ import annotations

import asyncio
import struct
import time
from typing import cast

__all__ = [
    "CONNACK_CODES",
    "MqttConnection",
    "MqttProtocolError",
    "connect_packet",
    "publish_packet",
    "subscribe_packet",
]

PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"
CONNACK_CODES = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}
"""MQTT 3.1.1 CONNACK return codes other than 0 (accepted)."""


class MqttProtocolError(Exception):
    """The broker sent something this client cannot read (the connection is closed)."""


def _length(n: int) -> bytes:
    """MQTT "remaining length" variable-byte integer."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _str(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def connect_packet(
    client_id: str,
    keepalive_s: int,
    will_topic: str | None = None,
    will_payload: bytes = b"",
    *,
    username: str | None = None,
    password: str | None = None,
) -> bytes:
    """CONNECT, clean session; the will (if any) at QoS 1, retained."""
    flags = 0x02
    payload = _str(client_id.encode())
    if will_topic is not None:
        flags |= 0x04 | 0x08 | 0x20
        payload += _str(will_topic.encode()) + _str(will_payload)
    if username is not None:
        flags |= 0x80
        payload += _str(username.encode())
        if password is not None:
            flags |= 0x40
            payload += _str(password.encode())
    body = b"\x00\x04MQTT\x04" + bytes((flags,)) + struct.pack("!H", keepalive_s) + payload
    return b"\x10" + _length(len(body)) + body


def subscribe_packet(packet_id: int, filters: list[str], qos: int = 1) -> bytes:
    """SUBSCRIBE to every filter at ``qos`` in one packet."""
    body = struct.pack("!H", packet_id) + b"".join(
        _str(f.encode()) + bytes((qos,)) for f in filters
    )
    return b"\x82" + _length(len(body)) + body


def publish_packet(
    topic: bytes, payload: bytes, qos: int = 1, retain: bool = False, packet_id: int = 0
) -> bytes:
    """PUBLISH (``topic`` already UTF-8 encoded)."""
    header = 0x30 | (qos << 1) | (1 if retain else 0)
    body_len = 2 + len(topic) + (2 if qos else 0) + len(payload)
    pid = struct.pack("!H", packet_id) if qos else b""
    return b"".join(
        (bytes((header,)), _length(body_len), struct.pack("!H", len(topic)), topic, pid, payload)
    )


class MqttConnection(asyncio.Protocol):
    """One MQTT client: the protocol object of each of its TCP connections in turn.

    Attributes:
        transport: the current connection, ``None`` while disconnected.
        up: CONNACK received (accepted) on the current connection.
        inflight: QoS 1 publishes sent and not yet acknowledged on this connection.
        last_tx: monotonic time of the last packet sent, s (for the keepalive).
        last_rx: monotonic time of the last packet received, s.
    """

    __slots__ = ("_batch", "_buf", "_pid", "inflight", "last_rx", "last_tx", "transport", "up")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.up = False
        self._buf = b""
        self._batch: list[bytes] | None = None
        """While incoming packets are handled: what they send, written at once after."""
        self._pid = 0
        self.inflight = 0
        self.last_tx = 0.0
        self.last_rx = 0.0

    # -- hooks ------------------------------------------------------------------------
    def on_socket(self) -> None:
        """TCP connected: send CONNECT now (:meth:`send`)."""

    def on_connack(self, code: int, session_present: bool) -> None:
        """CONNACK with return ``code`` (0 accepted, else :data:`CONNACK_CODES`)."""

    def on_suback(self, packet_id: int, codes: bytes) -> None:
        """SUBACK: one granted QoS (or 0x80 failure) per filter."""

    def on_publish(self, topic: str, payload: bytes, retain: bool) -> None:
        """An incoming PUBLISH (already acknowledged if QoS 1)."""

    def on_puback(self, packet_id: int) -> None:
        """PUBACK of our QoS 1 publish ``packet_id``."""

    def on_lost(self, exc: Exception | None) -> None:
        """The connection closed (``exc`` None: closed cleanly)."""

    # -- sending ----------------------------------------------------------------------
    def next_packet_id(self) -> int:
        self._pid = self._pid % 65535 + 1
        return self._pid

    def send(self, data: bytes) -> bool:
        """Write raw packet bytes; returns False when not connected."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        if self._batch is not None:  # one write (one syscall) per received chunk
            self._batch.append(data)
        else:
            transport.write(data)
            self.last_tx = time.monotonic()
        return True

    def publish(self, topic: bytes, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """PUBLISH one message; returns False when not connected (nothing is kept)."""
        if not self.up:
            return False
        pid = self.next_packet_id() if qos else 0
        if self.send(publish_packet(topic, payload, qos, retain, pid)):
            if qos:
                self.inflight += 1
            return True
        return False

    def ping(self) -> None:
        """PINGREQ (the keepalive ticker calls it when nothing was sent for a while)."""
        self.send(PINGREQ)

    def close(self, disconnect: bool = True) -> None:
        """Close the connection; with ``disconnect`` send DISCONNECT first (no will)."""
        transport = self.transport
        if transport is None:
            return
        if disconnect and self.up:
            transport.write(DISCONNECT)
        transport.close()

    def abort(self) -> None:
        """Drop the connection without DISCONNECT (the broker publishes the will)."""
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (uvloop's is not a subclass of asyncio.Transport)
        self.transport = cast(asyncio.Transport, transport)
        self.up = False
        self._buf = b""
        self.inflight = 0
        self.last_rx = time.monotonic()
        self.on_socket()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.up = False
        self._buf = b""
        self.on_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._batch = []
        try:
            self._received(data)
        finally:
            batch, self._batch = self._batch, None
            if batch and self.transport is not None and not self.transport.is_closing():
                self.transport.write(b"".join(batch))
                self.last_tx = time.monotonic()

    def _received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        buf = self._buf + data if self._buf else data
        pos, end = 0, len(buf)
        try:
            while end - pos >= 2:
                header = buf[pos]
                length, mult, i, complete = 0, 1, pos + 1, False
                while i < end:
                    byte = buf[i]
                    i += 1
                    length += (byte & 0x7F) * mult
                    if byte < 0x80:
                        complete = True
                        break
                    mult <<= 7
                    if mult > 1 << 21:
                        raise MqttProtocolError("remaining length over 4 bytes")
                if not complete or i + length > end:
                    break  # incomplete packet: wait for more
                self._packet(header, buf[i : i + length])
                pos = i + length
        except (MqttProtocolError, UnicodeDecodeError, IndexError, struct.error) as exc:
            self._buf = b""
            if self.transport is not None:
                self.transport.abort()
            self.on_lost(MqttProtocolError(f"bad packet from broker: {exc}"))
            return
        self._buf = buf[pos:] if pos < end else b""

    def _packet(self, header: int, body: bytes) -> None:
        kind = header >> 4
        if kind == 3:  # PUBLISH
            qos = (header >> 1) & 3
            tlen = (body[0] << 8) | body[1]
            topic = body[2 : 2 + tlen].decode()
            at = 2 + tlen
            if qos:
                pid = body[at : at + 2]
                at += 2
                if qos == 1:
                    self.send(b"\x40\x02" + pid)
                else:
                    raise MqttProtocolError("QoS 2 delivery (this client subscribes at QoS 1)")
            self.on_publish(topic, body[at:], bool(header & 1))
        elif kind == 4:  # PUBACK
            if self.inflight:
                self.inflight -= 1
            self.on_puback((body[0] << 8) | body[1])
        elif kind == 2:  # CONNACK
            code = body[1]
            self.up = code == 0
            self.on_connack(code, bool(body[0] & 1))
        elif kind == 9:  # SUBACK
            self.on_suback((body[0] << 8) | body[1], body[2:])
        elif kind == 13:  # PINGRESP
            pass
        else:
            raise MqttProtocolError(f"unexpected packet type {kind}")

"""Framing: ``MT1 MT2 LEN_HI LEN_LO payload CK1 CK2``, link ACK/NAK, and the deframer.

The :class:`Deframer` turns an arbitrary byte stream (with the arrival time of each chunk)
into link events: message frames, link ACK/NAK frames and framing errors that a receiver
answers with a link NAK (invalid byte, invalid length, checksum error, message timeout).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from ._checksum import checksum, verify_checksum
from ._errors import CtaDecodeError, NakReason, logger

__all__ = [
    "ACK_BYTE",
    "BASIC_DR",
    "DATA_LINK",
    "FRAME_START_BYTES",
    "HEADER_LEN",
    "INTERMEDIATE_DR",
    "LINK_ACK",
    "MAX_PAYLOAD_LEN",
    "NAK_BYTE",
    "PARTIAL_FRAME_TIMEOUT_S",
    "AckFrame",
    "Deframer",
    "DeframerEvent",
    "Frame",
    "FrameError",
    "Message",
    "MessageTypeQuery",
    "NakFrame",
    "encode_frame",
    "parse_frame",
]

BASIC_DR = (0x08, 0x01)
INTERMEDIATE_DR = (0x08, 0x02)
DATA_LINK = (0x08, 0x03)
ACK_BYTE = 0x06
NAK_BYTE = 0x15
LINK_ACK = b"\x06\x00"
HEADER_LEN = 4
#: Largest payload any CTA-2045 device can announce (max-payload code 13 = 4096 bytes).
MAX_PAYLOAD_LEN = 4096
#: tML: a partial frame older than this is dropped and answered with NAK 05 [≥2 src].
PARTIAL_FRAME_TIMEOUT_S = 0.5
#: First bytes that start a checksummed frame: 08 (DR / data link) and 09 (pass-through),
#: as the notes' section 10 recommends. Vendor types F0–FF are treated as garbage: accepting
#: them would let one noise byte ≥ 0xF0 swallow up to 4 KiB of following traffic.
FRAME_START_BYTES = frozenset({0x08, 0x09})


def encode_frame(mt1: int, mt2: int, payload: bytes = b"") -> bytes:
    """Build a complete frame: header, payload and check bytes."""
    if not (0 <= mt1 <= 0xFF and 0 <= mt2 <= 0xFF):
        raise ValueError(f"message type bytes out of range: {mt1!r} {mt2!r}")
    if len(payload) > 0xFFFF:
        raise ValueError(f"payload too long: {len(payload)} bytes")
    body = bytes((mt1, mt2, len(payload) >> 8, len(payload) & 0xFF)) + bytes(payload)
    return body + checksum(body)


@dataclass(frozen=True)
class Frame:
    """A checksummed message frame. An empty payload is a Message-Type-Supported Query."""

    mt1: int
    mt2: int
    payload: bytes = b""

    @property
    def message_type(self) -> tuple[int, int]:
        """``(MT1, MT2)``."""
        return (self.mt1, self.mt2)

    @property
    def is_type_query(self) -> bool:
        """True for a Message-Type-Supported Query (LEN = 0)."""
        return not self.payload

    def encode(self) -> bytes:
        """Return the wire bytes."""
        return encode_frame(self.mt1, self.mt2, self.payload)


@dataclass(frozen=True)
class AckFrame:
    """Link ACK ``06 00`` (any second byte is accepted on receive)."""

    code: int = 0x00

    def encode(self) -> bytes:
        """Return the wire bytes."""
        return bytes((ACK_BYTE, self.code))


@dataclass(frozen=True)
class NakFrame:
    """Link NAK ``15 rr``."""

    reason: int

    def encode(self) -> bytes:
        """Return the wire bytes."""
        return bytes((NAK_BYTE, self.reason))


@dataclass(frozen=True)
class FrameError:
    """Bytes the deframer rejected; a receiver answers with ``15 reason``."""

    reason: NakReason
    data: bytes
    detail: str


DeframerEvent = Frame | AckFrame | NakFrame | FrameError


def parse_frame(data: bytes, max_payload: int = MAX_PAYLOAD_LEN) -> Frame | AckFrame | NakFrame:
    """Parse exactly one complete frame; raise :class:`CtaDecodeError` otherwise."""
    data = bytes(data)
    if len(data) < 2:
        raise CtaDecodeError(f"frame too short: {data.hex(' ')}", NakReason.INVALID_LENGTH)
    first = data[0]
    if first in (ACK_BYTE, NAK_BYTE):
        if len(data) != 2:
            raise CtaDecodeError(
                f"link ACK/NAK must be 2 bytes, got {len(data)}", NakReason.INVALID_LENGTH
            )
        return AckFrame(data[1]) if first == ACK_BYTE else NakFrame(data[1])
    if first not in FRAME_START_BYTES:
        raise CtaDecodeError(f"invalid first byte 0x{first:02X}", NakReason.INVALID_BYTE)
    if len(data) < HEADER_LEN + 2:
        raise CtaDecodeError(f"frame too short: {len(data)} bytes", NakReason.INVALID_LENGTH)
    length = (data[2] << 8) | data[3]
    if length > max_payload:
        raise CtaDecodeError(
            f"LEN {length} exceeds the max payload {max_payload}", NakReason.INVALID_LENGTH
        )
    if len(data) != HEADER_LEN + length + 2:
        raise CtaDecodeError(
            f"LEN {length} needs {HEADER_LEN + length + 2} bytes, got {len(data)}",
            NakReason.INVALID_LENGTH,
        )
    if not verify_checksum(data):
        raise CtaDecodeError(
            f"checksum {data[-2:].hex(' ')} should be {checksum(data[:-2]).hex(' ')}",
            NakReason.CHECKSUM_ERROR,
        )
    return Frame(data[0], data[1], data[HEADER_LEN:-2])


class Deframer:
    """Incremental byte-stream deframer with resync and the partial-frame timeout.

    Feed it chunks with their arrival time (any monotonic clock, in seconds). A frame that
    is still incomplete ``timeout_s`` after its first byte arrived is dropped and reported as
    a :class:`FrameError` with reason ``MESSAGE_TIMEOUT`` (answered with NAK 05). Bytes that
    cannot start a frame are skipped; each run of them is reported once as ``INVALID_BYTE``.
    """

    def __init__(
        self, timeout_s: float = PARTIAL_FRAME_TIMEOUT_S, max_payload: int = MAX_PAYLOAD_LEN
    ) -> None:
        self.timeout_s = timeout_s
        self.max_payload = max_payload
        self._buf = bytearray()
        self._since: float | None = None
        self._in_garbage = False

    @property
    def pending(self) -> bytes:
        """Bytes of the incomplete frame currently buffered."""
        return bytes(self._buf)

    @property
    def deadline(self) -> float | None:
        """Time at which the buffered partial frame expires, or None if nothing is buffered."""
        return None if self._since is None else self._since + self.timeout_s

    def poll(self, now: float) -> list[DeframerEvent]:
        """Expire a partial frame whose deadline has passed."""
        deadline = self.deadline
        if deadline is None or now < deadline:
            return []
        data = bytes(self._buf)
        self._buf.clear()
        self._since = None
        self._in_garbage = False
        detail = f"partial frame {data.hex(' ')} not completed within {self.timeout_s:.3f} s"
        logger.debug("dropping %s", detail)  # the link reports it (throttled)
        return [FrameError(NakReason.MESSAGE_TIMEOUT, data, detail)]

    def feed(self, data: bytes, now: float) -> list[DeframerEvent]:
        """Add received bytes and return every event they complete, in order."""
        events = self.poll(now)
        if not data:
            return events
        self._buf += data
        consumed = self._parse(events)
        if not self._buf:
            self._since = None
        elif consumed or self._since is None:
            self._since = now
        return events

    def _garbage(self, events: list[DeframerEvent], reason: NakReason, detail: str) -> None:
        bad = bytes(self._buf[:1])
        del self._buf[:1]
        if not self._in_garbage:
            logger.debug("resync: %s", detail)  # the link reports it (throttled)
            events.append(FrameError(reason, bad, detail))
        self._in_garbage = True

    def _parse(self, events: list[DeframerEvent]) -> bool:
        consumed = False
        buf = self._buf
        while buf:
            first = buf[0]
            if first in (ACK_BYTE, NAK_BYTE):
                if len(buf) < 2:
                    break
                events.append(AckFrame(buf[1]) if first == ACK_BYTE else NakFrame(buf[1]))
                del buf[:2]
                self._in_garbage = False
            elif first in FRAME_START_BYTES:
                if len(buf) < HEADER_LEN:
                    break
                length = (buf[2] << 8) | buf[3]
                if length > self.max_payload:
                    self._garbage(
                        events,
                        NakReason.INVALID_LENGTH,
                        f"LEN {length} exceeds the max payload {self.max_payload}",
                    )
                    consumed = True
                    continue
                total = HEADER_LEN + length + 2
                if len(buf) < total:
                    break
                raw = bytes(buf[:total])
                del buf[:total]
                self._in_garbage = False
                if verify_checksum(raw):
                    events.append(Frame(raw[0], raw[1], raw[HEADER_LEN:-2]))
                else:
                    detail = (
                        f"checksum error in {raw.hex(' ')} (expected {checksum(raw[:-2]).hex(' ')})"
                    )
                    logger.debug(detail)  # the link reports it (throttled)
                    events.append(FrameError(NakReason.CHECKSUM_ERROR, raw, detail))
            else:
                self._garbage(events, NakReason.INVALID_BYTE, f"invalid byte 0x{first:02X}")
            consumed = True
        return consumed


class Message(ABC):
    """An application or data-link message that can be framed."""

    MT1: ClassVar[int] = 0x08
    MT2: ClassVar[int]

    @property
    def message_type(self) -> tuple[int, int]:
        """``(MT1, MT2)`` of the frame that carries this message."""
        return (self.MT1, self.MT2)

    @abstractmethod
    def payload(self) -> bytes:
        """The frame payload (without header and checksum)."""

    def to_frame(self) -> Frame:
        """The frame carrying this message."""
        mt1, mt2 = self.message_type
        return Frame(mt1, mt2, self.payload())

    def encode(self) -> bytes:
        """The complete wire bytes."""
        mt1, mt2 = self.message_type
        return encode_frame(mt1, mt2, self.payload())

    def is_reply(self, other: Message) -> bool:
        """True if ``other`` is the application response this message asks for."""
        return False


@dataclass(frozen=True)
class MessageTypeQuery(Message):
    """Message-Type-Supported Query: a header with LEN = 0 plus checksum.

    The answer is only a link ACK (supported) or NAK 06 (not supported).
    """

    mt1: int = 0x08
    mt2: int = 0x01

    @property
    def message_type(self) -> tuple[int, int]:
        """The message type being queried."""
        return (self.mt1, self.mt2)

    def payload(self) -> bytes:
        """Always empty."""
        return b""

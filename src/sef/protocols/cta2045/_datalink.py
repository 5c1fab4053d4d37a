"""Data-link messages (MT ``08 03``, payload ``[opcode1, opcode2]``), reference notes 5.3."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from ._errors import CtaDecodeError, CtaUnsupportedRequest, NakReason
from ._frame import Message

__all__ = [
    "BIT_RATES",
    "MAX_PAYLOAD_CODES",
    "BitRateRequest",
    "DataLinkMessage",
    "DataLinkOpcode",
    "MaxPayloadQuery",
    "MaxPayloadReply",
    "PowerModeRequest",
    "decode_datalink",
    "max_payload_code",
]


class DataLinkOpcode(IntEnum):
    """Data-link opcode1 values."""

    POWER_MODE = 0x16
    BIT_RATE = 0x17
    MAX_PAYLOAD_QUERY = 0x18
    MAX_PAYLOAD_REPLY = 0x19


#: Max-payload code → bytes [≥2 src].
MAX_PAYLOAD_CODES: tuple[int, ...] = (
    2,
    4,
    8,
    16,
    32,
    64,
    128,
    256,
    512,
    1024,
    1280,
    1500,
    2048,
    4096,
)
#: Bit-rate code → baud.
BIT_RATES: tuple[int, ...] = (
    19200,
    38400,
    57600,
    115200,
    230400,
    460800,
    921600,
    1843200,
    3686400,
)


def max_payload_code(length: int) -> int:
    """Largest max-payload code whose size does not exceed ``length`` bytes."""
    if length < MAX_PAYLOAD_CODES[0]:
        raise ValueError(f"max payload must be >= 2 bytes, got {length}")
    return max(i for i, size in enumerate(MAX_PAYLOAD_CODES) if size <= length)


@dataclass(frozen=True)
class DataLinkMessage(Message):
    """Base of data-link messages."""

    MT2: ClassVar[int] = 0x03
    OPCODE: ClassVar[int]
    #: Valid opcode2 values.
    RANGE: ClassVar[range] = range(256)
    value: int = 0

    def __post_init__(self) -> None:
        if self.value not in self.RANGE:
            raise ValueError(
                f"{type(self).__name__}: opcode2 {self.value!r} outside {self.RANGE.start}.."
                f"{self.RANGE.stop - 1}"
            )

    def payload(self) -> bytes:
        """``[opcode1, opcode2]``."""
        return bytes((self.OPCODE, self.value))


class PowerModeRequest(DataLinkMessage):
    """Request different power mode (16, mode 0–5); answered by link ACK only."""

    OPCODE = DataLinkOpcode.POWER_MODE
    RANGE = range(6)


class BitRateRequest(DataLinkMessage):
    """Request different bit rate (17, code 0–8); answered by link ACK only."""

    OPCODE = DataLinkOpcode.BIT_RATE
    RANGE = range(len(BIT_RATES))

    @property
    def baud(self) -> int:
        """The requested bit rate."""
        return BIT_RATES[self.value]


class MaxPayloadQuery(DataLinkMessage):
    """Query maximum payload length (18 00); answered by :class:`MaxPayloadReply`."""

    OPCODE = DataLinkOpcode.MAX_PAYLOAD_QUERY

    def is_reply(self, other: Message) -> bool:
        return isinstance(other, MaxPayloadReply)


class MaxPayloadReply(DataLinkMessage):
    """Maximum payload length response (19 code); code 0–13 → 2…4096 bytes."""

    OPCODE = DataLinkOpcode.MAX_PAYLOAD_REPLY
    RANGE = range(len(MAX_PAYLOAD_CODES))

    @classmethod
    def for_length(cls, length: int) -> MaxPayloadReply:
        """Reply announcing the largest code not above ``length`` bytes."""
        return cls(max_payload_code(length))

    @property
    def max_payload(self) -> int:
        """The announced maximum payload in bytes."""
        return MAX_PAYLOAD_CODES[self.value]


_CLASSES: dict[int, type[DataLinkMessage]] = {
    c.OPCODE: c for c in (PowerModeRequest, BitRateRequest, MaxPayloadQuery, MaxPayloadReply)
}


def decode_datalink(payload: bytes) -> DataLinkMessage:
    """Decode a data-link payload; raise :class:`CtaDecodeError` with the NAK reason."""
    if len(payload) != 2:
        raise CtaDecodeError(
            f"data-link payload must be 2 bytes, got {len(payload)}", NakReason.INVALID_LENGTH
        )
    cls = _CLASSES.get(payload[0])
    if cls is None:
        raise CtaUnsupportedRequest(
            f"unsupported data-link opcode 0x{payload[0]:02X}", (0x08, 0x03), payload
        )
    try:
        return cls(payload[1])
    except ValueError as exc:
        raise CtaDecodeError(str(exc), NakReason.INVALID_BYTE) from exc

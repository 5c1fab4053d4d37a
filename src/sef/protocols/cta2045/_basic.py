"""Basic DR application messages (MT ``08 01``, payload ``[opcode1, opcode2]``).

Most messages carry one byte field as opcode2 (:class:`_ByteMessage`); the byte encodings
of durations, relative prices and power levels are in :mod:`._encodings`.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from ._basic_codes import AppNakReason, BasicOpcode, CommStatus, GuidanceLevel, OperationalState
from ._encodings import (
    DURATION_UNSPECIFIED,
    decode_duration,
    decode_power_level,
    decode_relative_price,
    encode_power_level,
)
from ._errors import CtaDecodeError, CtaUnsupportedRequest, NakReason, logger
from ._fields import as_enum, check_byte
from ._frame import Message

__all__ = [
    "AppAck",
    "AppNak",
    "BasicMessage",
    "CriticalPeak",
    "CustomerOverride",
    "EndShed",
    "GridEmergency",
    "GridGuidance",
    "LoadUp",
    "NextRelativePrice",
    "OperationalStateQuery",
    "OperationalStateResponse",
    "OutsideCommStatus",
    "PendingEventTime",
    "PendingEventType",
    "PowerLevel",
    "PresentRelativePrice",
    "Shed",
    "SimpleTimeSync",
    "Sleep",
    "TimeRemaining",
    "Wake",
    "decode_basic",
]


# --- message bases ----------------------------------------------------------------------

_REGISTRY: dict[int, type[BasicMessage]] = {}


@dataclass(frozen=True)
class BasicMessage(Message):
    """Base of Basic DR messages; subclasses define ``opcode2`` and :meth:`from_opcode2`.

    A concrete message names its opcode1 as a class keyword (``class Shed(…,
    opcode=BasicOpcode.SHED)``), which sets ``OPCODE`` and registers it for decoding.
    """

    MT2: ClassVar[int] = 0x01
    OPCODE: ClassVar[int]
    #: False for the responses (App ACK / NAK, Operational State Response).
    EXPECTS_REPLY: ClassVar[bool] = True

    def __init_subclass__(cls, opcode: BasicOpcode | None = None, **kwargs: object) -> None:
        super().__init_subclass__()
        if opcode is not None:
            cls.OPCODE = opcode
            _REGISTRY[opcode] = cls

    @property
    @abstractmethod
    def opcode2(self) -> int:
        """The second payload byte."""

    def payload(self) -> bytes:
        """``[opcode1, opcode2]``."""
        return bytes((self.OPCODE, self.opcode2))

    @classmethod
    @abstractmethod
    def from_opcode2(cls, value: int) -> BasicMessage:
        """Build the message from a received opcode2 (raise ValueError if invalid)."""

    def is_reply(self, other: Message) -> bool:
        """Commands are answered by App ACK with our opcode, or by App NAK."""
        if not self.EXPECTS_REPLY:
            return False
        return isinstance(other, AppNak) or (
            isinstance(other, AppAck) and other.opcode == self.OPCODE
        )


@dataclass(frozen=True)
class _ByteMessage(BasicMessage):
    """A message whose opcode2 is its one byte field, the one named by FIELD.

    On decode a value of the DECODE_AS enum becomes its member; other values stay int.
    """

    FIELD: ClassVar[str]
    DECODE_AS: ClassVar[type[IntEnum] | None] = None

    def __post_init__(self) -> None:
        check_byte(self.FIELD, self.opcode2)

    @property
    def opcode2(self) -> int:
        value: int = getattr(self, self.FIELD)
        return value

    @classmethod
    def from_opcode2(cls, value: int) -> BasicMessage:
        decoded = value if cls.DECODE_AS is None else as_enum(cls.DECODE_AS, value)
        return cls(**{cls.FIELD: decoded})


@dataclass(frozen=True)
class _ArgMessage(_ByteMessage):
    """A message whose opcode2 is a plain byte argument (usually 0)."""

    FIELD = "arg"
    arg: int = 0


@dataclass(frozen=True)
class _DurationMessage(_ByteMessage):
    """A command whose opcode2 is a duration byte (2·n² seconds)."""

    FIELD = "duration_code"
    duration_code: int = DURATION_UNSPECIFIED

    @property
    def duration_s(self) -> int:
        """Duration in seconds (0 = unspecified); see :func:`decode_duration`."""
        return decode_duration(self.duration_code)


@dataclass(frozen=True)
class _PriceMessage(_ByteMessage):
    """A relative-price byte (build it with ``encode_relative_price(ratio)``)."""

    FIELD = "code"
    code: int = 0

    @property
    def ratio(self) -> float | None:
        """Relative price (None = unknown, inf = too large)."""
        return decode_relative_price(self.code)


@dataclass(frozen=True)
class _EnumMessage(_ByteMessage):
    """opcode2 restricted to the values of DECODE_AS."""

    FIELD = "value"
    DECODE_AS: ClassVar[type[IntEnum]]
    value: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.value not in self.DECODE_AS._value2member_map_:
            raise ValueError(f"{type(self).__name__}: invalid value {self.value}")


# --- messages, by opcode ----------------------------------------------------------------


class Shed(_DurationMessage, opcode=BasicOpcode.SHED):
    """Shed (01) for ``duration_code`` (use ``Shed(encode_duration(seconds))``)."""


class EndShed(_ArgMessage, opcode=BasicOpcode.END_SHED):
    """End Shed / Run Normal (02); opcode2 is sent as 0."""


@dataclass(frozen=True)
class AppAck(_ByteMessage, opcode=BasicOpcode.APP_ACK):
    """Application ACK (03) of the message whose opcode1 is ``opcode``."""

    FIELD = "opcode"
    DECODE_AS = BasicOpcode
    EXPECTS_REPLY = False
    opcode: int = 0


@dataclass(frozen=True)
class AppNak(_ByteMessage, opcode=BasicOpcode.APP_NAK):
    """Application NAK (04) with an :class:`AppNakReason` (unknown codes kept as int)."""

    FIELD = "reason"
    DECODE_AS = AppNakReason
    EXPECTS_REPLY = False
    reason: int = AppNakReason.NO_REASON


@dataclass(frozen=True)
class PowerLevel(_ByteMessage, opcode=BasicOpcode.POWER_LEVEL):
    """Request for Power Level (06): ``code`` bit 7 = produce, bits 0–6 = level/127."""

    FIELD = "code"
    code: int = 0

    @classmethod
    def from_percent(cls, percent: float, produce: bool = False) -> PowerLevel:
        """Build from a percentage of rated power."""
        return cls(encode_power_level(percent, produce))

    @property
    def percent(self) -> float:
        """Level in percent of rated power."""
        return decode_power_level(self.code)[0]

    @property
    def produce(self) -> bool:
        """True for produce, False for absorb/consume."""
        return bool(self.code & 0x80)


class PresentRelativePrice(_PriceMessage, opcode=BasicOpcode.PRESENT_RELATIVE_PRICE):
    """Present Relative Price (07); build with ``encode_relative_price(ratio)``."""


class NextRelativePrice(_PriceMessage, opcode=BasicOpcode.NEXT_RELATIVE_PRICE):
    """Next Period Relative Price (08)."""


class TimeRemaining(_DurationMessage, opcode=BasicOpcode.TIME_REMAINING):
    """Time Remaining in Present Price Period (09)."""


class CriticalPeak(_DurationMessage, opcode=BasicOpcode.CRITICAL_PEAK):
    """Critical Peak Event (0A)."""


class GridEmergency(_DurationMessage, opcode=BasicOpcode.GRID_EMERGENCY):
    """Grid Emergency (0B)."""


class GridGuidance(_EnumMessage, opcode=BasicOpcode.GRID_GUIDANCE):
    """Grid Guidance (0C): ``value`` is a :class:`GuidanceLevel`."""

    DECODE_AS = GuidanceLevel


class OutsideCommStatus(_EnumMessage, opcode=BasicOpcode.OUTSIDE_COMM_STATUS):
    """Outside Communication Connection Status (0E): ``value`` is a :class:`CommStatus`."""

    DECODE_AS = CommStatus


@dataclass(frozen=True)
class CustomerOverride(BasicMessage, opcode=BasicOpcode.CUSTOMER_OVERRIDE):
    """Customer Override (11): 1 = override in effect, 0 = no longer in effect."""

    active: bool = True

    @property
    def opcode2(self) -> int:
        return 1 if self.active else 0

    @classmethod
    def from_opcode2(cls, value: int) -> BasicMessage:
        if value not in (0, 1):
            raise ValueError(f"customer override must be 0 or 1, got {value}")
        return cls(value == 1)


class OperationalStateQuery(_ArgMessage, opcode=BasicOpcode.OPERATIONAL_STATE_QUERY):
    """Operational State Query (12); the answer is an Operational State Response."""

    def is_reply(self, other: Message) -> bool:
        return isinstance(other, OperationalStateResponse | AppNak)


@dataclass(frozen=True)
class OperationalStateResponse(_ByteMessage, opcode=BasicOpcode.OPERATIONAL_STATE_RESPONSE):
    """Operational State Response (13) with an :class:`OperationalState` (unknown kept)."""

    FIELD = "state"
    DECODE_AS = OperationalState
    EXPECTS_REPLY = False
    state: int = OperationalState.IDLE_NORMAL


class Sleep(_ArgMessage, opcode=BasicOpcode.SLEEP):
    """Sleep (14), sent by the SGD."""


class Wake(_ArgMessage, opcode=BasicOpcode.WAKE):
    """Wake / Refresh (15), sent by the SGD."""


@dataclass(frozen=True)
class SimpleTimeSync(BasicMessage, opcode=BasicOpcode.SIMPLE_TIME_SYNC):
    """Simple Time Sync (16): opcode2 = ``weekday << 5 | hour`` (weekday 0 = Sunday)."""

    weekday: int = 0
    hour: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.weekday <= 6 and 0 <= self.hour <= 23):
            raise ValueError(f"weekday 0–6 and hour 0–23 required: {self.weekday}, {self.hour}")

    @property
    def opcode2(self) -> int:
        return (self.weekday << 5) | self.hour

    @classmethod
    def from_opcode2(cls, value: int) -> BasicMessage:
        return cls(value >> 5, value & 0x1F)


class LoadUp(_DurationMessage, opcode=BasicOpcode.LOAD_UP):
    """Load Up (17)."""


class PendingEventTime(_DurationMessage, opcode=BasicOpcode.PENDING_EVENT_TIME):
    """Pending Event Time (18): time until the pending event starts."""


@dataclass(frozen=True)
class PendingEventType(_ByteMessage, opcode=BasicOpcode.PENDING_EVENT_TYPE):
    """Pending Event Type (19): opcode1 of the pending event (01, 02, 0A, 0B, 17)."""

    FIELD = "event_opcode"
    DECODE_AS = BasicOpcode
    event_opcode: int = BasicOpcode.SHED


def decode_basic(payload: bytes) -> BasicMessage:
    """Decode a Basic DR payload; raise :class:`CtaDecodeError` with the NAK reason."""
    if len(payload) != 2:
        raise CtaDecodeError(
            f"Basic DR payload must be 2 bytes, got {len(payload)}", NakReason.INVALID_LENGTH
        )
    op1, op2 = payload[0], payload[1]
    cls = _REGISTRY.get(op1)
    if cls is None:
        raise CtaUnsupportedRequest(
            f"unsupported Basic DR opcode1 0x{op1:02X}", (0x08, 0x01), payload
        )
    try:
        message = cls.from_opcode2(op2)
    except ValueError as exc:
        raise CtaDecodeError(f"Basic DR {cls.__name__}: {exc}", NakReason.INVALID_BYTE) from exc
    logger.debug("decoded %r", message)
    return message

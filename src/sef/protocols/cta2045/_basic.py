"""Basic DR application messages (MT ``08 01``, payload ``[opcode1, opcode2]``).

Byte encodings follow the reference notes section 6: event durations 2·n² s (rounded up),
relative price ``(n−1)(n+63)/8192``, power level on the /127 scale with bit 7 = produce.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, TypeVar

from ._errors import CtaDecodeError, NakReason, logger
from ._frame import Message

__all__ = [
    "DURATION_MAX_S",
    "DURATION_OVER_MAX",
    "DURATION_UNSPECIFIED",
    "AppAck",
    "AppNak",
    "AppNakReason",
    "BasicMessage",
    "BasicOpcode",
    "CommStatus",
    "CriticalPeak",
    "CustomerOverride",
    "EndShed",
    "GridEmergency",
    "GridGuidance",
    "GuidanceLevel",
    "LoadUp",
    "NextRelativePrice",
    "OperationalState",
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
    "decode_duration",
    "decode_power_level",
    "decode_relative_price",
    "encode_duration",
    "encode_power_level",
    "encode_relative_price",
]


class BasicOpcode(IntEnum):
    """Basic DR opcode1 values [≥2 src]."""

    SHED = 0x01
    END_SHED = 0x02
    APP_ACK = 0x03
    APP_NAK = 0x04
    POWER_LEVEL = 0x06
    PRESENT_RELATIVE_PRICE = 0x07
    NEXT_RELATIVE_PRICE = 0x08
    TIME_REMAINING = 0x09
    CRITICAL_PEAK = 0x0A
    GRID_EMERGENCY = 0x0B
    GRID_GUIDANCE = 0x0C
    OUTSIDE_COMM_STATUS = 0x0E
    CUSTOMER_OVERRIDE = 0x11
    OPERATIONAL_STATE_QUERY = 0x12
    OPERATIONAL_STATE_RESPONSE = 0x13
    SLEEP = 0x14
    WAKE = 0x15
    SIMPLE_TIME_SYNC = 0x16
    LOAD_UP = 0x17
    PENDING_EVENT_TIME = 0x18
    PENDING_EVENT_TYPE = 0x19


class OperationalState(IntEnum):
    """Operational State Response opcode2 (0–12 [≥2 src]; 13–14 CTA-2045-B [1 src])."""

    IDLE_NORMAL = 0
    RUNNING_NORMAL = 1
    RUNNING_CURTAILED = 2
    RUNNING_HEIGHTENED = 3
    IDLE_CURTAILED = 4
    SGD_ERROR_CONDITION = 5
    IDLE_HEIGHTENED = 6
    CYCLING_ON = 7
    CYCLING_OFF = 8
    VARIABLE_FOLLOWING = 9
    VARIABLE_NOT_FOLLOWING = 10
    IDLE_OPTED_OUT = 11
    RUNNING_OPTED_OUT = 12
    RUNNING_PRICE_STREAM = 13
    IDLE_PRICE_STREAM = 14


class AppNakReason(IntEnum):
    """Application NAK (opcode 04) reasons [≥2 src]."""

    NO_REASON = 0
    OPCODE1_NOT_SUPPORTED = 1
    OPCODE2_INVALID = 2
    BUSY = 3
    LENGTH_INVALID = 4
    CUSTOMER_OVERRIDE = 5


class GuidanceLevel(IntEnum):
    """Grid Guidance opcode2."""

    BAD = 0
    NEUTRAL = 1
    GOOD = 2


class CommStatus(IntEnum):
    """Outside Communication Connection Status opcode2."""

    NO_CONNECTION = 0
    CONNECTED = 1
    POOR = 2


# --- field encodings ------------------------------------------------------------------

DURATION_UNSPECIFIED = 0x00
DURATION_OVER_MAX = 0xFF
#: Longest representable duration, n = 0xFE: 2·254² s (35.8 h).
DURATION_MAX_S = 2 * 0xFE * 0xFE


def encode_duration(seconds: float) -> int:
    """Encode seconds as the duration byte: smallest n with 2·n² ≥ seconds (never shortens).

    0 → 0x00 (unspecified), above 129 032 s → 0xFF ("longer than the maximum").
    """
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"duration must be >= 0 s, got {seconds!r}")
    if seconds == 0:
        return DURATION_UNSPECIFIED
    if seconds > DURATION_MAX_S:
        return DURATION_OVER_MAX
    n = max(1, math.isqrt(math.ceil(seconds) // 2))
    while 2 * n * n < seconds:
        n += 1
    return n


def decode_duration(code: int) -> int:
    """Seconds meant by a duration byte: 2·n².

    0x00 means unspecified (returned as 0) and 0xFF means "longer than 129 032 s"
    (returned as 2·255² = 130 050 s, a lower bound).
    """
    if not 0 <= code <= 0xFF:
        raise ValueError(f"duration byte out of range: {code!r}")
    return 2 * code * code


def _price(n: int) -> float:
    return (n - 1) * (n + 63) / 8192


def encode_relative_price(ratio: float | None) -> int:
    """Encode a price ratio (1.0 = normal); None → 0x00 (unknown), above 9.79 → 0xFF.

    Picks the nearest code, which reproduces the documented examples 0x41 = 1.0,
    0x65 = 2.0 and 0x99 = 4.0.
    """
    if ratio is None:
        return 0x00
    if math.isnan(ratio) or ratio < 0:
        raise ValueError(f"relative price must be >= 0, got {ratio!r}")
    if ratio > _price(0xFE):
        return 0xFF
    n = max(1, math.floor(-31 + 0.5 * math.sqrt(3844 + 4 * (63 + 8192 * ratio))))
    if n < 0xFE and abs(_price(n + 1) - ratio) < abs(_price(n) - ratio):
        n += 1
    return n


def decode_relative_price(code: int) -> float | None:
    """Price ratio of a relative-price byte; None for 0x00 (unknown), inf for 0xFF."""
    if not 0 <= code <= 0xFF:
        raise ValueError(f"relative price byte out of range: {code!r}")
    if code == 0:
        return None
    if code == 0xFF:
        return math.inf
    return _price(code)


def encode_power_level(percent: float, produce: bool = False) -> int:
    """Power-level byte: bits 0–6 = floor(percent·127/100), bit 7 = produce (50 % → 0x3F)."""
    if math.isnan(percent) or not 0 <= percent <= 100:
        raise ValueError(f"power level must be 0–100 %, got {percent!r}")
    level = min(127, math.floor(percent * 127 / 100 + 1e-9))
    return level | (0x80 if produce else 0)


def decode_power_level(code: int) -> tuple[float, bool]:
    """``(percent, produce)`` of a power-level byte."""
    if not 0 <= code <= 0xFF:
        raise ValueError(f"power level byte out of range: {code!r}")
    return (code & 0x7F) * 100 / 127, bool(code & 0x80)


# --- messages ---------------------------------------------------------------------------

_E = TypeVar("_E", bound=IntEnum)


def _as_enum(enum: type[_E], value: int) -> int:
    try:
        return enum(value)
    except ValueError:
        return value


def _check_byte(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise ValueError(f"{name} must be a byte 0..255, got {value!r}")


_REGISTRY: dict[int, type[BasicMessage]] = {}


@dataclass(frozen=True)
class BasicMessage(Message):
    """Base of Basic DR messages; subclasses define OPCODE and ``opcode2``."""

    MT2: ClassVar[int] = 0x01
    OPCODE: ClassVar[int]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__()
        if "OPCODE" in cls.__dict__:
            _REGISTRY[cls.OPCODE] = cls

    @property
    def opcode2(self) -> int:
        """The second payload byte."""
        raise NotImplementedError

    def payload(self) -> bytes:
        """``[opcode1, opcode2]``."""
        return bytes((self.OPCODE, self.opcode2))

    @classmethod
    def from_opcode2(cls, value: int) -> BasicMessage:
        """Build the message from a received opcode2 (raise ValueError if invalid)."""
        raise NotImplementedError

    def is_reply(self, other: Message) -> bool:
        """Commands are answered by App ACK with our opcode, or by App NAK."""
        return isinstance(other, AppNak) or (
            isinstance(other, AppAck) and other.opcode == self.OPCODE
        )


@dataclass(frozen=True)
class _ArgMessage(BasicMessage):
    """A message whose opcode2 is a plain byte argument (usually 0)."""

    arg: int = 0

    def __post_init__(self) -> None:
        _check_byte("arg", self.arg)

    @property
    def opcode2(self) -> int:
        return self.arg

    @classmethod
    def from_opcode2(cls, value: int) -> BasicMessage:
        return cls(value)


@dataclass(frozen=True)
class _DurationMessage(BasicMessage):
    """A command whose opcode2 is a duration byte (2·n² seconds)."""

    duration_code: int = DURATION_UNSPECIFIED

    def __post_init__(self) -> None:
        _check_byte("duration_code", self.duration_code)

    @property
    def opcode2(self) -> int:
        return self.duration_code

    @property
    def duration_s(self) -> int:
        """Duration in seconds (0 = unspecified); see :func:`decode_duration`."""
        return decode_duration(self.duration_code)

    @classmethod
    def from_opcode2(cls, value: int) -> BasicMessage:
        return cls(value)


class Shed(_DurationMessage):
    """Shed (01) for ``duration_code`` (use ``Shed(encode_duration(seconds))``)."""

    OPCODE = BasicOpcode.SHED


class EndShed(_ArgMessage):
    """End Shed / Run Normal (02); opcode2 is sent as 0."""

    OPCODE = BasicOpcode.END_SHED


class TimeRemaining(_DurationMessage):
    """Time Remaining in Present Price Period (09)."""

    OPCODE = BasicOpcode.TIME_REMAINING


class CriticalPeak(_DurationMessage):
    """Critical Peak Event (0A)."""

    OPCODE = BasicOpcode.CRITICAL_PEAK


class GridEmergency(_DurationMessage):
    """Grid Emergency (0B)."""

    OPCODE = BasicOpcode.GRID_EMERGENCY


class LoadUp(_DurationMessage):
    """Load Up (17)."""

    OPCODE = BasicOpcode.LOAD_UP


class PendingEventTime(_DurationMessage):
    """Pending Event Time (18): time until the pending event starts."""

    OPCODE = BasicOpcode.PENDING_EVENT_TIME


@dataclass(frozen=True)
class AppAck(BasicMessage):
    """Application ACK (03) of the message whose opcode1 is ``opcode``."""

    OPCODE = BasicOpcode.APP_ACK
    opcode: int = 0

    def __post_init__(self) -> None:
        _check_byte("opcode", self.opcode)

    @property
    def opcode2(self) -> int:
        return self.opcode

    @classmethod
    def from_opcode2(cls, value: int) -> BasicMessage:
        return cls(_as_enum(BasicOpcode, value))

    def is_reply(self, other: Message) -> bool:
        return False


@dataclass(frozen=True)
class AppNak(BasicMessage):
    """Application NAK (04) with an :class:`AppNakReason` (unknown codes kept as int)."""

    OPCODE = BasicOpcode.APP_NAK
    reason: int = AppNakReason.NO_REASON

    def __post_init__(self) -> None:
        _check_byte("reason", self.reason)

    @property
    def opcode2(self) -> int:
        return self.reason

    @classmethod
    def from_opcode2(cls, value: int) -> BasicMessage:
        return cls(_as_enum(AppNakReason, value))

    def is_reply(self, other: Message) -> bool:
        return False


@dataclass(frozen=True)
class PowerLevel(BasicMessage):
    """Request for Power Level (06): ``code`` bit 7 = produce, bits 0–6 = level/127."""

    OPCODE = BasicOpcode.POWER_LEVEL
    code: int = 0

    def __post_init__(self) -> None:
        _check_byte("code", self.code)

    @property
    def opcode2(self) -> int:
        return self.code

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

    @classmethod
    def from_opcode2(cls, value: int) -> BasicMessage:
        return cls(value)


@dataclass(frozen=True)
class _PriceMessage(BasicMessage):
    code: int = 0

    def __post_init__(self) -> None:
        _check_byte("code", self.code)

    @property
    def opcode2(self) -> int:
        return self.code

    @property
    def ratio(self) -> float | None:
        """Relative price (None = unknown, inf = too large)."""
        return decode_relative_price(self.code)

    @classmethod
    def from_opcode2(cls, value: int) -> BasicMessage:
        return cls(value)


class PresentRelativePrice(_PriceMessage):
    """Present Relative Price (07); build with ``encode_relative_price(ratio)``."""

    OPCODE = BasicOpcode.PRESENT_RELATIVE_PRICE


class NextRelativePrice(_PriceMessage):
    """Next Period Relative Price (08)."""

    OPCODE = BasicOpcode.NEXT_RELATIVE_PRICE


@dataclass(frozen=True)
class _EnumMessage(BasicMessage):
    """opcode2 restricted to the values of ENUM."""

    ENUM: ClassVar[type[IntEnum]]
    value: int = 0

    def __post_init__(self) -> None:
        _check_byte("value", self.value)
        if self.value not in self.ENUM._value2member_map_:
            raise ValueError(f"{type(self).__name__}: invalid value {self.value}")

    @property
    def opcode2(self) -> int:
        return self.value

    @classmethod
    def from_opcode2(cls, value: int) -> BasicMessage:
        return cls(cls.ENUM(value)) if value in cls.ENUM._value2member_map_ else cls(value)


class GridGuidance(_EnumMessage):
    """Grid Guidance (0C): ``value`` is a :class:`GuidanceLevel`."""

    OPCODE = BasicOpcode.GRID_GUIDANCE
    ENUM = GuidanceLevel


class OutsideCommStatus(_EnumMessage):
    """Outside Communication Connection Status (0E): ``value`` is a :class:`CommStatus`."""

    OPCODE = BasicOpcode.OUTSIDE_COMM_STATUS
    ENUM = CommStatus


@dataclass(frozen=True)
class CustomerOverride(BasicMessage):
    """Customer Override (11): 1 = override in effect, 0 = no longer in effect."""

    OPCODE = BasicOpcode.CUSTOMER_OVERRIDE
    active: bool = True

    @property
    def opcode2(self) -> int:
        return 1 if self.active else 0

    @classmethod
    def from_opcode2(cls, value: int) -> BasicMessage:
        if value not in (0, 1):
            raise ValueError(f"customer override must be 0 or 1, got {value}")
        return cls(value == 1)


class OperationalStateQuery(_ArgMessage):
    """Operational State Query (12); the answer is an Operational State Response."""

    OPCODE = BasicOpcode.OPERATIONAL_STATE_QUERY

    def is_reply(self, other: Message) -> bool:
        return isinstance(other, OperationalStateResponse | AppNak)


@dataclass(frozen=True)
class OperationalStateResponse(BasicMessage):
    """Operational State Response (13) with an :class:`OperationalState` (unknown kept)."""

    OPCODE = BasicOpcode.OPERATIONAL_STATE_RESPONSE
    state: int = OperationalState.IDLE_NORMAL

    def __post_init__(self) -> None:
        _check_byte("state", self.state)

    @property
    def opcode2(self) -> int:
        return self.state

    @classmethod
    def from_opcode2(cls, value: int) -> BasicMessage:
        return cls(_as_enum(OperationalState, value))

    def is_reply(self, other: Message) -> bool:
        return False


class Sleep(_ArgMessage):
    """Sleep (14), sent by the SGD."""

    OPCODE = BasicOpcode.SLEEP


class Wake(_ArgMessage):
    """Wake / Refresh (15), sent by the SGD."""

    OPCODE = BasicOpcode.WAKE


@dataclass(frozen=True)
class SimpleTimeSync(BasicMessage):
    """Simple Time Sync (16): opcode2 = ``weekday << 5 | hour`` (weekday 0 = Sunday)."""

    OPCODE = BasicOpcode.SIMPLE_TIME_SYNC
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


@dataclass(frozen=True)
class PendingEventType(BasicMessage):
    """Pending Event Type (19): opcode1 of the pending event (01, 02, 0A, 0B, 17)."""

    OPCODE = BasicOpcode.PENDING_EVENT_TYPE
    event_opcode: int = BasicOpcode.SHED

    def __post_init__(self) -> None:
        _check_byte("event_opcode", self.event_opcode)

    @property
    def opcode2(self) -> int:
        return self.event_opcode

    @classmethod
    def from_opcode2(cls, value: int) -> BasicMessage:
        return cls(_as_enum(BasicOpcode, value))


def decode_basic(payload: bytes) -> BasicMessage:
    """Decode a Basic DR payload; raise :class:`CtaDecodeError` with the NAK reason."""
    if len(payload) != 2:
        raise CtaDecodeError(
            f"Basic DR payload must be 2 bytes, got {len(payload)}", NakReason.INVALID_LENGTH
        )
    op1, op2 = payload[0], payload[1]
    cls = _REGISTRY.get(op1)
    if cls is None:
        raise CtaDecodeError(
            f"unsupported Basic DR opcode1 0x{op1:02X}", NakReason.REQUEST_NOT_SUPPORTED
        )
    try:
        message = cls.from_opcode2(op2)
    except ValueError as exc:
        raise CtaDecodeError(f"Basic DR {cls.__name__}: {exc}", NakReason.INVALID_BYTE) from exc
    logger.debug("decoded %r", message)
    return message

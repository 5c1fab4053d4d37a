"""Intermediate DR messages (MT ``08 02``) a water heater needs.

Payload ``[opcode1, opcode2, data…]``; replies carry ``opcode2 | 0x80`` and a response code.
All integers are big-endian [≥2 src]. Reference notes section 7.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import IntEnum, IntFlag
from typing import ClassVar

from ._errors import CtaDecodeError, NakReason, logger
from ._frame import Message

__all__ = [
    "CTA_EPOCH",
    "Capability",
    "CommodityCode",
    "CommodityReadReply",
    "CommodityReadRequest",
    "CommodityRecord",
    "DeviceType",
    "FirmwareInfo",
    "GetInformationReply",
    "GetInformationRequest",
    "GetPresentTemperatureRequest",
    "GetSetpointRequest",
    "GetUtcTimeRequest",
    "IntermediateMessage",
    "IntermediateReply",
    "PresentTemperatureReply",
    "ResponseCode",
    "SetSetpointRequest",
    "SetUtcTimeRequest",
    "SetpointReply",
    "TemperatureUnits",
    "UtcTimeReply",
    "cta_seconds",
    "decode_intermediate",
    "from_cta_seconds",
]

#: Intermediate DR time base: seconds since 2000-01-01 00:00 UTC.
CTA_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


class ResponseCode(IntEnum):
    """Intermediate DR response codes (0–7 [≥2 src]; 8 [pycta2045 and cta2045 only])."""

    SUCCESS = 0
    NOT_IMPLEMENTED = 1
    BAD_VALUE = 2
    COMMAND_LENGTH_ERROR = 3
    RESPONSE_LENGTH_ERROR = 4
    BUSY = 5
    OTHER_ERROR = 6
    CUSTOMER_OVERRIDE = 7
    NOT_ENABLED = 8


class TemperatureUnits(IntEnum):
    """Units byte of setpoint / temperature messages [≥2 src]."""

    FAHRENHEIT = 0
    CELSIUS = 1


class DeviceType(IntEnum):
    """Water-heater device types (u16)."""

    GAS_WATER_HEATER = 0x0001
    ELECTRIC_WATER_HEATER = 0x0002
    HEAT_PUMP_WATER_HEATER = 0x0003
    HPWH_VARIABLE_CAPACITY = 0x001B
    PCM_WATER_HEATER = 0x001C


class CommodityCode(IntEnum):
    """Commodity codes (low 7 bits of the code byte)."""

    ELECTRICITY_CONSUMED = 0  # W, Wh
    ELECTRICITY_PRODUCED = 1  # W, Wh
    NATURAL_GAS_IMPERIAL = 2
    WATER_IMPERIAL = 3
    NATURAL_GAS_METRIC = 4
    WATER_METRIC = 5
    TOTAL_ENERGY_STORAGE = 6  # Wh
    PRESENT_ENERGY_STORAGE = 7  # Wh
    RATED_MAX_CONSUMPTION = 8
    RATED_MAX_PRODUCTION = 9
    LOAD_UP_TOTAL_ENERGY_STORAGE = 10
    LOAD_UP_PRESENT_ENERGY_STORAGE = 11


class Capability(IntFlag):
    """GetInformation capability bits [1 src: `cta2045`; provisional]."""

    CYCLING = 1 << 0
    TIER_MODE = 1 << 1
    PRICE_MODE = 1 << 2
    TEMPERATURE_OFFSET = 1 << 3
    CONTINUOUSLY_VARIABLE_POWER = 1 << 4
    DISCRETELY_VARIABLE_POWER = 1 << 5
    ADVANCED_LOAD_UP = 1 << 6
    PRICE_STREAM = 1 << 7
    EFFICIENCY_LEVEL = 1 << 8


def cta_seconds(moment: datetime) -> int:
    """Seconds since 2000-01-01 UTC for an aware datetime."""
    if moment.tzinfo is None:
        raise ValueError("datetime must be timezone-aware")
    return int((moment - CTA_EPOCH).total_seconds())


def from_cta_seconds(seconds: int) -> datetime:
    """Aware UTC datetime for seconds since 2000-01-01 UTC."""
    return CTA_EPOCH + timedelta(seconds=seconds)


def _check(name: str, value: int, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")


_REGISTRY: dict[tuple[int, int], list[type[IntermediateMessage]]] = {}


@dataclass(frozen=True)
class IntermediateMessage(Message):
    """Base of Intermediate DR messages; subclasses define OPCODE1/OPCODE2 and LENGTHS."""

    MT2: ClassVar[int] = 0x02
    OPCODE1: ClassVar[int]
    OPCODE2: ClassVar[int]
    #: Accepted payload lengths (including the 2 opcode bytes).
    LENGTHS: ClassVar[tuple[int, ...]]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__()
        if "LENGTHS" in cls.__dict__:
            _REGISTRY.setdefault((cls.OPCODE1, cls.OPCODE2), []).append(cls)

    @property
    def opcodes(self) -> tuple[int, int]:
        """``(opcode1, opcode2)``."""
        return (self.OPCODE1, self.OPCODE2)

    def body(self) -> bytes:
        """Payload after the two opcode bytes."""
        return b""

    def payload(self) -> bytes:
        """``[opcode1, opcode2, body…]``."""
        op1, op2 = self.opcodes
        return bytes((op1, op2)) + self.body()

    @classmethod
    def from_body(cls, body: bytes) -> IntermediateMessage:
        """Build from the bytes after the opcodes (raise ValueError if invalid)."""
        return cls()

    def is_reply(self, other: Message) -> bool:
        """Requests are answered by the same opcode1 with opcode2 | 0x80."""
        if self.OPCODE2 & 0x80 or not isinstance(other, IntermediateMessage):
            return False
        return other.opcodes == (self.OPCODE1, self.OPCODE2 | 0x80)


@dataclass(frozen=True)
class IntermediateReply(IntermediateMessage):
    """A reply carrying only a response code (LEN 3): set replies and error replies."""

    opcode1: int = 0
    opcode2: int = 0x80
    response_code: int = ResponseCode.SUCCESS

    def __post_init__(self) -> None:
        _check("opcode1", self.opcode1, 0, 0xFF)
        _check("opcode2", self.opcode2, 0x80, 0xFF)
        _check("response_code", self.response_code, 0, 0xFF)

    @property
    def opcodes(self) -> tuple[int, int]:
        return (self.opcode1, self.opcode2)

    def body(self) -> bytes:
        return bytes((self.response_code,))


class GetInformationRequest(IntermediateMessage):
    """Get Information (device info) request ``01 01``."""

    OPCODE1, OPCODE2, LENGTHS = 0x01, 0x01, (2,)


@dataclass(frozen=True)
class FirmwareInfo:
    """Firmware date and version; ``month`` is 1–12 here, 0-based on the wire."""

    year: int = 2000
    month: int = 1
    day: int = 1
    major: int = 0
    minor: int = 0

    def __post_init__(self) -> None:
        _check("firmware year", self.year, 2000, 2255)
        _check("firmware month", self.month, 1, 256)
        for name in ("day", "major", "minor"):
            _check(f"firmware {name}", getattr(self, name), 0, 0xFF)

    def encode(self) -> bytes:
        """The 5 wire bytes."""
        return bytes((self.year - 2000, self.month - 1, self.day, self.major, self.minor))

    @property
    def date(self) -> date | None:
        """The firmware date, or None if the fields do not form a valid date."""
        try:
            return date(self.year, self.month, self.day)
        except ValueError:
            return None


@dataclass(frozen=True)
class GetInformationReply(IntermediateMessage):
    """Get Information reply ``01 81`` (LEN 16, 32 with model, 48 with serial, 53 all)."""

    OPCODE1, OPCODE2, LENGTHS = 0x01, 0x81, (16, 32, 48, 53)
    response_code: int = ResponseCode.SUCCESS
    cta_version: bytes = b"B\x00"
    vendor_id: int = 0
    device_type: int = DeviceType.ELECTRIC_WATER_HEATER
    device_revision: int = 0
    capabilities: int = 0
    model: str | None = None
    serial: str | None = None
    firmware: FirmwareInfo | None = None
    reserved: int = 0

    def __post_init__(self) -> None:
        _check("response_code", self.response_code, 0, 0xFF)
        if len(self.cta_version) != 2:
            raise ValueError("cta_version must be 2 bytes")
        for name in ("vendor_id", "device_type", "device_revision"):
            _check(name, getattr(self, name), 0, 0xFFFF)
        _check("capabilities", self.capabilities, 0, 0xFFFFFFFF)
        _check("reserved", self.reserved, 0, 0xFF)
        for name in ("model", "serial"):
            text = getattr(self, name)
            if text is not None and (len(text.encode("ascii")) > 16 or "\0" in text):
                raise ValueError(f"{name} must be at most 16 ASCII characters without NUL")
        # Optional fields are positional on the wire: a later field implies the earlier ones.
        if self.firmware is not None and self.serial is None:
            object.__setattr__(self, "serial", "")
        if self.serial is not None and self.model is None:
            object.__setattr__(self, "model", "")

    def body(self) -> bytes:
        out = bytes((self.response_code,)) + self.cta_version
        out += struct.pack(">HHHIB", self.vendor_id, self.device_type, self.device_revision,
                           self.capabilities, self.reserved)
        if self.firmware is not None or self.serial is not None or self.model is not None:
            out += (self.model or "").encode("ascii").ljust(16, b"\0")
        if self.firmware is not None or self.serial is not None:
            out += (self.serial or "").encode("ascii").ljust(16, b"\0")
        if self.firmware is not None:
            out += self.firmware.encode()
        return out

    @classmethod
    def from_body(cls, body: bytes) -> IntermediateMessage:
        vendor, dtype, rev, caps, reserved = struct.unpack(">HHHIB", body[3:14])

        def text(raw: bytes) -> str:
            # Non-ASCII bytes become "?" so that the decoded reply can be re-encoded.
            return bytes(b if 0x20 <= b < 0x7F else 0x3F for b in raw.split(b"\0", 1)[0]).decode()

        model = text(body[14:30]) if len(body) >= 30 else None
        serial = text(body[30:46]) if len(body) >= 46 else None
        firmware = None
        if len(body) >= 51:
            y, m, d, major, minor = body[46:51]
            firmware = FirmwareInfo(2000 + y, m + 1, d, major, minor)
        return cls(body[0], bytes(body[1:3]), vendor, dtype, rev, caps, model, serial,
                   firmware, reserved)


@dataclass(frozen=True)
class GetUtcTimeRequest(IntermediateMessage):
    """Get UTC Time ``02 00`` (LEN 2), usually sent by the SGD."""

    OPCODE1, OPCODE2, LENGTHS = 0x02, 0x00, (2,)


def _check_time(seconds: int, tz: int, dst: int) -> None:
    _check("utc_seconds", seconds, 0, 0xFFFFFFFF)
    _check("tz_quarter_hours", tz, -128, 127)
    _check("dst_quarter_hours", dst, -128, 127)


@dataclass(frozen=True)
class SetUtcTimeRequest(IntermediateMessage):
    """Set UTC Time ``02 00`` (LEN 8): u32 s since 2000, s8 TZ and s8 DST in ¼ h."""

    OPCODE1, OPCODE2, LENGTHS = 0x02, 0x00, (8,)
    utc_seconds: int = 0
    tz_quarter_hours: int = 0
    dst_quarter_hours: int = 0

    def __post_init__(self) -> None:
        _check_time(self.utc_seconds, self.tz_quarter_hours, self.dst_quarter_hours)

    def body(self) -> bytes:
        return struct.pack(">Ibb", self.utc_seconds, self.tz_quarter_hours,
                           self.dst_quarter_hours)

    @classmethod
    def from_body(cls, body: bytes) -> IntermediateMessage:
        return cls(*struct.unpack(">Ibb", body))

    @property
    def utc(self) -> datetime:
        """The time as an aware UTC datetime."""
        return from_cta_seconds(self.utc_seconds)

    def is_reply(self, other: Message) -> bool:
        return isinstance(other, IntermediateReply) and other.opcodes == (0x02, 0x80)


@dataclass(frozen=True)
class UtcTimeReply(IntermediateMessage):
    """Get UTC Time reply ``02 80`` (LEN 9): rc, u32 s since 2000, s8 TZ, s8 DST."""

    OPCODE1, OPCODE2, LENGTHS = 0x02, 0x80, (9,)
    response_code: int = ResponseCode.SUCCESS
    utc_seconds: int = 0
    tz_quarter_hours: int = 0
    dst_quarter_hours: int = 0

    def __post_init__(self) -> None:
        _check("response_code", self.response_code, 0, 0xFF)
        _check_time(self.utc_seconds, self.tz_quarter_hours, self.dst_quarter_hours)

    def body(self) -> bytes:
        return struct.pack(">BIbb", self.response_code, self.utc_seconds,
                           self.tz_quarter_hours, self.dst_quarter_hours)

    @classmethod
    def from_body(cls, body: bytes) -> IntermediateMessage:
        return cls(*struct.unpack(">BIbb", body))

    @property
    def utc(self) -> datetime:
        """The time as an aware UTC datetime."""
        return from_cta_seconds(self.utc_seconds)


class GetSetpointRequest(IntermediateMessage):
    """Get Setpoint(s) ``03 03`` (LEN 2)."""

    OPCODE1, OPCODE2, LENGTHS = 0x03, 0x03, (2,)


def _check_setpoints(device_type: int, units: int, sp1: int, sp2: int | None) -> None:
    _check("device_type", device_type, 0, 0xFFFF)
    _check("units", units, 0, 0xFF)
    _check("setpoint1", sp1, -32768, 32767)
    if sp2 is not None:
        _check("setpoint2", sp2, -32768, 32767)


def _pack_setpoints(device_type: int, units: int, sp1: int, sp2: int | None) -> bytes:
    out = struct.pack(">HBh", device_type, units, sp1)
    return out if sp2 is None else out + struct.pack(">h", sp2)


def _parse_setpoints(raw: bytes) -> tuple[int, int, int, int | None]:
    dtype, units, sp1 = struct.unpack(">HBh", raw[:5])
    sp2 = struct.unpack(">h", raw[5:7])[0] if len(raw) == 7 else None
    return dtype, TemperatureUnits(units) if units in (0, 1) else units, sp1, sp2


@dataclass(frozen=True)
class SetSetpointRequest(IntermediateMessage):
    """Set Setpoint(s) ``03 03`` (LEN 7 or 9): device type, units (0 °F, 1 °C), s16 setpoints."""

    OPCODE1, OPCODE2, LENGTHS = 0x03, 0x03, (7, 9)
    device_type: int = DeviceType.ELECTRIC_WATER_HEATER
    units: int = TemperatureUnits.FAHRENHEIT
    setpoint1: int = 0
    setpoint2: int | None = None

    def __post_init__(self) -> None:
        _check_setpoints(self.device_type, self.units, self.setpoint1, self.setpoint2)

    def body(self) -> bytes:
        return _pack_setpoints(self.device_type, self.units, self.setpoint1, self.setpoint2)

    @classmethod
    def from_body(cls, body: bytes) -> IntermediateMessage:
        return cls(*_parse_setpoints(body))

    def is_reply(self, other: Message) -> bool:
        return isinstance(other, IntermediateReply) and other.opcodes == (0x03, 0x83)


@dataclass(frozen=True)
class SetpointReply(IntermediateMessage):
    """Get Setpoint(s) reply ``03 83`` (LEN 8 or 10): rc, device type, units, setpoints."""

    OPCODE1, OPCODE2, LENGTHS = 0x03, 0x83, (8, 10)
    response_code: int = ResponseCode.SUCCESS
    device_type: int = DeviceType.ELECTRIC_WATER_HEATER
    units: int = TemperatureUnits.FAHRENHEIT
    setpoint1: int = 0
    setpoint2: int | None = None

    def __post_init__(self) -> None:
        _check("response_code", self.response_code, 0, 0xFF)
        _check_setpoints(self.device_type, self.units, self.setpoint1, self.setpoint2)

    def body(self) -> bytes:
        return bytes((self.response_code,)) + _pack_setpoints(
            self.device_type, self.units, self.setpoint1, self.setpoint2
        )

    @classmethod
    def from_body(cls, body: bytes) -> IntermediateMessage:
        return cls(body[0], *_parse_setpoints(body[1:]))


class GetPresentTemperatureRequest(IntermediateMessage):
    """Get Present Temperature ``03 04`` (LEN 2)."""

    OPCODE1, OPCODE2, LENGTHS = 0x03, 0x04, (2,)


@dataclass(frozen=True)
class PresentTemperatureReply(IntermediateMessage):
    """Present Temperature reply ``03 84`` (LEN 8): rc, device type, units, s16 temperature."""

    OPCODE1, OPCODE2, LENGTHS = 0x03, 0x84, (8,)
    response_code: int = ResponseCode.SUCCESS
    device_type: int = DeviceType.ELECTRIC_WATER_HEATER
    units: int = TemperatureUnits.FAHRENHEIT
    temperature: int = 0

    def __post_init__(self) -> None:
        _check("response_code", self.response_code, 0, 0xFF)
        _check("device_type", self.device_type, 0, 0xFFFF)
        _check("units", self.units, 0, 0xFF)
        _check("temperature", self.temperature, -32768, 32767)

    def body(self) -> bytes:
        return struct.pack(">BHBh", self.response_code, self.device_type, self.units,
                           self.temperature)

    @classmethod
    def from_body(cls, body: bytes) -> IntermediateMessage:
        rc, dtype, units, temp = struct.unpack(">BHBh", body)
        return cls(rc, dtype, TemperatureUnits(units) if units in (0, 1) else units, temp)


@dataclass(frozen=True)
class CommodityReadRequest(IntermediateMessage):
    """Get Commodity Read ``06 00``: all commodities (LEN 2) or one code (LEN 3)."""

    OPCODE1, OPCODE2, LENGTHS = 0x06, 0x00, (2, 3)
    commodity: int | None = None

    def __post_init__(self) -> None:
        if self.commodity is not None:
            _check("commodity", self.commodity, 0, 0xFF)

    def body(self) -> bytes:
        return b"" if self.commodity is None else bytes((self.commodity,))

    @classmethod
    def from_body(cls, body: bytes) -> IntermediateMessage:
        return cls(body[0] if body else None)


@dataclass(frozen=True)
class CommodityRecord:
    """One 13-byte commodity record: code byte, u48 instantaneous rate, u48 cumulative.

    Bit 7 of the code byte set means *measured* (EPRI VB simulator and Intwine; pycta2045
    says the opposite — check the spec). ``commodity`` is the code masked with 0x7F.
    """

    commodity: int
    instantaneous: int = 0
    cumulative: int = 0
    measured: bool = True

    def __post_init__(self) -> None:
        _check("commodity", self.commodity, 0, 0x7F)
        _check("instantaneous", self.instantaneous, 0, (1 << 48) - 1)
        _check("cumulative", self.cumulative, 0, (1 << 48) - 1)

    def encode(self) -> bytes:
        """The 13 wire bytes."""
        code = self.commodity | (0x80 if self.measured else 0)
        return (bytes((code,)) + self.instantaneous.to_bytes(6, "big")
                + self.cumulative.to_bytes(6, "big"))

    @classmethod
    def decode(cls, raw: bytes) -> CommodityRecord:
        """Parse 13 bytes."""
        code = raw[0] & 0x7F
        commodity = CommodityCode(code) if code in CommodityCode._value2member_map_ else code
        return cls(commodity, int.from_bytes(raw[1:7], "big"), int.from_bytes(raw[7:13], "big"),
                   bool(raw[0] & 0x80))


@dataclass(frozen=True)
class CommodityReadReply(IntermediateMessage):
    """Commodity Read reply ``06 80``: rc + N × 13-byte records (LEN = 3 + 13·N)."""

    OPCODE1, OPCODE2, LENGTHS = 0x06, 0x80, ()
    response_code: int = ResponseCode.SUCCESS
    records: tuple[CommodityRecord, ...] = ()

    def __post_init__(self) -> None:
        _check("response_code", self.response_code, 0, 0xFF)
        object.__setattr__(self, "records", tuple(self.records))

    def body(self) -> bytes:
        return bytes((self.response_code,)) + b"".join(r.encode() for r in self.records)

    @classmethod
    def from_body(cls, body: bytes) -> IntermediateMessage:
        raw = body[1:]
        records = tuple(CommodityRecord.decode(raw[i:i + 13]) for i in range(0, len(raw), 13))
        return cls(body[0], records)

    def get(self, commodity: int) -> CommodityRecord | None:
        """The first record for ``commodity`` (masked code), if any."""
        return next((r for r in self.records if r.commodity == commodity), None)


def _length_ok(cls: type[IntermediateMessage], length: int) -> bool:
    if cls is CommodityReadReply:
        return length >= 3 and (length - 3) % 13 == 0
    return length in cls.LENGTHS


def decode_intermediate(payload: bytes) -> IntermediateMessage:
    """Decode an Intermediate DR payload; raise :class:`CtaDecodeError` with the NAK reason."""
    if len(payload) < 2:
        raise CtaDecodeError(
            f"Intermediate DR payload too short: {len(payload)} bytes", NakReason.INVALID_LENGTH
        )
    op1, op2, length = payload[0], payload[1], len(payload)
    candidates = _REGISTRY.get((op1, op2), [])
    cls = next((c for c in candidates if _length_ok(c, length)), None)
    try:
        if cls is not None:
            message = cls.from_body(bytes(payload[2:]))
        elif op2 & 0x80 and length == 3:
            message = IntermediateReply(op1, op2, payload[2])
        elif candidates:
            raise CtaDecodeError(
                f"Intermediate {op1:02X} {op2:02X}: invalid length {length}",
                NakReason.INVALID_LENGTH,
            )
        else:
            raise CtaDecodeError(
                f"unsupported Intermediate DR opcodes {op1:02X} {op2:02X}",
                NakReason.REQUEST_NOT_SUPPORTED,
            )
    except (ValueError, struct.error) as exc:
        if isinstance(exc, CtaDecodeError):
            raise
        raise CtaDecodeError(f"Intermediate {op1:02X} {op2:02X}: {exc}") from exc
    logger.debug("decoded %r", message)
    return message

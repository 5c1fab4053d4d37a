"""Intermediate DR device information: Get Information request ``01 01`` and reply ``01 81``."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import date
from enum import IntEnum, IntFlag
from typing import Any

from ._fields import check_range
from ._intermediate import CodedReply, IntermediateMessage

__all__ = [
    "Capability",
    "DeviceType",
    "FirmwareInfo",
    "GetInformationReply",
    "GetInformationRequest",
]

#: vendor id, device type, device revision, capability bitmap, reserved byte.
_IDS = struct.Struct(">HHHIB")


class DeviceType(IntEnum):
    """Water-heater device types (u16)."""

    GAS_WATER_HEATER = 0x0001
    ELECTRIC_WATER_HEATER = 0x0002
    HEAT_PUMP_WATER_HEATER = 0x0003
    HPWH_VARIABLE_CAPACITY = 0x001B
    PCM_WATER_HEATER = 0x001C


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


class GetInformationRequest(IntermediateMessage):
    """Get Information (device info) request ``01 01``."""

    OPCODE1, OPCODE2, LENGTHS = 0x01, 0x01, (2,)


@dataclass(frozen=True)
class FirmwareInfo:
    """Firmware date and version, as on the wire: ``year`` = 2000 + byte, ``month`` and
    ``day`` are the bytes themselves (month 1 = January).

    The month byte is the calendar month, not month − 1: EPRI's C++ UCM library (its
    ``DeviceInfoResponse`` unit test: bytes ``01 01 01`` for year, month, day) and the
    programs built on it read it unchanged, Intwine's UCM firmware fills its own date as
    year 16, month 9, day 21 with no −1 conversion, and the PyPI ``cta2045`` package reads
    it unchanged; EPRI's VB simulator and pycta2045 are reported to send month − 1
    (reference notes §7.2). Any byte is accepted; :attr:`date` is None when the bytes are
    not a date (e.g. month 0 from such a 0-based sender).
    """

    year: int = 2000
    month: int = 1
    day: int = 1
    major: int = 0
    minor: int = 0

    def __post_init__(self) -> None:
        check_range("firmware year", self.year, 2000, 2255)
        for name in ("month", "day", "major", "minor"):
            check_range(f"firmware {name}", getattr(self, name), 0, 0xFF)

    def encode(self) -> bytes:
        """The 5 wire bytes."""
        return bytes((self.year - 2000, self.month, self.day, self.major, self.minor))

    @property
    def date(self) -> date | None:
        """The firmware date, or None if the fields do not form a valid date."""
        try:
            return date(self.year, self.month, self.day)
        except ValueError:
            return None


def _text(raw: bytes) -> str:
    # Non-ASCII bytes become "?" so that the decoded reply can be re-encoded.
    return bytes(b if 0x20 <= b < 0x7F else 0x3F for b in raw.split(b"\0", 1)[0]).decode()


@dataclass(frozen=True)
class GetInformationReply(CodedReply):
    """Get Information reply ``01 81`` (LEN 16, 32 with model, 48 with serial, 53 all)."""

    OPCODE1, OPCODE2, LENGTHS = 0x01, 0x81, (16, 32, 48, 53)
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
        super().__post_init__()
        if len(self.cta_version) != 2:
            raise ValueError("cta_version must be 2 bytes")
        for name in ("vendor_id", "device_type", "device_revision"):
            check_range(name, getattr(self, name), 0, 0xFFFF)
        check_range("capabilities", self.capabilities, 0, 0xFFFFFFFF)
        check_range("reserved", self.reserved, 0, 0xFF)
        for name in ("model", "serial"):
            text = getattr(self, name)
            if text is not None and (len(text.encode("ascii")) > 16 or "\0" in text):
                raise ValueError(f"{name} must be at most 16 ASCII characters without NUL")
        # Optional fields are positional on the wire: a later field implies the earlier ones.
        if self.firmware is not None and self.serial is None:
            object.__setattr__(self, "serial", "")
        if self.serial is not None and self.model is None:
            object.__setattr__(self, "model", "")

    def _pack(self) -> bytes:
        out = self.cta_version + _IDS.pack(
            self.vendor_id, self.device_type, self.device_revision, self.capabilities, self.reserved
        )
        if self.firmware is not None or self.serial is not None or self.model is not None:
            out += (self.model or "").encode("ascii").ljust(16, b"\0")
        if self.firmware is not None or self.serial is not None:
            out += (self.serial or "").encode("ascii").ljust(16, b"\0")
        if self.firmware is not None:
            out += self.firmware.encode()
        return out

    @classmethod
    def _unpack(cls, raw: bytes) -> tuple[Any, ...]:
        vendor, dtype, rev, caps, reserved = _IDS.unpack(raw[2:13])
        model = _text(raw[13:29]) if len(raw) >= 29 else None
        serial = _text(raw[29:45]) if len(raw) >= 45 else None
        firmware = None
        if len(raw) >= 50:
            y, m, d, major, minor = raw[45:50]
            firmware = FirmwareInfo(2000 + y, m, d, major, minor)
        return (bytes(raw[0:2]), vendor, dtype, rev, caps, model, serial, firmware, reserved)

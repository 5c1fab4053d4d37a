"""Intermediate DR setpoint and temperature: Get/Set Setpoint(s) ``03 03`` and Get Present
Temperature ``03 04``, with their replies ``03 83`` and ``03 84``.

After the response code of a reply, both carry a u16 device type, a units byte (0 °F,
1 °C) and s16 temperatures.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from ._device_info import DeviceType
from ._fields import as_enum, check_range
from ._intermediate import CodedReply, IntermediateMessage

__all__ = [
    "GetPresentTemperatureRequest",
    "GetSetpointRequest",
    "PresentTemperatureReply",
    "SetSetpointRequest",
    "SetpointReply",
    "TemperatureUnits",
]

#: device type, units, first temperature; a second setpoint follows as ``>h``.
_HEAD = struct.Struct(">HBh")
_S16 = (-32768, 32767)


class TemperatureUnits(IntEnum):
    """Units byte of setpoint / temperature messages [≥2 src]."""

    FAHRENHEIT = 0
    CELSIUS = 1


def _check_device_units(device_type: int, units: int) -> None:
    check_range("device_type", device_type, 0, 0xFFFF)
    check_range("units", units, 0, 0xFF)


def _unpack_head(raw: bytes) -> tuple[int, int, int]:
    dtype, units, value = _HEAD.unpack(raw[: _HEAD.size])
    return dtype, as_enum(TemperatureUnits, units), value


class GetSetpointRequest(IntermediateMessage):
    """Get Setpoint(s) ``03 03`` (LEN 2)."""

    OPCODE1, OPCODE2, LENGTHS = 0x03, 0x03, (2,)


@dataclass(frozen=True)
class _Setpoints(IntermediateMessage):
    """The fields shared by Set Setpoint(s) and the Get Setpoint(s) reply."""

    device_type: int = DeviceType.ELECTRIC_WATER_HEATER
    units: int = TemperatureUnits.FAHRENHEIT
    setpoint1: int = 0
    setpoint2: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_device_units(self.device_type, self.units)
        check_range("setpoint1", self.setpoint1, *_S16)
        if self.setpoint2 is not None:
            check_range("setpoint2", self.setpoint2, *_S16)

    def _pack(self) -> bytes:
        out = _HEAD.pack(self.device_type, self.units, self.setpoint1)
        return out if self.setpoint2 is None else out + struct.pack(">h", self.setpoint2)

    @classmethod
    def _unpack(cls, raw: bytes) -> tuple[Any, ...]:
        sp2 = struct.unpack(">h", raw[5:7])[0] if len(raw) == 7 else None
        return (*_unpack_head(raw), sp2)


@dataclass(frozen=True)
class SetSetpointRequest(_Setpoints):
    """Set Setpoint(s) ``03 03`` (LEN 7 or 9): device type, units (0 °F, 1 °C), s16 setpoints."""

    OPCODE1, OPCODE2, LENGTHS = 0x03, 0x03, (7, 9)
    ANSWERED_BY_CODE = True


@dataclass(frozen=True)
class SetpointReply(_Setpoints, CodedReply):
    """Get Setpoint(s) reply ``03 83`` (LEN 8 or 10): rc, device type, units, setpoints."""

    OPCODE1, OPCODE2, LENGTHS = 0x03, 0x83, (8, 10)


class GetPresentTemperatureRequest(IntermediateMessage):
    """Get Present Temperature ``03 04`` (LEN 2)."""

    OPCODE1, OPCODE2, LENGTHS = 0x03, 0x04, (2,)


@dataclass(frozen=True)
class PresentTemperatureReply(CodedReply):
    """Present Temperature reply ``03 84`` (LEN 8): rc, device type, units, s16 temperature."""

    OPCODE1, OPCODE2, LENGTHS = 0x03, 0x84, (8,)
    device_type: int = DeviceType.ELECTRIC_WATER_HEATER
    units: int = TemperatureUnits.FAHRENHEIT
    temperature: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_device_units(self.device_type, self.units)
        check_range("temperature", self.temperature, *_S16)

    @property
    def celsius(self) -> float:
        """The temperature in °C, whatever the units byte says."""
        if self.units == TemperatureUnits.FAHRENHEIT:
            return round((self.temperature - 32.0) * 5.0 / 9.0, 2)
        return float(self.temperature)

    def _pack(self) -> bytes:
        return _HEAD.pack(self.device_type, self.units, self.temperature)

    @classmethod
    def _unpack(cls, raw: bytes) -> tuple[Any, ...]:
        return _unpack_head(raw)

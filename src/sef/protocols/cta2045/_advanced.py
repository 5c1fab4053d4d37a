"""CTA-2045-B Intermediate DR messages of today's heat-pump water heaters: Get / Set
Temperature Offset (``03 02`` → ``03 82``) and Get / Set Advanced Load Up (``0C 00`` →
``0C 80``).

Byte layouts and where they come from (reference notes §7.1, checked in issue 13):

* **Temperature Offset** [≥2 src: reference notes §7.1 (EPRI ``ConvertEnums`` / VB /
  Intwine); EPRI UCM library ``SetTemperatureOffset(unsigned char offset,
  TemperatureUnits units)`` and its Get as a bare ``GET_SET, TEMP_OFFSET`` request; the
  Zephyr port's ``IT_GET_SET_TEMPERATURE_OFFSET_REQUEST = 0x0302`` / ``_RESPONSE = 0x0382``]:
  get ``03 02`` (LEN 2); set ``03 02 offset(u8) units(u8)`` (LEN 4); get reply
  ``03 82 rc offset(u8) units(u8)`` (LEN 5); set reply ``03 82 rc`` (LEN 3).
* **Advanced Load Up** (CTA-2045-B §11.6) [≥2 src: an EPRI UCM-library fork
  (``SetAdvancedLoadUp``: ``0C 00``, LEN 7, or 8 with the efficiency byte, big-endian
  u16 duration and value, u8 units; ``cea2045GetAdvancedLoadUpResponse``: rc, u16
  duration, u16 value, u8 units), the PyPI ``cta2045`` package (get and set share
  ``0C 00``, told apart by length, as Get/Set Setpoint share ``03 03``; the reply is
  ``0C 80``), and the spec examples quoted in the notes §7.1]:
  get ``0C 00`` (LEN 2); set ``0C 00 duration(u16, min) value(u16) units(u8)
  [efficiency(u8) [event id(u32) [start(u32, s since 2000) [start rand(u8, min)
  [end rand(u8, min)]]]]]`` (LEN 7, 8, 12, 16, 17, 18); get reply ``0C 80 rc`` + the same
  fields (LEN 8, 9, 13, 17, 18, 19); set reply ``0C 80 rc`` (LEN 3). The trailing fields
  are positional: a later one implies the earlier ones [1 src: ``cta2045``].

Advanced Load Up values [GridCube API docs, ``cta2045``]: ``value`` 0 = no effect (a
support probe, sent with units 0xFF), 1–0xFFFE = store at least ``value × units`` Wh above
normal, 0xFFFF = as much as safely possible. Units 0 = 1 Wh, 1 = 10 Wh, 2 = 100 Wh,
3 = 1000 Wh, 0xFF = not active (in a get reply) / no effect; 4–0xFE reserved.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from ._fields import as_enum, check_byte, check_range
from ._intermediate import CodedReply, IntermediateMessage
from ._temperature import TemperatureUnits

__all__ = [
    "ALU_AS_MUCH_AS_POSSIBLE",
    "AdvancedLoadUpReply",
    "AdvancedLoadUpUnits",
    "GetAdvancedLoadUpRequest",
    "GetTemperatureOffsetRequest",
    "SetAdvancedLoadUpRequest",
    "SetTemperatureOffsetRequest",
    "TemperatureOffsetReply",
]

#: Wh per count of ``value`` for each defined units code.
_UNIT_WH = {0x00: 1, 0x01: 10, 0x02: 100, 0x03: 1000}
#: ``value`` meaning "store as much energy as safely possible".
ALU_AS_MUCH_AS_POSSIBLE = 0xFFFF


class AdvancedLoadUpUnits(IntEnum):
    """Units byte of Advanced Load Up (Wh per count of ``value``)."""

    WH_1 = 0x00
    WH_10 = 0x01
    WH_100 = 0x02
    WH_1000 = 0x03
    NOT_ACTIVE = 0xFF

    @property
    def watt_hours(self) -> int | None:
        """Wh per count (None for NOT_ACTIVE)."""
        return _UNIT_WH.get(int(self))


# --- Temperature Offset ----------------------------------------------------------------


class GetTemperatureOffsetRequest(IntermediateMessage):
    """Get Temperature Offset ``03 02`` (LEN 2)."""

    OPCODE1, OPCODE2, LENGTHS = 0x03, 0x02, (2,)


@dataclass(frozen=True)
class _Offset(IntermediateMessage):
    """The offset (u8, degrees of ``units``) and units byte (0 °F, 1 °C)."""

    offset: int = 0
    units: int = TemperatureUnits.FAHRENHEIT

    def __post_init__(self) -> None:
        super().__post_init__()
        check_byte("offset", self.offset)
        check_byte("units", self.units)

    def _pack(self) -> bytes:
        return bytes((self.offset, self.units))

    @classmethod
    def _unpack(cls, raw: bytes) -> tuple[Any, ...]:
        return (raw[0], as_enum(TemperatureUnits, raw[1]))


@dataclass(frozen=True)
class SetTemperatureOffsetRequest(_Offset):
    """Set Temperature Offset ``03 02 offset units`` (LEN 4); answered ``03 82 rc``."""

    OPCODE1, OPCODE2, LENGTHS = 0x03, 0x02, (4,)
    ANSWERED_BY_CODE = True


@dataclass(frozen=True)
class TemperatureOffsetReply(_Offset, CodedReply):
    """Get Temperature Offset reply ``03 82 rc offset units`` (LEN 5)."""

    OPCODE1, OPCODE2, LENGTHS = 0x03, 0x82, (5,)


# --- Advanced Load Up --------------------------------------------------------------------

#: duration (min), value, units.
_ALU_HEAD = struct.Struct(">HHB")
#: optional trailing fields, in wire order: (name, struct format, max value).
_ALU_TAIL: tuple[tuple[str, str, int], ...] = (
    ("efficiency", ">B", 0xFF),
    ("event_id", ">I", 0xFFFFFFFF),
    ("start_time", ">I", 0xFFFFFFFF),
    ("start_randomization", ">B", 0xFF),
    ("end_randomization", ">B", 0xFF),
)
#: block lengths after the opcodes (and response code): 5, 6, 10, 14, 15, 16.
_ALU_BLOCK_LENGTHS = (5, 6, 10, 14, 15, 16)


class GetAdvancedLoadUpRequest(IntermediateMessage):
    """Get Advanced Load Up ``0C 00`` (LEN 2); answered by :class:`AdvancedLoadUpReply`."""

    OPCODE1, OPCODE2, LENGTHS = 0x0C, 0x00, (2,)


@dataclass(frozen=True)
class _AluBlock(IntermediateMessage):
    """The Advanced Load Up fields shared by the set request and the get reply."""

    duration_min: int = 0
    value: int = 0
    units: int = AdvancedLoadUpUnits.NOT_ACTIVE
    efficiency: int | None = None
    event_id: int | None = None
    start_time: int | None = None
    start_randomization: int | None = None
    end_randomization: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("duration_min", self.duration_min, 0, 0xFFFF)
        check_range("value", self.value, 0, 0xFFFF)
        check_byte("units", self.units)
        missing = False
        for name, _fmt, top in _ALU_TAIL:
            field = getattr(self, name)
            if field is None:
                missing = True
            elif missing:
                raise ValueError(f"{name} needs every earlier optional field (positional)")
            else:
                check_range(name, field, 0, top)

    @property
    def duration_s(self) -> int:
        """Duration in seconds (``duration_min`` · 60)."""
        return self.duration_min * 60

    @property
    def energy_wh(self) -> int | None:
        """Requested extra energy ``value × units``, Wh (0 = no effect; None: "as much as
        possible", not active or reserved units)."""
        if self.value == 0:
            return 0
        unit = _UNIT_WH.get(self.units)
        if self.value == ALU_AS_MUCH_AS_POSSIBLE or unit is None:
            return None
        return self.value * unit

    def _pack(self) -> bytes:
        out = _ALU_HEAD.pack(self.duration_min, self.value, self.units)
        for name, fmt, _top in _ALU_TAIL:
            field = getattr(self, name)
            if field is None:
                break
            out += struct.pack(fmt, field)
        return out

    @classmethod
    def _unpack(cls, raw: bytes) -> tuple[Any, ...]:
        duration, value, units = _ALU_HEAD.unpack(raw[: _ALU_HEAD.size])
        tail: list[int | None] = []
        pos = _ALU_HEAD.size
        for _name, fmt, _top in _ALU_TAIL:
            size = struct.calcsize(fmt)
            if pos + size > len(raw):
                tail.append(None)
                continue
            tail.append(struct.unpack_from(fmt, raw, pos)[0])
            pos += size
        return (duration, value, as_enum(AdvancedLoadUpUnits, units), *tail)


@dataclass(frozen=True)
class SetAdvancedLoadUpRequest(_AluBlock):
    """Set Advanced Load Up ``0C 00 duration value units […]`` (LEN 7–18); answered by
    ``0C 80 rc``. Build e.g. ``SetAdvancedLoadUpRequest(60, 5, AdvancedLoadUpUnits.WH_100)``
    (60 min, 500 Wh)."""

    OPCODE1, OPCODE2 = 0x0C, 0x00
    LENGTHS = tuple(2 + n for n in _ALU_BLOCK_LENGTHS)
    ANSWERED_BY_CODE = True


@dataclass(frozen=True)
class AdvancedLoadUpReply(_AluBlock, CodedReply):
    """Get Advanced Load Up reply ``0C 80 rc duration value units […]`` (LEN 8–19);
    units 0xFF = not active."""

    OPCODE1, OPCODE2 = 0x0C, 0x80
    LENGTHS = tuple(3 + n for n in _ALU_BLOCK_LENGTHS)

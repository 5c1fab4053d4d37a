"""Intermediate DR commodity read: request ``06 00`` and reply ``06 80`` with 13-byte records."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from ._fields import as_enum, check_range
from ._intermediate import CodedReply, IntermediateMessage

__all__ = [
    "CommodityCode",
    "CommodityReadReply",
    "CommodityReadRequest",
    "CommodityRecord",
]

_RECORD_LEN = 13
_U48_MAX = (1 << 48) - 1


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


@dataclass(frozen=True)
class CommodityReadRequest(IntermediateMessage):
    """Get Commodity Read ``06 00``: all commodities (LEN 2) or one code (LEN 3)."""

    OPCODE1, OPCODE2, LENGTHS = 0x06, 0x00, (2, 3)
    commodity: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.commodity is not None:
            check_range("commodity", self.commodity, 0, 0xFF)

    def _pack(self) -> bytes:
        return b"" if self.commodity is None else bytes((self.commodity,))

    @classmethod
    def _unpack(cls, raw: bytes) -> tuple[Any, ...]:
        return (raw[0] if raw else None,)


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
        check_range("commodity", self.commodity, 0, 0x7F)
        check_range("instantaneous", self.instantaneous, 0, _U48_MAX)
        check_range("cumulative", self.cumulative, 0, _U48_MAX)

    def encode(self) -> bytes:
        """The 13 wire bytes."""
        code = self.commodity | (0x80 if self.measured else 0)
        return (
            bytes((code,))
            + self.instantaneous.to_bytes(6, "big")
            + self.cumulative.to_bytes(6, "big")
        )

    @classmethod
    def decode(cls, raw: bytes) -> CommodityRecord:
        """Parse 13 bytes."""
        return cls(
            as_enum(CommodityCode, raw[0] & 0x7F),
            int.from_bytes(raw[1:7], "big"),
            int.from_bytes(raw[7:13], "big"),
            bool(raw[0] & 0x80),
        )


@dataclass(frozen=True)
class CommodityReadReply(CodedReply):
    """Commodity Read reply ``06 80``: rc + N × 13-byte records (LEN = 3 + 13·N)."""

    OPCODE1, OPCODE2, LENGTHS = 0x06, 0x80, ()
    records: tuple[CommodityRecord, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "records", tuple(self.records))

    @classmethod
    def accepts_length(cls, length: int) -> bool:
        return length >= 3 and (length - 3) % _RECORD_LEN == 0

    def _pack(self) -> bytes:
        return b"".join(r.encode() for r in self.records)

    @classmethod
    def _unpack(cls, raw: bytes) -> tuple[Any, ...]:
        step = _RECORD_LEN
        return (tuple(CommodityRecord.decode(raw[i : i + step]) for i in range(0, len(raw), step)),)

    def get(self, commodity: int) -> CommodityRecord | None:
        """The first record for ``commodity`` (masked code), if any."""
        return next((r for r in self.records if r.commodity == commodity), None)

"""Intermediate DR UTC time: Get UTC Time ``02 00``, Set UTC Time ``02 00`` and the reply.

Time is a u32 count of seconds since 2000-01-01 00:00 UTC (:data:`CTA_EPOCH`) with s8
time-zone and DST offsets in quarter hours.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ._fields import check_range
from ._intermediate import CodedReply, IntermediateMessage

__all__ = [
    "CTA_EPOCH",
    "GetUtcTimeRequest",
    "SetUtcTimeRequest",
    "UtcTimeReply",
    "cta_seconds",
    "from_cta_seconds",
]

#: Intermediate DR time base: seconds since 2000-01-01 00:00 UTC.
CTA_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

_TIME = struct.Struct(">Ibb")


def cta_seconds(moment: datetime) -> int:
    """Seconds since 2000-01-01 UTC for an aware datetime."""
    if moment.tzinfo is None:
        raise ValueError("datetime must be timezone-aware")
    return int((moment - CTA_EPOCH).total_seconds())


def from_cta_seconds(seconds: int) -> datetime:
    """Aware UTC datetime for seconds since 2000-01-01 UTC."""
    return CTA_EPOCH + timedelta(seconds=seconds)


@dataclass(frozen=True)
class GetUtcTimeRequest(IntermediateMessage):
    """Get UTC Time ``02 00`` (LEN 2), usually sent by the SGD."""

    OPCODE1, OPCODE2, LENGTHS = 0x02, 0x00, (2,)


@dataclass(frozen=True)
class _UtcTime(IntermediateMessage):
    """The time fields shared by Set UTC Time and the Get UTC Time reply."""

    utc_seconds: int = 0
    tz_quarter_hours: int = 0
    dst_quarter_hours: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("utc_seconds", self.utc_seconds, 0, 0xFFFFFFFF)
        check_range("tz_quarter_hours", self.tz_quarter_hours, -128, 127)
        check_range("dst_quarter_hours", self.dst_quarter_hours, -128, 127)

    def _pack(self) -> bytes:
        return _TIME.pack(self.utc_seconds, self.tz_quarter_hours, self.dst_quarter_hours)

    @classmethod
    def _unpack(cls, raw: bytes) -> tuple[Any, ...]:
        return _TIME.unpack(raw)

    @property
    def utc(self) -> datetime:
        """The time as an aware UTC datetime."""
        return from_cta_seconds(self.utc_seconds)


@dataclass(frozen=True)
class SetUtcTimeRequest(_UtcTime):
    """Set UTC Time ``02 00`` (LEN 8): u32 s since 2000, s8 TZ and s8 DST in ¼ h."""

    OPCODE1, OPCODE2, LENGTHS = 0x02, 0x00, (8,)
    ANSWERED_BY_CODE = True


@dataclass(frozen=True)
class UtcTimeReply(_UtcTime, CodedReply):
    """Get UTC Time reply ``02 80`` (LEN 9): rc, u32 s since 2000, s8 TZ, s8 DST."""

    OPCODE1, OPCODE2, LENGTHS = 0x02, 0x80, (9,)

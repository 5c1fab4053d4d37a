"""Basic DR opcode2 byte encodings (reference notes section 6).

Event durations are 2·n² s (rounded up), relative prices ``(n−1)(n+63)/8192`` and power
levels a /127 scale with bit 7 = produce.
"""

from __future__ import annotations

import math

__all__ = [
    "DURATION_MAX_S",
    "DURATION_OVER_MAX",
    "DURATION_UNSPECIFIED",
    "decode_duration",
    "decode_power_level",
    "decode_relative_price",
    "encode_duration",
    "encode_power_level",
    "encode_relative_price",
]

DURATION_UNSPECIFIED = 0x00
DURATION_OVER_MAX = 0xFF
#: Longest representable duration, n = 0xFE: 2·254² s (35.8 h).
DURATION_MAX_S = 2 * 0xFE * 0xFE


def _check_code(what: str, code: int) -> None:
    if not 0 <= code <= 0xFF:
        raise ValueError(f"{what} byte out of range: {code!r}")


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
    _check_code("duration", code)
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
    _check_code("relative price", code)
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
    _check_code("power level", code)
    return (code & 0x7F) * 100 / 127, bool(code & 0x80)

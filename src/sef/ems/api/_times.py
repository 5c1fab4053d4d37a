"""Time arguments of the API and CLI: Unix seconds, ISO 8601, or a duration ago ("1h")."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

__all__ = [
    "DURATION_UNITS",
    "EVERY_MAX_S",
    "EVERY_MIN_S",
    "TIME_MAX",
    "TIME_MIN",
    "TimeOutOfRange",
    "parse_duration",
    "parse_time",
]

TIME_MIN = 0.0
"""Earliest time the API accepts, Unix s (1970-01-01T00:00:00Z)."""
TIME_MAX = 253402300799.0
"""Latest time the API accepts, Unix s (9999-12-31T23:59:59Z)."""
EVERY_MIN_S = 0.001
"""Smallest downsampling bucket, s."""
EVERY_MAX_S = 1e9
"""Largest downsampling bucket, s (about 31 years)."""


class TimeOutOfRange(ValueError):
    """A time that parses but is not finite or lies outside ``TIME_MIN .. TIME_MAX``."""


def _short(text: str) -> str:
    return repr(text if len(text) <= 64 else f"{text[:64]}…")


DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
"""Suffixes of relative times and their length in s."""

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")


def parse_duration(text: str) -> float | None:
    """``"90s"``, ``"15m"``, ``"1h"``, ``"2d"``, ``"1w"`` in s; ``None`` if not a duration."""
    match = _DURATION.match(text.strip().lower())
    if match is None:
        return None
    return float(match.group(1)) * DURATION_UNITS[match.group(2)]


def parse_time(text: str, now: float) -> float:
    """A point in time as Unix s, finite and within ``TIME_MIN .. TIME_MAX``.

    Accepts Unix seconds (``1767225600`` or ``1767225600.5``), ISO 8601
    (``2026-01-01T00:00:00Z``; no zone means UTC), a duration before ``now``
    (``1h``, ``-1h``, ``30m``, ``2d``) or ``now``.

    Raises:
        TimeOutOfRange: (a ValueError) for a time that is not finite or out of range.
        ValueError: with a message naming the accepted forms.
    """
    when = _parse_time(text, now)
    if not math.isfinite(when):
        raise TimeOutOfRange(f"{_short(text)} is not a finite time")
    if not TIME_MIN <= when <= TIME_MAX:
        raise TimeOutOfRange(
            f"{_short(text)} is out of range: times go from {TIME_MIN:.0f} "
            f"(1970-01-01) to {TIME_MAX:.0f} (9999-12-31), Unix s"
        )
    return when


def _parse_time(text: str, now: float) -> float:
    value = text.strip()
    if not value:
        raise ValueError("empty time")
    if value.lower() == "now":
        return now
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        return number
    ago = parse_duration(value[1:] if value.startswith("-") else value)
    if ago is not None:
        return now - ago
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{_short(text)} is not a time: use Unix seconds, ISO 8601 "
            "(2026-01-01T12:00:00Z) or a duration ago (90s, 15m, 1h, 2d)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        return when.timestamp()
    except (OverflowError, ValueError):  # pragma: no cover - aware datetimes subtract
        return math.nan

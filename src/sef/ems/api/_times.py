"""Time arguments of the API and CLI: Unix seconds, ISO 8601, or a duration ago ("1h")."""

from __future__ import annotations

import re
from datetime import UTC, datetime

__all__ = ["DURATION_UNITS", "parse_duration", "parse_time"]

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
    """A point in time as Unix s.

    Accepts Unix seconds (``1767225600`` or ``1767225600.5``), ISO 8601
    (``2026-01-01T00:00:00Z``; no zone means UTC), a duration before ``now``
    (``1h``, ``-1h``, ``30m``, ``2d``) or ``now``.

    Raises:
        ValueError: with a message naming the accepted forms.
    """
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
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError(f"{text!r} is not a finite time")
        return number
    ago = parse_duration(value[1:] if value.startswith("-") else value)
    if ago is not None:
        return now - ago
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use Unix seconds, ISO 8601 "
            "(2026-01-01T12:00:00Z) or a duration ago (90s, 15m, 1h, 2d)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()

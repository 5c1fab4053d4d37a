"""Validation and decoding helpers for the integer fields of application messages."""

from __future__ import annotations

from enum import IntEnum
from typing import TypeVar

__all__ = ["as_enum", "check_byte", "check_range"]

_E = TypeVar("_E", bound=IntEnum)


def as_enum(enum: type[_E], value: int) -> int:
    """``enum(value)`` if ``value`` is one of its members, else ``value`` unchanged."""
    try:
        return enum(value)
    except ValueError:
        return value


def check_range(name: str, value: int, lo: int, hi: int) -> None:
    """Raise ValueError unless ``value`` is an int (not bool) in ``lo..hi``."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")


def check_byte(name: str, value: int) -> None:
    """Raise ValueError unless ``value`` is an int (not bool) in 0..255."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise ValueError(f"{name} must be a byte 0..255, got {value!r}")

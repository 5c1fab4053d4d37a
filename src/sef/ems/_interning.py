"""Intern tables of the EMS registry (issue 16): one shared copy of the strings, About
key tuples, interface sets and group lists that many agents announce alike.

The tables are process-wide and bounded (:data:`INTERN_LIMIT` entries each): past the
bound a new value is simply not shared (more memory per agent, no slowdown, nothing
cleared).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

__all__ = [
    "EMPTY",
    "FLOATS",
    "INTERN_LIMIT",
    "STRINGS",
    "Json",
    "intern_float",
    "intern_groups",
    "intern_interfaces",
    "intern_key",
    "intern_stats",
    "intern_tuple",
]

INTERN_LIMIT = 100_000
"""Most entries of each intern table (strings, key tuples, interface sets, group sets)."""

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
EMPTY: Mapping[str, Any] = MappingProxyType({})


class Json(str):
    """A non-scalar About value kept as its JSON text (decoded on read)."""

    __slots__ = ()


_NO_GROUPS: tuple[str, ...] = ()

_T = TypeVar("_T")

_strings: dict[str, str] = {}
STRINGS = _strings
"""The string intern table (read-only outside this module: lookups inlined in loops)."""
_json_values: dict[str, Json] = {}
_string_lists: dict[tuple[Any, ...], Json] = {}
_key_tuples: dict[tuple[str, ...], tuple[str, ...]] = {}
_iface_sets: dict[tuple[tuple[str, str], ...], Mapping[str, str]] = {}
_group_sets: dict[tuple[str, ...], tuple[str, ...]] = {}


def intern_tuple(table: dict[_T, _T], value: _T) -> _T:
    """The shared copy of ``value`` in ``table`` (added while the table has room)."""
    shared = table.get(value)
    if shared is not None:
        return shared
    if len(table) < INTERN_LIMIT:
        table[value] = value
    return value


def intern_key(key: str) -> str:
    """The shared copy of a string (a property key, an About value)."""
    shared = _strings.get(key)
    if shared is not None:
        return shared
    if len(_strings) < INTERN_LIMIT:
        _strings[key] = key
    return key


def intern_interfaces(refs: Mapping[str, str] | Iterable[tuple[str, str]]) -> Mapping[str, str]:
    """A read-only name -> SHA-256 mapping shared by every agent announcing these refs."""
    kind = type(refs)
    pairs: tuple[tuple[str, str], ...]
    if kind is tuple:
        pairs = refs  # type: ignore[assignment]
    elif kind is MappingProxyType or kind is dict or isinstance(refs, Mapping):
        pairs = tuple(refs.items())  # type: ignore[union-attr]  # (ABC isinstance last: ~1 µs)
    else:
        pairs = tuple(refs)
    if not pairs:
        return EMPTY
    shared = _iface_sets.get(pairs)
    if shared is None:
        shared = MappingProxyType({intern_key(n): intern_key(s) for n, s in pairs})
        if len(_iface_sets) < INTERN_LIMIT:
            _iface_sets[pairs] = shared
    return shared


def intern_groups(groups: Iterable[str]) -> tuple[str, ...]:
    """A tuple of group ids shared by every agent announcing the same list."""
    key = tuple(groups)
    if not key:
        return _NO_GROUPS
    shared = _group_sets.get(key)
    if shared is not None:
        return shared
    shared = tuple(intern_key(g) for g in key)
    if len(_group_sets) < INTERN_LIMIT:
        _group_sets[shared] = shared
    return shared


def intern_stats() -> dict[str, int]:
    """Entries of each intern table (for benches and metrics)."""
    return {
        "strings": len(_strings),
        "key_tuples": len(_key_tuples),
        "interface_sets": len(_iface_sets),
        "group_sets": len(_group_sets),
        "json_values": len(_json_values),
        "floats": len(_floats),
    }


_floats: dict[float, float] = {}  # never 0.0 or -0.0 (equal keys of different signs)
FLOATS = _floats
"""The float intern table (read-only outside this module: lookups inlined in loops)."""


def intern_float(value: float) -> float:
    """The shared copy of a float (0.0 and -0.0 kept apart)."""
    if not value:
        return _ZERO if math.copysign(1.0, value) > 0 else value
    shared = _floats.get(value)
    if shared is not None:
        return shared
    if len(_floats) < INTERN_LIMIT:
        _floats[value] = value
    return value


_ZERO = 0.0

"""The last known value of a property in the EMS registry, kept compact (issue 16).

A property value that is a variant mapping (``a{sv}``: a JSON object whose every value is
a ``[signature, scalar]`` pair, as SEF's ``Telemetry``) of :data:`MIN_PACKED_KEYS` keys or
more is kept as one tuple: a key and
signature tuple shared by every agent with the same keys, then the values (strings and
floats interned). Another JSON object or array is kept as the payload bytes it came in.
Both are decoded on each read of :attr:`PropertyValue.value` (a new object each time;
nothing is cached per agent). A scalar is kept decoded (it is smaller than its JSON).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sef.ems._interning import FLOATS, STRINGS, intern_float, intern_key, intern_tuple

__all__ = ["PropertyValue"]

log = logging.getLogger("sef.ems.registry")

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
MIN_PACKED_KEYS = 8
"""Smallest variant mapping packed as a tuple: a smaller one is kept as its payload (its
payload is small too, and packing it would cost more time than it saves memory)."""
MAX_PACKED_KEYS = 256
"""Largest variant mapping packed as a tuple (a larger one is kept as its payload)."""
_Shape = tuple[tuple[str, ...], tuple[str, ...]]
_shapes: dict[_Shape, _Shape] = {}


class _Variants(tuple):  # type: ignore[type-arg]
    """A packed variant mapping: ``((keys, signatures), value, ...)``."""

    __slots__ = ()


def pack_variants(value: dict[str, Any]) -> _Variants | None:
    """``value`` (an ``a{sv}`` mapping) packed, or ``None`` if it is not one."""
    if not MIN_PACKED_KEYS <= len(value) <= MAX_PACKED_KEYS:
        return None
    sigs: list[str] = []
    out: list[Any] = [None]
    floats, strings = FLOATS.get, STRINGS.get  # (inlined intern_float, intern_key)
    for item in value.values():
        if type(item) is not list or len(item) != 2:
            return None
        sig, scalar = item
        kind = type(scalar)
        if kind is float:
            scalar = (floats(scalar) or intern_float(scalar)) if scalar else intern_float(scalar)
        elif kind is str:
            scalar = strings(scalar) or intern_key(scalar)
        elif kind is not int and kind is not bool and scalar is not None:
            return None
        if type(sig) is not str:
            return None
        sigs.append(sig)
        out.append(scalar)
    out[0] = intern_tuple(_shapes, (tuple(value), tuple(sigs)))
    return _Variants(out)


def _unpack_variants(packed: _Variants) -> dict[str, Any]:
    keys, sigs = packed[0]
    return {key: [sig, v] for key, sig, v in zip(keys, sigs, packed[1:], strict=True)}


class PropertyValue:
    """Last known value of a property (JSON mapping), its sender time and receipt time
    (Unix s), and the per-session sequence number it came with (``None`` if absent).

    A variant mapping is kept packed, another JSON object or array as the payload bytes
    it came in (``{"value": ...}``); both are decoded on each read of :attr:`value` (a new
    object each time; module docstring)."""

    __slots__ = ("_data", "received", "seq", "ts")

    def __init__(
        self, value: Any, ts: float | None, received: float, seq: int | None = None
    ) -> None:
        self._data = value if type(value) is not bytes else _Bytes(value)
        self.ts = ts
        self.received = received
        self.seq = seq

    @classmethod
    def from_payload(
        cls, payload: bytes, value: Any, ts: float | None, received: float, seq: int | None
    ) -> PropertyValue:
        """From a property payload (a JSON object with ``"value"``, checked already) whose
        decoded value is ``value``: an object or array is kept as ``payload``."""
        entry = cls.__new__(cls)
        if type(value) is dict:
            packed = pack_variants(value)
            entry._data = payload if packed is None else packed
        else:
            entry._data = payload if type(value) is list else value
        entry.ts = ts
        entry.received = received
        entry.seq = seq
        return entry

    def compact(self) -> PropertyValue:
        """This value with a decoded object or array packed as JSON bytes (for records
        restored from the store)."""
        data = self._data
        if type(data) is dict:
            packed = pack_variants(data)
            self._data = packed if packed is not None else _ENCODER.encode({"value": data}).encode()
        elif type(data) is list:
            self._data = _ENCODER.encode({"value": data}).encode()
        return self

    @property
    def value(self) -> Any:
        """The value (decoded from the kept payload if it is one: a new object each time;
        ``None`` with a logged reason if that payload does not decode)."""
        data = self._data
        if type(data) is bytes:
            try:
                return json.loads(data)["value"]
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("stored property payload not decodable: %s", exc)
                return None
        if type(data) is _Variants:
            return _unpack_variants(data)
        if type(data) is _Bytes:
            return bytes(data)
        return data

    @value.setter
    def value(self, value: Any) -> None:
        self._data = value if type(value) is not bytes else _Bytes(value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PropertyValue):
            return NotImplemented
        return (self.value, self.ts, self.received, self.seq) == (
            other.value,
            other.ts,
            other.received,
            other.seq,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"PropertyValue(value={self.value!r}, ts={self.ts!r}, "
            f"received={self.received!r}, seq={self.seq!r})"
        )


class _Bytes(bytes):
    """A property value that really is bytes (not a kept payload); never from JSON."""

    __slots__ = ()

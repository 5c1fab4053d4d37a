"""The last known value of a property in the EMS registry, kept compact (issue 16).

A property value that is a JSON object or array (SEF's 17-key ``Telemetry``, a schedule)
is kept as the payload bytes it came in (``{"v": 1, ..., "value": ...}``, checked on
receipt) and decoded on each read of :attr:`PropertyValue.value` (a new object each time;
nothing is cached per agent). A scalar is kept decoded (it is smaller than its JSON).

Until issue 16's second pass a variant mapping (``a{sv}``) of 8 keys or more was packed
into a tuple of interned values after a shared key/signature tuple: ~230 B less per agent
than its payload, but ~14 µs of Python per update on the ingest path (a quarter of a
birth's time in the registry). Keeping the bytes costs no Python per update, and reading
one back with orjson (:func:`sef.bus.loads_kept`) is ~5 µs.
"""

from __future__ import annotations

import logging
from typing import Any

from sef.bus import encode_object, loads_kept

__all__ = ["PropertyValue"]

log = logging.getLogger("sef.ems.registry")


class PropertyValue:
    """Last known value of a property (JSON mapping), its sender time and receipt time
    (Unix s), and the per-session sequence number it came with (``None`` if absent).

    A JSON object or array is kept as the payload bytes it came in (``{"value": ...}``),
    decoded on each read of :attr:`value` (a new object each time; module docstring)."""

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
        kind = type(value)
        entry._data = payload if kind is dict or kind is list else value
        entry.ts = ts
        entry.received = received
        entry.seq = seq
        return entry

    def compact(self) -> PropertyValue:
        """This value with a decoded object or array kept as JSON bytes, as a live one
        (for records restored from the store)."""
        data = self._data
        if type(data) is dict or type(data) is list:
            self._data = encode_object({"value": data})
        return self

    @property
    def value(self) -> Any:
        """The value (decoded from the kept payload if it is one: a new object each time;
        ``None`` with a logged reason if that payload does not decode)."""
        data = self._data
        if type(data) is bytes:
            try:
                return loads_kept(data)["value"]
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("stored property payload not decodable: %s", exc)
                return None
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

"""SunSpec model definitions (from pysunspec2's JSON files) and the register codec.

Point offsets, sizes, types, access and scale-factor names come from the model JSON
files that ship with ``pysunspec2`` (``sunspec2/models/json/model_<id>.json``), so no
offset is hand-typed. Offsets are counted from the model's ``ID`` register (ID = +0,
L = +1, first point = +2). Repeating groups sized by a point (705's ``Crv`` × ``NCrv``,
``Pt`` × ``NPt``) are laid out with the counts given to :func:`model_def`; without them
the definition covers only the fixed points before the first such group
(``ModelDef.complete`` is False), enough to read and write a model's top-level points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .errors import PointError, SunSpecError, SunSpecValueError

__all__ = [
    "BASE_ADDRESSES",
    "END_MODEL_ID",
    "SUNS_MARKER",
    "ModelDef",
    "PointDef",
    "PointValue",
    "decode_point",
    "decode_raw",
    "encode_point",
    "model_def",
]

#: ``"SunS"`` as two big-endian registers.
SUNS_MARKER: tuple[int, int] = (0x5375, 0x6E53)
#: Protocol (0-based) addresses where a SunSpec map may start, in probing order.
BASE_ADDRESSES: tuple[int, ...] = (40000, 0, 50000)
#: ID of the end-of-chain marker (its L is 0).
END_MODEL_ID = 0xFFFF

PointValue = int | float | str | None

_UNIMPL: dict[str, int] = {
    "uint16": 0xFFFF, "enum16": 0xFFFF, "bitfield16": 0xFFFF, "int16": 0x8000,
    "sunssf": 0x8000, "uint32": 0xFFFFFFFF, "enum32": 0xFFFFFFFF,
    "bitfield32": 0xFFFFFFFF, "int32": 0x80000000, "uint64": 0xFFFFFFFFFFFFFFFF,
    "int64": 0x8000000000000000, "acc16": 0, "acc32": 0, "acc64": 0, "count": 0,
}  # fmt: skip
_SIGNED = {"int16", "sunssf", "int32", "int64"}
_INT_TYPES = set(_UNIMPL) | {"pad"}
_NO_MARKER = {"acc16", "acc32", "acc64", "count"}  # 0 is a valid value there


@dataclass(frozen=True)
class PointDef:
    """One point of a SunSpec model.

    Attributes:
        name: point name (``"SoC"``); in nested groups ``"Group.Point"``.
        offset: registers from the model's ID register.
        size: registers.
        type: SunSpec type (``uint16``, ``int16``, ``string``, ``sunssf`` ...).
        sf: name of the scale-factor point, or a fixed int exponent, or None.
        access: ``"R"`` or ``"RW"``.
        units: engineering unit text from the definition ('' if none).
        mandatory: True for mandatory points.
        symbols: enum/bitfield symbol names to values.
    """

    name: str
    offset: int
    size: int
    type: str
    sf: str | int | None
    access: str
    units: str
    mandatory: bool
    symbols: dict[str, int]

    @property
    def writable(self) -> bool:
        """True if the point is read-write."""
        return self.access == "RW"


@dataclass(frozen=True)
class ModelDef:
    """A fixed-layout SunSpec model definition.

    Attributes:
        model_id: SunSpec model ID.
        name: group name pysunspec2 uses (``"battery"`` for 802).
        length: the model's ``L``: registers after the 2 header registers.
        points: point definitions by name, in register order.
        complete: False if the repeating groups sized by a point were left out (then
            ``length`` covers only the fixed points before them).
    """

    model_id: int
    name: str
    length: int
    points: dict[str, PointDef]
    complete: bool = True

    def point(self, name: str) -> PointDef:
        """The definition of point ``name``; :class:`PointError` if unknown."""
        try:
            return self.points[name]
        except KeyError:
            raise PointError(f"model {self.model_id} has no point {name!r}") from None

    def at_offset(self, offset: int) -> PointDef | None:
        """The point covering register ``offset`` (from the ID register), if any."""
        for p in self.points.values():
            if p.offset <= offset < p.offset + p.size:
                return p
        return None


class _Truncated(Exception):
    """A repeating group sized by a point with no count given: stop the layout here."""

    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset


def _flatten(
    group: dict[str, Any],
    prefix: str,
    offset: int,
    out: dict[str, PointDef],
    counts: dict[str, int],
    scopes: tuple[tuple[str, frozenset[str]], ...] = (),
) -> int:
    # A scale factor is named in the point's own group or an enclosing one (SunSpec).
    scopes = ((prefix, frozenset(p["name"] for p in group.get("points", []))), *scopes)
    for p in group.get("points", []):
        sf = p.get("sf")
        if isinstance(sf, str):
            try:
                sf = int(sf)
            except ValueError:
                sf = next((pre for pre, names in scopes if sf in names), prefix) + sf
        name = prefix + p["name"]
        out[name] = PointDef(
            name=name,
            offset=offset,
            size=int(p["size"]),
            type=str(p["type"]),
            sf=sf,
            access=str(p.get("access", "R")),
            units=str(p.get("units", "")),
            mandatory=p.get("mandatory") == "M",
            symbols={s["name"]: int(s["value"]) for s in p.get("symbols", [])},
        )
        offset += int(p["size"])
    for g in group.get("groups", []):
        count = g.get("count", 1)
        sized_by_point = not isinstance(count, int)
        if sized_by_point:
            if str(count) not in counts:
                raise _Truncated(offset)
            count = counts[str(count)]
        for i in range(count):
            label = g["name"] if count == 1 and not sized_by_point else f"{g['name']}[{i}]"
            offset = _flatten(g, f"{prefix}{label}.", offset, out, counts, scopes)
    return offset


@lru_cache(maxsize=64)
def model_def(model_id: int, counts: tuple[tuple[str, int], ...] = ()) -> ModelDef:
    """Load the definition of ``model_id`` from pysunspec2's model files.

    ``counts`` sizes the repeating groups that a point sizes, e.g.
    ``(("NCrv", 2), ("NPt", 4))`` for 705 (curves ``Crv[0]``, ``Crv[1]``, each with
    points ``Crv[i].Pt[0..3]``; a group sized by a point is always indexed). Without a
    needed count the definition stops before that group (``complete=False``).
    """
    try:
        from sunspec2 import device as ss_device
    except ImportError as exc:  # pragma: no cover - dependency missing
        raise SunSpecError("pysunspec2 is needed for SunSpec model definitions") from exc
    try:
        raw = ss_device.get_model_def(model_id, mapping=False)
    except Exception as exc:
        raise SunSpecError(f"no SunSpec definition for model {model_id}: {exc}") from exc
    points: dict[str, PointDef] = {}
    try:
        end, complete = _flatten(raw["group"], "", 0, points, dict(counts)), True
    except _Truncated as stop:
        end, complete = stop.offset, False
    return ModelDef(model_id, str(raw["group"]["name"]), end - 2, points, complete)


def _int_range(p: PointDef) -> tuple[int, int]:
    bits = 16 * p.size
    if p.type in _SIGNED:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def encode_point(p: PointDef, value: PointValue, sf: int = 0) -> list[int]:
    """Registers for ``value`` of point ``p``; ``None`` encodes "not implemented".

    Numbers are engineering values: the raw register is ``round(value / 10**sf)``.
    Raises :class:`SunSpecValueError` if the raw value does not fit the type.
    """
    if p.type == "string":
        text = "" if value is None else str(value)
        data = text.encode("utf-8")
        if len(data) > 2 * p.size:
            raise SunSpecValueError(f"{p.name}: string longer than {2 * p.size} bytes")
        data = data.ljust(2 * p.size, b"\0")
        return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if p.type in ("float32", "float64"):
        raise SunSpecValueError(f"{p.name}: float points are not supported")
    if p.type not in _INT_TYPES:
        raise SunSpecValueError(f"{p.name}: unsupported type {p.type}")
    if value is None or p.type == "pad":
        raw = _UNIMPL.get(p.type, 0) if value is None else 0
    else:
        if isinstance(value, str):
            raise SunSpecValueError(f"{p.name}: expected a number, got {value!r}")
        scaled = float(value) / (10.0**sf)
        if not math.isfinite(scaled):
            raise SunSpecValueError(f"{p.name}: value {value!r} is not finite")
        raw = round(scaled)
        lo, hi = _int_range(p)
        if not lo <= raw <= hi:
            raise SunSpecValueError(
                f"{p.name}: value {value!r} (raw {raw}, sf {sf}) out of range for {p.type}"
            )
        raw &= (1 << (16 * p.size)) - 1
        if raw == _UNIMPL.get(p.type) and p.type not in _NO_MARKER:
            raise SunSpecValueError(
                f"{p.name}: raw {raw:#x} is reserved for 'not implemented' in {p.type}"
            )
    return [(raw >> (16 * (p.size - 1 - i))) & 0xFFFF for i in range(p.size)]


def decode_raw(p: PointDef, regs: list[int]) -> int | str | None:
    """The raw (unscaled) value of ``p`` from its registers; None if not implemented."""
    if len(regs) != p.size:
        raise SunSpecValueError(f"{p.name}: need {p.size} registers, got {len(regs)}")
    if p.type == "string":
        data = b"".join(r.to_bytes(2, "big") for r in regs)
        return data.split(b"\0", 1)[0].decode("utf-8", errors="replace")
    raw = 0
    for r in regs:
        raw = (raw << 16) | (r & 0xFFFF)
    if p.type == "pad":
        return 0
    if p.type in _UNIMPL and raw == _UNIMPL[p.type] and p.type not in _NO_MARKER:
        return None
    if p.type in _SIGNED and raw >= 1 << (16 * p.size - 1):
        raw -= 1 << (16 * p.size)
    return raw


def decode_point(p: PointDef, regs: list[int], sf: int | None = 0) -> PointValue:
    """Engineering value of ``p`` (``raw * 10**sf``); None if not implemented.

    Integers stay ``int`` when ``sf`` is 0 or absent; a missing scale factor
    (``sf=None`` for a scaled point) makes the value None.
    """
    raw = decode_raw(p, regs)
    if raw is None or isinstance(raw, str) or p.sf is None:
        return raw
    if sf is None:
        return None
    if sf == 0:
        return raw
    return raw / 10.0**-sf if sf < 0 else raw * 10.0**sf  # division keeps 53.23 exact

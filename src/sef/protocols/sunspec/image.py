"""Server side: a SunSpec register image (``SunS`` + model chain + end marker).

:class:`SunSpecImage` lays out the chain from the model definitions (so offsets come
from pysunspec2's files), holds the registers, and reads/writes points in engineering
units using the scale-factor registers of the image itself. It knows nothing of
Modbus transport; the battery emulator serves it with pymodbus.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .errors import ModelMissingError, PointError, SunSpecValueError
from .mdef import (
    END_MODEL_ID,
    SUNS_MARKER,
    ModelDef,
    PointDef,
    PointValue,
    decode_point,
    decode_raw,
    encode_point,
    model_def,
)

__all__ = ["SunSpecImage", "choose_sf"]


def choose_sf(max_abs: float, signed: bool = False, min_sf: int = -3) -> int:
    """Smallest scale-factor exponent >= ``min_sf`` so ``max_abs`` fits a 16-bit register.

    The limit is 32 767 for signed and 65 534 for unsigned points (0x8000/0xFFFF mean
    "not implemented").
    """
    limit = 32767 if signed else 65534
    sf = min_sf
    while abs(max_abs) / 10.0**sf > limit and sf < 10:
        sf += 1
    return sf


class SunSpecImage:
    """A contiguous SunSpec register map starting at ``base`` (protocol address).

    Layout: ``"SunS"`` (2 registers), then each model as ``ID``, ``L`` and ``L`` data
    registers, then the end marker ``0xFFFF, 0``. Every point starts "not implemented";
    fill in values with :meth:`set`.

    Attributes:
        base: protocol (0-based) address of the ``S`` of ``SunS``.
        registers: register values, ``registers[0]`` is at address ``base``.
        models: model definitions in chain order.
        model_address: protocol address of each model's ``ID`` register.
    """

    def __init__(
        self,
        model_ids: Iterable[int],
        base: int = 40000,
        counts: Mapping[int, Mapping[str, int]] | None = None,
    ) -> None:
        """Lay out ``model_ids``; ``counts[model_id]`` sizes its point-sized repeating
        groups (e.g. ``{705: {"NCrv": 2, "NPt": 4}}``), and the count points are set."""
        self.base = base
        self.models: list[ModelDef] = []
        self.model_address: dict[int, int] = {}
        self.registers: list[int] = [*SUNS_MARKER]
        counts = counts or {}
        for mid in model_ids:
            mdef = model_def(mid, tuple(sorted(counts.get(mid, {}).items())))
            if not mdef.complete:
                raise ValueError(f"model {mid} has repeating groups: give their counts")
            if mid in self.model_address:
                raise ValueError(f"model {mid} appears twice; one instance per model supported")
            addr = base + len(self.registers)
            self.models.append(mdef)
            self.model_address[mid] = addr
            block = [0] * (mdef.length + 2)
            for p in mdef.points.values():
                block[p.offset : p.offset + p.size] = encode_point(p, None)
            block[0], block[1] = mid, mdef.length
            self.registers.extend(block)
        self.registers.extend([END_MODEL_ID, 0])
        for mid, sizes in counts.items():
            if mid in self.model_address:
                self.set_many(mid, dict(sizes))
        if base + len(self.registers) > 0x10000:
            raise ValueError("SunSpec image does not fit the 16-bit address space")

    @property
    def end(self) -> int:
        """One past the last protocol address of the image."""
        return self.base + len(self.registers)

    def model(self, model_id: int) -> ModelDef:
        """The definition of ``model_id`` in this image; :class:`ModelMissingError` if absent."""
        for m in self.models:
            if m.model_id == model_id:
                return m
        raise ModelMissingError(f"model {model_id} is not in this image")

    def address(self, model_id: int, name: str) -> int:
        """Protocol address of point ``name`` of ``model_id``."""
        return self.model_address[model_id] + self.model(model_id).point(name).offset

    def _slot(self, model_id: int, name: str) -> tuple[PointDef, int]:
        p = self.model(model_id).point(name)
        return p, self.model_address[model_id] - self.base + p.offset

    def sf_of(self, model_id: int, p: PointDef) -> int | None:
        """The scale-factor exponent of point ``p`` now (None if unset/not implemented)."""
        if p.sf is None:
            return 0
        if isinstance(p.sf, int):
            return p.sf
        raw = self.get_raw(model_id, p.sf)
        return raw if isinstance(raw, int) else None

    def get_raw(self, model_id: int, name: str) -> int | str | None:
        """Raw (unscaled) value of a point; None if not implemented."""
        p, i = self._slot(model_id, name)
        return decode_raw(p, self.registers[i : i + p.size])

    def get(self, model_id: int, name: str) -> PointValue:
        """Engineering value of a point (raw × 10^SF); None if not implemented."""
        p, i = self._slot(model_id, name)
        return decode_point(p, self.registers[i : i + p.size], self.sf_of(model_id, p))

    def set(self, model_id: int, name: str, value: PointValue) -> None:
        """Store an engineering value (scaled by the point's SF in this image).

        Set scale factors (``*_SF`` points) before the points that use them.
        """
        p, i = self._slot(model_id, name)
        sf = self.sf_of(model_id, p)
        if sf is None:
            raise SunSpecValueError(f"{name}: its scale factor {p.sf} is not set")
        self.registers[i : i + p.size] = encode_point(p, value, sf)

    def set_many(self, model_id: int, values: Mapping[str, PointValue]) -> None:
        """:meth:`set` each item in order."""
        for name, value in values.items():
            self.set(model_id, name, value)

    def locate(self, address: int) -> tuple[ModelDef, PointDef] | None:
        """The model and point covering protocol ``address``; None for headers/markers."""
        for m in self.models:
            start = self.model_address[m.model_id]
            if start <= address < start + m.length + 2:
                p = m.at_offset(address - start)
                return (m, p) if p is not None else None
        return None

    def points_in(self, address: int, count: int) -> list[tuple[ModelDef, PointDef]]:
        """Every (model, point) touched by ``count`` registers from ``address``.

        Raises :class:`PointError` if the range covers a header, marker or a register
        outside any point.
        """
        found: list[tuple[ModelDef, PointDef]] = []
        for a in range(address, address + count):
            hit = self.locate(a)
            if hit is None:
                raise PointError(f"address {a} is not a point")
            if not found or found[-1][1] is not hit[1]:
                found.append(hit)
        return found

    def slice(self, address: int, count: int) -> list[int]:
        """``count`` registers from protocol ``address`` (must lie inside the image)."""
        i = address - self.base
        if i < 0 or i + count > len(self.registers):
            raise IndexError(f"registers {address}..{address + count - 1} outside the image")
        return self.registers[i : i + count]

    def store(self, address: int, values: list[int]) -> None:
        """Overwrite registers from protocol ``address`` (no validation)."""
        i = address - self.base
        if i < 0 or i + len(values) > len(self.registers):
            raise IndexError("write outside the image")
        self.registers[i : i + len(values)] = [v & 0xFFFF for v in values]

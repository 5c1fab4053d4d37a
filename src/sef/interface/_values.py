"""Python values of D-Bus types: :class:`Variant` and :func:`validate`.

Python representation of each type code:

=============  ===========================================================
``y n q i``    ``int`` in range (``bool`` is rejected)
``u x t``      ``int`` in range (``bool`` is rejected)
``b``          ``bool`` (``int`` is rejected)
``d``          ``float`` (``int`` accepted and converted; must be finite)
``s``          ``str`` (no NUL, encodable as UTF-8)
``o``          ``str`` holding a valid object path
``g``          ``str`` holding a valid signature
``a<T>``       ``list`` (a ``list`` or ``tuple`` is accepted; ``bytes`` for ``ay``)
``a{KV}``      ``dict`` (any mapping is accepted)
``(...)``      ``tuple`` of the exact length (a ``list`` is accepted)
``v``          :class:`Variant`; a bare ``bool``/``int``/``float``/``str`` is
               accepted and wrapped with an inferred signature
               (``b``, ``x`` or ``t``, ``d``, ``s``)
=============  ===========================================================
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ._errors import SignatureError, TypeMismatch
from ._signature import TypeNode, is_valid_object_path, parse_signature, parse_type

__all__ = [
    "INT_RANGES",
    "MAX_VARIANT_DEPTH",
    "Variant",
    "as_type",
    "check_basic",
    "fmt_key",
    "infer_variant",
    "short_repr",
    "validate",
]

#: Inclusive value range of each integer type code.
INT_RANGES: dict[str, tuple[int, int]] = {
    "y": (0, 2**8 - 1),
    "n": (-(2**15), 2**15 - 1),
    "q": (0, 2**16 - 1),
    "i": (-(2**31), 2**31 - 1),
    "u": (0, 2**32 - 1),
    "x": (-(2**63), 2**63 - 1),
    "t": (0, 2**64 - 1),
}

#: Maximum nesting of variants inside variants (as in the D-Bus wire format).
MAX_VARIANT_DEPTH = 64


@dataclass(frozen=True, slots=True)
class Variant:
    """The Python value of a ``v``: a signature (one complete type) and a value."""

    signature: str
    value: object


def as_type(sig: str | TypeNode) -> TypeNode:
    """Return ``sig`` as a :class:`TypeNode` (parsing it if it is a string)."""
    return sig if isinstance(sig, TypeNode) else parse_type(sig)


def short_repr(value: object, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters for error messages."""
    try:
        text = repr(value)
    except Exception:  # pragma: no cover - exotic objects
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fmt_key(key: object) -> str:
    """Format a dict key for an error path: ``["TimeStamp"]`` style for strings."""
    if isinstance(key, str):
        return '"' + key.replace("\\", "\\\\").replace('"', '\\"')[:40] + '"'
    return short_repr(key)


def _describe(code: str) -> str:
    names = {
        "y": "byte", "b": "boolean", "n": "int16", "q": "uint16", "i": "int32",
        "u": "uint32", "x": "int64", "t": "uint64", "d": "double", "s": "string",
        "o": "object path", "g": "signature",
    }  # fmt: skip
    return f"{names[code]} '{code}'"


def _got(value: object) -> str:
    return f"got {type(value).__name__} {short_repr(value)}"


def check_basic(code: str, value: object, path: str) -> object:
    """Validate ``value`` against a basic type code; return the normalised value."""
    if code in INT_RANGES:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            hint = " (bool is not accepted for integer types)" if isinstance(value, bool) else ""
            raise TypeMismatch(f"expected {_describe(code)}, {_got(value)}{hint}", path)
        number = int(value)
        lo, hi = INT_RANGES[code]
        if not lo <= number <= hi:
            raise TypeMismatch(
                f"{short_repr(number)} out of range for {_describe(code)} ({lo}..{hi})", path
            )
        return number
    if code == "b":
        if not isinstance(value, bool):
            raise TypeMismatch(f"expected {_describe(code)}, {_got(value)}", path)
        return value
    if code == "d":
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeMismatch(f"expected {_describe(code)}, {_got(value)}", path)
        try:
            number_f = float(value)
        except (OverflowError, ValueError):
            raise TypeMismatch(
                f"{short_repr(value)} out of range for {_describe(code)}", path
            ) from None
        if not math.isfinite(number_f):
            raise TypeMismatch(f"{short_repr(value)} is not a finite {_describe(code)}", path)
        return number_f
    if code in "sog":
        if not isinstance(value, str):
            raise TypeMismatch(f"expected {_describe(code)}, {_got(value)}", path)
        text = str(value)
        if code == "o":
            if not is_valid_object_path(text):
                raise TypeMismatch(f"{short_repr(text)} is not a valid object path", path)
        elif code == "g":
            try:
                parse_signature(text)
            except SignatureError as exc:
                raise TypeMismatch(str(exc), path) from None
        else:
            if "\x00" in text:
                raise TypeMismatch("string contains a NUL character", path)
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise TypeMismatch(
                    "string is not valid Unicode (lone surrogate) and cannot be UTF-8", path
                ) from None
        return text
    raise TypeMismatch(f"unsupported type code {code!r}", path)  # pragma: no cover


def infer_variant(value: object, path: str) -> Variant:
    """Wrap a bare ``bool``/``int``/``float``/``str`` in a :class:`Variant`.

    Inference: ``bool`` -> ``b``, ``int`` -> ``x`` (``t`` above the int64
    range), ``float`` -> ``d``, ``str`` -> ``s``.
    """
    if isinstance(value, bool):
        return Variant("b", value)
    if isinstance(value, numbers.Integral):
        number = int(value)
        lo, hi = INT_RANGES["x"]
        if lo <= number <= hi:
            return Variant("x", number)
        if 0 <= number <= INT_RANGES["t"][1]:
            return Variant("t", number)
        raise TypeMismatch(f"integer {short_repr(number)} out of range for a variant", path)
    if isinstance(value, numbers.Real):
        return Variant("d", check_basic("d", value, path))
    if isinstance(value, str):
        return Variant("s", check_basic("s", value, path))
    raise TypeMismatch(
        f"expected a Variant(signature, value) or a bool/int/float/str, {_got(value)}", path
    )


def _variant_type(signature: object, path: str, vdepth: int) -> TypeNode:
    """The type of a variant at nesting ``vdepth`` (checked against MAX_VARIANT_DEPTH)."""
    if vdepth >= MAX_VARIANT_DEPTH:
        raise TypeMismatch(f"variants nested deeper than {MAX_VARIANT_DEPTH}", path)
    if not isinstance(signature, str):
        raise TypeMismatch(f"variant signature must be a string, {_got(signature)}", path)
    try:
        return parse_type(signature)
    except SignatureError as exc:
        raise TypeMismatch(f"bad variant signature: {exc}", path) from None


def _struct_items(
    node: TypeNode, items: Sequence[object], path: str
) -> list[tuple[TypeNode, object, str]]:
    """``(member type, item, item path)`` of a struct value; its length must match."""
    members = node.children
    if len(items) != len(members):
        raise TypeMismatch(
            f"expected struct '{node}' with {len(members)} fields, got {len(items)}", path
        )
    return [(m, d, f"{path}[{i}]") for i, (m, d) in enumerate(zip(members, items, strict=True))]


def validate(sig: str | TypeNode, value: object, path: str = "value") -> object:
    """Check a Python ``value`` against a D-Bus type and return it normalised.

    Normalisation: arrays become ``list``, structs ``tuple``, ``a{..}`` ``dict``,
    ``d`` ``float`` and bare scalars given for a ``v`` a :class:`Variant`.
    Raises :class:`TypeMismatch` (with ``.path`` like ``"cmds[2][1]"``) if the
    value does not match, :class:`SignatureError` if ``sig`` is malformed.
    """
    return _validate(as_type(sig), value, path, 0)


def _validate(node: TypeNode, value: object, path: str, vdepth: int) -> object:
    code = node.code
    if node.is_basic:
        return check_basic(code, value, path)
    if code == "v":
        if not isinstance(value, Variant):
            return infer_variant(value, path)
        inner = _variant_type(value.signature, path, vdepth)
        return Variant(value.signature, _validate(inner, value.value, path, vdepth + 1))
    if code == "(":
        if not isinstance(value, (tuple, list)):
            raise TypeMismatch(f"expected struct '{node}' (tuple), {_got(value)}", path)
        return tuple(_validate(m, v, p, vdepth) for m, v, p in _struct_items(node, value, path))
    if code == "a":
        elem = node.children[0]
        if elem.code == "{":
            if not isinstance(value, Mapping):
                raise TypeMismatch(f"expected dict '{node}', {_got(value)}", path)
            key_node, val_node = elem.children
            out: dict[object, object] = {}
            for k, v in value.items():
                item_path = f"{path}[{fmt_key(k)}]"
                try:
                    key = check_basic(key_node.code, k, item_path)
                except TypeMismatch as exc:
                    raise TypeMismatch(f"bad key: {exc.message}", exc.path) from None
                out[key] = _validate(val_node, v, item_path, vdepth)
            return out
        if isinstance(value, (bytes, bytearray)) and elem.code == "y":
            return list(value)
        if not isinstance(value, (list, tuple)):
            raise TypeMismatch(f"expected array '{node}' (list), {_got(value)}", path)
        return [_validate(elem, v, f"{path}[{i}]", vdepth) for i, v in enumerate(value)]
    raise TypeMismatch(f"unexpected type {str(node)!r}", path)

"""JSON mapping of D-Bus typed values (used by the MQTT bus binding).

=============  ==============================================================
D-Bus          JSON
=============  ==============================================================
``y n q i``    integer (a JSON number with a fraction, e.g. ``3.0``, is rejected)
``u x t``      integer
``b``          ``true`` / ``false``
``d``          number (finite)
``s o g``      string
``a<T>``       array
``a{KV}``      object; non-string keys are written as strings (``"12"``,
               ``"true"``, ``"1.5"``) and parsed back with a range check
``(...)``      array of the exact length
``v``          ``[signature, value]`` (canonical).  **Lenience:** on input a
               bare JSON scalar is also accepted and its type inferred:
               ``true``/``false`` -> ``b``, integer -> ``x`` (``t`` above the
               int64 range), fractional number -> ``d``, string -> ``s``
=============  ==============================================================
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._errors import TypeMismatch
from ._signature import TypeNode
from ._values import (
    INT_RANGES,
    Variant,
    _struct_items,
    _validate,
    _variant_type,
    as_type,
    check_basic,
    fmt_key,
    infer_variant,
    short_repr,
)

if TYPE_CHECKING:
    from ._model import Arg

__all__ = ["args_from_json", "args_to_json", "from_json", "to_json"]

_INT_KEY_RE = re.compile(r"0|-?[1-9][0-9]{0,20}")
_FLOAT_KEY_RE = re.compile(r"-?(?:0|[1-9][0-9]{0,400})(?:\.[0-9]{1,400})?(?:[eE][+-]?[0-9]{1,5})?")

JSONValue = object  # what json.loads() returns: dict, list, str, int, float, bool, None


def _json_kind(data: object) -> str:
    if data is None:
        return "null"
    if isinstance(data, bool):
        return f"boolean {short_repr(data)}"
    if isinstance(data, (int, float)):
        return f"number {short_repr(data)}"
    if isinstance(data, str):
        return f"string {short_repr(data)}"
    if isinstance(data, (list, tuple)):
        return "array"
    if isinstance(data, dict):
        return "object"
    return type(data).__name__


# --------------------------------------------------------------------------- encode


def to_json(sig: str | TypeNode, value: object, path: str = "value") -> JSONValue:
    """Validate ``value`` against ``sig`` and return its JSON-able form.

    Raises :class:`TypeMismatch` if the value does not match the type.
    """
    node = as_type(sig)
    return _dump(node, _validate(node, value, path, 0))


def _key_to_str(code: str, key: object) -> str:
    if code == "b":
        return "true" if key else "false"
    if code == "d":
        return repr(key)
    return str(key)


def _dump(node: TypeNode, value: object) -> JSONValue:
    """Convert an already validated/normalised value to JSON-able data."""
    code = node.code
    if node.is_basic:
        return value
    if code == "v":
        assert isinstance(value, Variant)
        return [value.signature, _dump(as_type(value.signature), value.value)]
    if code == "(":
        assert isinstance(value, tuple)
        return [_dump(m, v) for m, v in zip(node.children, value, strict=True)]
    elem = node.children[0]
    if elem.code == "{":
        assert isinstance(value, dict)
        key_node, val_node = elem.children
        return {_key_to_str(key_node.code, k): _dump(val_node, v) for k, v in value.items()}
    assert isinstance(value, list)
    return [_dump(elem, v) for v in value]


# --------------------------------------------------------------------------- decode


def from_json(sig: str | TypeNode, data: object, path: str = "value") -> object:
    """Convert JSON data (as from :func:`json.loads`) to a validated Python value.

    See the module documentation for the mapping, including the lenient
    bare-scalar form accepted for variants.  Raises :class:`TypeMismatch` with
    the path of the offending item for any mismatch.
    """
    return _load(as_type(sig), data, path, 0)


def _key_from_str(code: str, key: str, path: str) -> object:
    if code in "sog":
        return check_basic(code, key, path)
    if code == "b":
        if key not in ("true", "false"):
            raise TypeMismatch(f"expected 'true' or 'false', got {short_repr(key)}", path)
        return key == "true"
    if code in INT_RANGES:
        if _INT_KEY_RE.fullmatch(key) is None:
            raise TypeMismatch(f"expected a decimal integer string, got {short_repr(key)}", path)
        return check_basic(code, int(key), path)
    if _FLOAT_KEY_RE.fullmatch(key) is None:  # "d"
        raise TypeMismatch(f"expected a number string, got {short_repr(key)}", path)
    return check_basic(code, float(key), path)


def _load(node: TypeNode, data: object, path: str, vdepth: int) -> object:
    code = node.code
    if node.is_basic:
        if code in INT_RANGES and isinstance(data, float):
            raise TypeMismatch(
                f"expected an integer for '{code}', got number {short_repr(data)}", path
            )
        return check_basic(code, data, path)
    if code == "v":
        if isinstance(data, (list, tuple)):
            if len(data) != 2 or not isinstance(data[0], str):
                raise TypeMismatch(
                    "variant must be a [signature, value] array or a bare scalar, "
                    f"got an array of {len(data)} items",
                    path,
                )
            inner = _variant_type(data[0], path, vdepth)
            return Variant(data[0], _load(inner, data[1], path, vdepth + 1))
        if isinstance(data, (bool, int, float, str)):
            return infer_variant(data, path)
        raise TypeMismatch(
            f"variant must be a [signature, value] array or a bare scalar, got {_json_kind(data)}",
            path,
        )
    if code == "(":
        if not isinstance(data, (list, tuple)):
            raise TypeMismatch(f"expected struct '{node}' (array), got {_json_kind(data)}", path)
        return tuple(_load(m, d, p, vdepth) for m, d, p in _struct_items(node, data, path))
    elem = node.children[0]
    if elem.code == "{":
        if not isinstance(data, dict):
            raise TypeMismatch(f"expected dict '{node}' (object), got {_json_kind(data)}", path)
        key_node, val_node = elem.children
        out: dict[object, object] = {}
        for k, d in data.items():
            item_path = f"{path}[{fmt_key(k)}]"
            try:
                if isinstance(k, str):
                    key = _key_from_str(key_node.code, k, item_path)
                else:
                    key = check_basic(key_node.code, k, item_path)
            except TypeMismatch as exc:
                raise TypeMismatch(f"bad key: {exc.message}", exc.path) from None
            if key in out:
                raise TypeMismatch(f"duplicate key {short_repr(key)}", item_path)
            out[key] = _load(val_node, d, item_path, vdepth)
        return out
    if not isinstance(data, (list, tuple)):
        raise TypeMismatch(f"expected array '{node}', got {_json_kind(data)}", path)
    return [_load(elem, d, f"{path}[{i}]", vdepth) for i, d in enumerate(data)]


# --------------------------------------------------------------------------- arguments


def _arg_label(arg: Arg, index: int) -> str:
    return arg.name if arg.name else f"arg{index}"


def _count_error(args: Sequence[Arg], got: int) -> TypeMismatch:
    n = len(args)
    plural = "argument" if n == 1 else "arguments"
    listing = ", ".join(f"{_arg_label(a, i)}: {a.type}" for i, a in enumerate(args))
    detail = f" ({listing})" if listing else ""
    return TypeMismatch(f"expected {n} {plural}{detail}, got {got}")


def args_from_json(in_args: Sequence[Arg], data: object) -> list[object]:
    """Decode a JSON array holding one item per argument into validated values.

    Error paths start with the argument name, e.g. ``"cmds[0][2]: ..."``.
    """
    if not isinstance(data, (list, tuple)):
        raise TypeMismatch(f"arguments must be a JSON array, got {_json_kind(data)}")
    if len(data) != len(in_args):
        raise _count_error(in_args, len(data))
    return [
        from_json(arg.type, item, _arg_label(arg, i))
        for i, (arg, item) in enumerate(zip(in_args, data, strict=True))
    ]


def args_to_json(args: Sequence[Arg], values: Sequence[object]) -> list[object]:
    """Validate one value per argument and return the JSON array of them."""
    if isinstance(values, (str, bytes)) or len(values) != len(args):
        got = len(values) if not isinstance(values, (str, bytes)) else 1
        raise _count_error(args, got)
    return [
        to_json(arg.type, value, _arg_label(arg, i))
        for i, (arg, value) in enumerate(zip(args, values, strict=True))
    ]

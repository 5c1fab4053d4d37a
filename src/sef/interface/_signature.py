"""D-Bus type signatures: parsing into :class:`TypeNode` trees, name rules."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from ._errors import SignatureError

__all__ = [
    "BASIC_CODES",
    "MAX_ARRAY_DEPTH",
    "MAX_SIGNATURE_LENGTH",
    "MAX_STRUCT_DEPTH",
    "TYPE_NAMES",
    "TypeNode",
    "is_valid_interface_name",
    "is_valid_member_name",
    "is_valid_object_path",
    "parse_signature",
    "parse_type",
]

MAX_SIGNATURE_LENGTH = 255
MAX_ARRAY_DEPTH = 32
MAX_STRUCT_DEPTH = 32

#: Basic (non-container) type codes supported by SEF.  ``h`` (unix fd) is not.
BASIC_CODES = frozenset("ybnqiuxtdsog")

#: Human readable names of the type codes (used in error messages).
TYPE_NAMES: dict[str, str] = {
    "y": "byte",
    "b": "boolean",
    "n": "int16",
    "q": "uint16",
    "i": "int32",
    "u": "uint32",
    "x": "int64",
    "t": "uint64",
    "d": "double",
    "s": "string",
    "o": "object path",
    "g": "signature",
    "v": "variant",
    "a": "array",
    "(": "struct",
    "{": "dict entry",
}

_RESERVED = {
    "h": "type 'h' (unix file descriptor) is not supported",
    "r": "'r' is reserved for STRUCT in bindings; use '(...)'",
    "e": "'e' is reserved for DICT_ENTRY in bindings; use '{...}' inside an array",
    "m": "type code 'm' is reserved",
    "*": "type code '*' is reserved",
    "?": "type code '?' is reserved",
    "@": "type code '@' is reserved",
    "&": "type code '&' is reserved",
    "^": "type code '^' is reserved",
}

_ELEMENT = r"[A-Za-z_][A-Za-z0-9_]*"
_INTERFACE_RE = re.compile(rf"{_ELEMENT}(?:\.{_ELEMENT})+")
_MEMBER_RE = re.compile(_ELEMENT)
_PATH_RE = re.compile(r"/|(?:/[A-Za-z0-9_]+)+")


def is_valid_interface_name(name: str) -> bool:
    """D-Bus interface name: two or more dot-separated identifiers, at most 255 chars."""
    return len(name) <= 255 and _INTERFACE_RE.fullmatch(name) is not None


def is_valid_member_name(name: str) -> bool:
    """D-Bus member (method/property/signal) name: ``[A-Za-z_][A-Za-z0-9_]*``, ≤ 255 chars."""
    return len(name) <= 255 and _MEMBER_RE.fullmatch(name) is not None


def is_valid_object_path(path: str) -> bool:
    """D-Bus object path: ``/`` or ``/elem/elem`` with ``[A-Za-z0-9_]+`` elements."""
    return _PATH_RE.fullmatch(path) is not None


@dataclass(frozen=True, slots=True)
class TypeNode:
    """One complete D-Bus type.

    ``code`` is the type code: a basic code (``y b n q i u x t d s o g``), ``v``,
    ``a`` (array: one child, the element type), ``(`` (struct: one or more
    children) or ``{`` (dict entry: key and value children; only as an array
    element).  ``str(node)`` gives the signature back.
    """

    code: str
    children: tuple[TypeNode, ...] = ()

    def __str__(self) -> str:
        if self.code == "a":
            return "a" + str(self.children[0])
        if self.code == "(":
            return "(" + "".join(map(str, self.children)) + ")"
        if self.code == "{":
            return "{" + "".join(map(str, self.children)) + "}"
        return self.code

    @property
    def is_basic(self) -> bool:
        """True for the basic (non-container, non-variant) types."""
        return self.code in BASIC_CODES

    @property
    def is_dict(self) -> bool:
        """True for ``a{KV}`` (an array of dict entries)."""
        return self.code == "a" and self.children[0].code == "{"

    @property
    def name(self) -> str:
        """Human readable type name, e.g. ``"int16"`` or ``"array"``."""
        return TYPE_NAMES.get(self.code, self.code)


class _Parser:
    def __init__(self, sig: str) -> None:
        self.sig = sig
        self.pos = 0

    def fail(self, message: str) -> SignatureError:
        return SignatureError(f"invalid signature {self.sig!r}: {message}")

    def parse_one(self, arrays: int, structs: int, in_array: bool) -> TypeNode:
        sig = self.sig
        if self.pos >= len(sig):
            return self._eos()
        c = sig[self.pos]
        at = self.pos
        self.pos += 1
        if c in BASIC_CODES or c == "v":
            return TypeNode(c)
        if c == "a":
            if arrays + 1 > MAX_ARRAY_DEPTH:
                raise self.fail(f"arrays nested deeper than {MAX_ARRAY_DEPTH}")
            if self.pos >= len(sig):
                raise self.fail("array 'a' without an element type")
            return TypeNode("a", (self.parse_one(arrays + 1, structs, True),))
        if c == "(":
            if structs + 1 > MAX_STRUCT_DEPTH:
                raise self.fail(f"structs nested deeper than {MAX_STRUCT_DEPTH}")
            members = self._members(")", "struct", at, arrays, structs + 1)
            if not members:
                raise self.fail("empty struct '()'")
            return TypeNode("(", tuple(members))
        if c == "{":
            if not in_array:
                raise self.fail(
                    f"dict entry at position {at} is only allowed as an array element ('a{{..}}')"
                )
            members = self._members("}", "dict entry", at, arrays, structs)
            if len(members) != 2:
                raise self.fail(f"dict entry must have exactly 2 types, got {len(members)}")
            if not members[0].is_basic:
                raise self.fail(f"dict key must be a basic type, got {str(members[0])!r}")
            return TypeNode("{", tuple(members))
        if c in ")}":
            raise self.fail(f"unexpected {c!r} at position {at}")
        if c in _RESERVED:
            raise self.fail(_RESERVED[c])
        raise self.fail(f"unknown type code {c!r} at position {at}")

    def _members(self, close: str, what: str, at: int, arrays: int, structs: int) -> list[TypeNode]:
        """Complete types up to the ``close`` character of the ``what`` opened at ``at``."""
        members: list[TypeNode] = []
        while self.pos < len(self.sig):
            if self.sig[self.pos] == close:
                self.pos += 1
                return members
            members.append(self.parse_one(arrays, structs, False))
        raise self.fail(f"unterminated {what} opened at position {at}")

    def _eos(self) -> TypeNode:
        raise self.fail("unexpected end of signature")


@lru_cache(maxsize=1024)
def _parse_cached(sig: str) -> tuple[TypeNode, ...]:
    if len(sig) > MAX_SIGNATURE_LENGTH:
        raise SignatureError(
            f"signature too long ({len(sig)} characters, max {MAX_SIGNATURE_LENGTH})"
        )
    parser = _Parser(sig)
    out: list[TypeNode] = []
    while parser.pos < len(sig):
        out.append(parser.parse_one(0, 0, False))
    return tuple(out)


def parse_signature(sig: str) -> list[TypeNode]:
    """Parse a D-Bus signature into its sequence of complete types (``""`` gives ``[]``).

    Raises :class:`SignatureError` for anything that is not a valid signature
    (including non-``str`` input and the unsupported ``h``).
    """
    if not isinstance(sig, str):
        raise SignatureError(f"signature must be a str, got {type(sig).__name__}")
    return list(_parse_cached(sig))


def parse_type(sig: str) -> TypeNode:
    """Parse a signature holding exactly one complete type (e.g. ``"a(snn)"``)."""
    types = parse_signature(sig)
    if len(types) != 1:
        raise SignatureError(
            f"invalid signature {sig!r}: expected exactly one complete type, got {len(types)}"
        )
    return types[0]

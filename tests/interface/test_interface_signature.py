"""Signature parsing and Python value validation (independent vectors)."""

from __future__ import annotations

import math
import re

import pytest

from sef.interface import (
    SignatureError,
    TypeMismatch,
    TypeNode,
    Variant,
    parse_signature,
    parse_type,
    validate,
)

# Examples taken from the D-Bus specification ("Type System" section) and SEF's interface.
VALID = [
    "y", "b", "n", "q", "i", "u", "x", "t", "d", "s", "o", "g", "v",
    "ai", "aai", "(ii)", "(i(ii))", "a{sv}", "a{s(ii)}", "a(snn)", "a{ia{sv}}",
    "(yyyyuua(yv))",  # the D-Bus message header
    "a{oa{sa{sv}}}",  # GetManagedObjects
    "a" * 32 + "i",
    "(" * 32 + "i" + ")" * 32,
]  # fmt: skip

INVALID = {
    "a": "without an element type",
    "(": "unterminated struct",
    ")": "unexpected ')'",
    "()": "empty struct",
    "(i": "unterminated struct",
    "{sv}": "only allowed as an array element",
    "a{vs}": "dict key must be a basic type",
    "a{(i)s}": "dict key must be a basic type",
    "a{sii}": "exactly 2 types",
    "a{s}": "exactly 2 types",
    "a{}": "exactly 2 types",
    "(a{sv}{ss})": "only allowed as an array element",
    "a" * 33 + "i": "arrays nested deeper than 32",
    "(" * 33 + "i" + ")" * 33: "structs nested deeper than 32",
    "h": "unix file descriptor",
    "ah": "unix file descriptor",
    "r": "reserved",
    "e": "reserved",
    "m": "reserved",
    "z": "unknown type code",
    "i ": "unknown type code",
    "s" * 256: "too long",
}


@pytest.mark.parametrize("sig", VALID)
def test_valid_signature_round_trips(sig: str) -> None:
    node = parse_type(sig)
    assert str(node) == sig
    assert parse_signature(sig) == [node]


@pytest.mark.parametrize(("sig", "fragment"), INVALID.items())
def test_invalid_signature(sig: str, fragment: str) -> None:
    with pytest.raises(SignatureError, match=re.escape(fragment)):
        parse_signature(sig)


def test_parse_signature_sequence() -> None:
    assert parse_signature("") == []
    assert [str(t) for t in parse_signature("sa{sv}(ii)aai")] == ["s", "a{sv}", "(ii)", "aai"]
    assert parse_signature("a(snn)") == [
        TypeNode("a", (TypeNode("(", (TypeNode("s"), TypeNode("n"), TypeNode("n"))),))
    ]
    assert parse_signature("s" * 255) == [TypeNode("s")] * 255


def test_parse_type_needs_exactly_one_type() -> None:
    for sig in ("", "ii", "sv"):
        with pytest.raises(SignatureError, match="exactly one complete type"):
            parse_type(sig)


def test_non_str_signature() -> None:
    with pytest.raises(SignatureError):
        parse_signature(b"i")  # type: ignore[arg-type]


def test_typenode_helpers() -> None:
    node = parse_type("a{sv}")
    assert node.is_dict and not node.is_basic and node.name == "array"
    assert parse_type("n").name == "int16"
    assert hash(node) == hash(parse_type("a{sv}"))


# --------------------------------------------------------------------------- values

INT_BOUNDS = {
    "y": (0, 255),
    "n": (-32768, 32767),
    "q": (0, 65535),
    "i": (-(2**31), 2**31 - 1),
    "u": (0, 2**32 - 1),
    "x": (-(2**63), 2**63 - 1),
    "t": (0, 2**64 - 1),
}


@pytest.mark.parametrize(("code", "bounds"), INT_BOUNDS.items())
def test_integer_bounds(code: str, bounds: tuple[int, int]) -> None:
    lo, hi = bounds
    assert validate(code, lo) == lo
    assert validate(code, hi) == hi
    for bad in (lo - 1, hi + 1):
        with pytest.raises(TypeMismatch, match="out of range"):
            validate(code, bad)


def test_int16_vectors() -> None:
    assert validate("n", -32768) == -32768
    assert validate("n", 32767) == 32767
    for bad in (32768, -32769, 32769, 40000):
        with pytest.raises(TypeMismatch):
            validate("n", bad)


def test_error_message_and_path() -> None:
    with pytest.raises(TypeMismatch) as info:
        validate("a(snn)", [("idle", 0, 0), ("charge", 40000, 60)], "cmds")
    assert info.value.path == "cmds[1][1]"
    assert str(info.value) == "cmds[1][1]: 40000 out of range for int16 'n' (-32768..32767)"


def test_bool_and_int_are_not_interchangeable() -> None:
    for code in "ynqiuxt":
        with pytest.raises(TypeMismatch, match="bool"):
            validate(code, True)
    with pytest.raises(TypeMismatch):
        validate("b", 1)
    with pytest.raises(TypeMismatch):
        validate("d", False)
    assert validate("b", False) is False


def test_double() -> None:
    assert validate("d", 3) == 3.0 and isinstance(validate("d", 3), float)
    assert validate("d", -1.5) == -1.5
    for bad in (math.nan, math.inf, -math.inf, 10**400):
        with pytest.raises(TypeMismatch):
            validate("d", bad)
    with pytest.raises(TypeMismatch):
        validate("d", "1.0")


def test_integers_reject_floats_and_strings() -> None:
    for bad in (1.0, "1", None, [1]):
        with pytest.raises(TypeMismatch):
            validate("i", bad)


def test_strings_paths_signatures() -> None:
    assert validate("s", "héllo ☀") == "héllo ☀"
    with pytest.raises(TypeMismatch, match="NUL"):
        validate("s", "a\x00b")
    with pytest.raises(TypeMismatch, match="surrogate"):
        validate("s", "\ud800")
    for good in ("/", "/a", "/org/freedesktop/DBus", "/a_1/B2"):
        assert validate("o", good) == good
    for bad in ("", "a", "//", "/a/", "/a//b", "/a-b", "/é"):
        with pytest.raises(TypeMismatch, match="object path"):
            validate("o", bad)
    assert validate("g", "a{sv}") == "a{sv}"
    assert validate("g", "") == ""
    with pytest.raises(TypeMismatch):
        validate("g", "a{")


def test_containers_normalise() -> None:
    assert validate("(is)", [1, "a"]) == (1, "a")
    assert validate("ai", (1, 2)) == [1, 2]
    assert validate("ay", b"\x00\xff") == [0, 255]
    assert validate("a{sv}", {"TimeStamp": Variant("u", 5)}) == {"TimeStamp": Variant("u", 5)}
    with pytest.raises(TypeMismatch, match="2 fields"):
        validate("(is)", (1,))
    with pytest.raises(TypeMismatch):
        validate("ai", "12")
    with pytest.raises(TypeMismatch):
        validate("a{sv}", [("a", 1)])
    with pytest.raises(TypeMismatch) as info:
        validate("a{ni}", {70000: 1}, "m")
    assert "bad key" in str(info.value) and info.value.path == "m[70000]"
    with pytest.raises(TypeMismatch) as info:
        validate("a{si}", {"k": "x"}, "m")
    assert info.value.path == 'm["k"]'


def test_variant_values() -> None:
    assert validate("v", Variant("ai", (1, 2))) == Variant("ai", [1, 2])
    # bare scalars are wrapped with an inferred signature
    assert validate("v", True) == Variant("b", True)
    assert validate("v", 7) == Variant("x", 7)
    assert validate("v", 2**64 - 1) == Variant("t", 2**64 - 1)
    assert validate("v", 1.5) == Variant("d", 1.5)
    assert validate("v", "x") == Variant("s", "x")
    with pytest.raises(TypeMismatch):
        validate("v", 2**64)
    with pytest.raises(TypeMismatch):
        validate("v", [1])
    with pytest.raises(TypeMismatch, match="bad variant signature"):
        validate("v", Variant("ii", 1))
    with pytest.raises(TypeMismatch, match="out of range"):
        validate("v", Variant("n", 40000))
    deep: object = 1
    for _ in range(100):
        deep = Variant("v", deep)
    with pytest.raises(TypeMismatch, match="nested deeper"):
        validate("v", deep)


def test_validate_accepts_typenode() -> None:
    node = parse_type("a(snn)")
    cmds = [("charge", 5, 60), ("idle", 0, 0)]
    assert validate(node, cmds) == cmds

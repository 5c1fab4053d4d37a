"""JSON mapping of typed values, plus hypothesis property tests."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sef.interface import (
    Arg,
    SignatureError,
    TypeMismatch,
    TypeNode,
    Variant,
    args_from_json,
    args_to_json,
    builtin_interface,
    from_json,
    parse_signature,
    parse_type,
    to_json,
)

INT_RANGES = {
    "y": (0, 255),
    "n": (-(2**15), 2**15 - 1),
    "q": (0, 2**16 - 1),
    "i": (-(2**31), 2**31 - 1),
    "u": (0, 2**32 - 1),
    "x": (-(2**63), 2**63 - 1),
    "t": (0, 2**64 - 1),
}
BASIC = "ybnqiuxtdsog"

# --------------------------------------------------------------------------- strategies

basic_nodes = st.sampled_from(BASIC).map(TypeNode)


def _extend(children: st.SearchStrategy[TypeNode]) -> st.SearchStrategy[TypeNode]:
    return st.one_of(
        children.map(lambda c: TypeNode("a", (c,))),
        st.lists(children, min_size=1, max_size=4).map(lambda cs: TypeNode("(", tuple(cs))),
        st.tuples(basic_nodes, children).map(lambda kv: TypeNode("a", (TypeNode("{", kv),))),
    )


def _depths(node: TypeNode) -> tuple[int, int]:
    """(array depth, struct depth) of a node."""
    sub = [_depths(c) for c in node.children] or [(0, 0)]
    arrays = max(a for a, _ in sub) + (node.code == "a")
    structs = max(s for _, s in sub) + (node.code == "(")
    return arrays, structs


def type_nodes(max_leaves: int = 8) -> st.SearchStrategy[TypeNode]:
    """Random valid complete types."""
    leaves = st.one_of(basic_nodes, st.just(TypeNode("v")))
    return st.recursive(leaves, _extend, max_leaves=max_leaves).filter(
        lambda n: len(str(n)) <= 255 and max(_depths(n)) <= 32
    )


safe_text = st.text(
    alphabet=st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=12
)
object_paths = st.from_regex(r"/|(/[A-Za-z0-9_]{1,4}){1,3}", fullmatch=True)
signatures = st.lists(type_nodes(4), max_size=3).map(lambda ns: "".join(map(str, ns)))


def values(node: TypeNode, vdepth: int = 0) -> st.SearchStrategy[Any]:
    """Random valid Python values (normalised form) of a type."""
    code = node.code
    if code in INT_RANGES:
        lo, hi = INT_RANGES[code]
        return st.integers(lo, hi)
    if code == "b":
        return st.booleans()
    if code == "d":
        return st.floats(allow_nan=False, allow_infinity=False)
    if code == "s":
        return safe_text
    if code == "o":
        return object_paths
    if code == "g":
        return signatures
    if code == "v":
        inner = type_nodes(4) if vdepth < 2 else basic_nodes
        return inner.flatmap(lambda n: values(n, vdepth + 1).map(lambda v: Variant(str(n), v)))
    if code == "(":
        return st.tuples(*(values(c, vdepth) for c in node.children))
    elem = node.children[0]
    if elem.code == "{":
        key, val = elem.children
        return st.dictionaries(values(key, vdepth), values(val, vdepth), max_size=3)
    return st.lists(values(elem, vdepth), max_size=3)


json_data = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["charge", "a{sv}", "v", "n", "u", "(snn)"]),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
    max_leaves=20,
)

# --------------------------------------------------------------------------- properties


@given(type_nodes())
def test_signature_round_trip(node: TypeNode) -> None:
    assert parse_type(str(node)) == node
    assert parse_signature(str(node) * 2) == [node, node]


@settings(max_examples=300, deadline=None)
@given(type_nodes().flatmap(lambda n: st.tuples(st.just(n), values(n))))
def test_json_value_round_trip(case: tuple[TypeNode, Any]) -> None:
    node, value = case
    wire = json.dumps(to_json(node, value), allow_nan=False)
    assert from_json(node, json.loads(wire)) == value
    assert from_json(str(node), json.loads(wire)) == value


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["a(snn)", "a{sv}", "v", "(ybnqiuxtd)", "a{nd}", "aa{bv}"]), json_data)
def test_arbitrary_json_only_raises_type_mismatch(sig: str, data: object) -> None:
    try:
        value = from_json(sig, data)
    except TypeMismatch:
        return
    # whatever was accepted is valid and survives a round trip
    assert from_json(sig, json.loads(json.dumps(to_json(sig, value)))) == value


@given(st.text(max_size=40) | st.text(alphabet="ybnqiuxtdsoghvaer(){}", max_size=80))
def test_arbitrary_text_signature_only_raises_signature_error(text: str) -> None:
    try:
        types = parse_signature(text)
    except SignatureError:
        return
    assert "".join(map(str, types)) == text


# --------------------------------------------------------------------------- vectors


def test_basic_json_vectors() -> None:
    assert to_json("a(snn)", [("charge", 5, 60)]) == [["charge", 5, 60]]
    assert from_json("a(snn)", [["charge", 5, 60]]) == [("charge", 5, 60)]
    assert to_json("b", True) is True
    assert to_json("d", 2) == 2.0
    assert to_json("v", Variant("u", 1700000000)) == ["u", 1700000000]
    assert to_json("a{sv}", {"TimeStamp": 5}) == {"TimeStamp": ["x", 5]}
    assert to_json("a{nb}", {-3: True}) == {"-3": True}
    assert to_json("a{bs}", {True: "y", False: "n"}) == {"true": "y", "false": "n"}
    assert to_json("a{ds}", {1.5: "a"}) == {"1.5": "a"}
    assert from_json("a{ds}", {"1.5": "a", "-2e3": "b"}) == {1.5: "a", -2000.0: "b"}
    assert from_json("a{qs}", {"65535": "x"}) == {65535: "x"}
    assert from_json("a{bs}", {"true": "y"}) == {True: "y"}


def test_json_integral_float_rejected_for_integers() -> None:
    with pytest.raises(TypeMismatch, match="integer"):
        from_json("n", 3.0)
    assert from_json("d", 3) == 3.0


def test_json_key_errors() -> None:
    for sig, key in [
        ("a{ns}", "40000"),
        ("a{ns}", "1.0"),
        ("a{ns}", " 1"),
        ("a{ns}", "01"),
        ("a{ns}", "-0"),
        ("a{bs}", "True"),
        ("a{ds}", "nan"),
        ("a{ds}", "1e999"),
        ("a{os}", "x"),
    ]:
        with pytest.raises(TypeMismatch, match="bad key"):
            from_json(sig, {key: "v"})


def test_json_variant_forms() -> None:
    assert from_json("v", ["n", -5]) == Variant("n", -5)
    assert from_json("v", ["a{sv}", {"a": ["b", True]}]) == Variant(
        "a{sv}", {"a": Variant("b", True)}
    )
    # documented lenience: bare scalars, inferred type
    assert from_json("v", True) == Variant("b", True)
    assert from_json("v", 5) == Variant("x", 5)
    assert from_json("v", 2**63) == Variant("t", 2**63)
    assert from_json("v", 0.5) == Variant("d", 0.5)
    assert from_json("v", "hi") == Variant("s", "hi")
    bad: object
    for bad in (
        None,
        {},
        [],
        ["n"],
        ["n", 1, 2],
        [1, 2],
        ["zz", 1],
        ["n", 1e3],
        2**64,
        -(2**63) - 1,
    ):
        with pytest.raises(TypeMismatch):
            from_json("v", bad)


def test_telemetry_example() -> None:
    data = {"TimeStamp": ["u", 1700000000], "Sys_SOC": 55.5, "Sys_Rated_Energy": ["d", 60.0]}
    value = from_json("a{sv}", data, "Telemetry")
    assert value == {
        "TimeStamp": Variant("u", 1700000000),
        "Sys_SOC": Variant("d", 55.5),
        "Sys_Rated_Energy": Variant("d", 60.0),
    }
    with pytest.raises(TypeMismatch) as info:
        from_json("a{sv}", {"TimeStamp": ["u", -1]}, "Telemetry")
    assert info.value.path == 'Telemetry["TimeStamp"]'


def test_from_json_error_paths() -> None:
    with pytest.raises(TypeMismatch) as info:
        from_json("a(snn)", [["charge", 1, 2], ["idle", 0, "x"]], "cmds")
    assert info.value.path == "cmds[1][2]"
    assert str(info.value).startswith("cmds[1][2]: ")
    with pytest.raises(TypeMismatch, match="3 fields"):
        from_json("a(snn)", [["charge", 1]])
    with pytest.raises(TypeMismatch, match="array"):
        from_json("a(snn)", {"a": 1})


def test_args_from_json() -> None:
    method = builtin_interface("edu.pdx.powerlab.demo").method("EnergyMethod")
    args = method.in_args
    assert args_from_json(args, [[["charge", 5, 60], ["idle", 0, 0]]]) == [
        [("charge", 5, 60), ("idle", 0, 0)]
    ]
    with pytest.raises(TypeMismatch) as info:
        args_from_json(args, [[["charge", 5, 60]], 1])
    assert str(info.value) == "expected 1 argument (cmds: a(snn)), got 2"
    with pytest.raises(TypeMismatch) as info:
        args_from_json(args, [[["charge", 5, 70000]]])
    assert info.value.path == "cmds[0][2]"
    assert str(info.value).startswith("cmds[0][2]: 70000 out of range for int16")
    with pytest.raises(TypeMismatch, match="JSON array"):
        args_from_json(args, {"cmds": []})
    with pytest.raises(TypeMismatch, match="expected 0 arguments, got 1"):
        args_from_json([], [1])


def test_args_to_json() -> None:
    args = [Arg("a", "s"), Arg(None, "(id)")]
    assert args_to_json(args, ["x", (1, 2)]) == ["x", [1, 2.0]]
    with pytest.raises(TypeMismatch, match=r"expected 2 arguments \(a: s, arg1: \(id\)\), got 1"):
        args_to_json(args, ["x"])
    with pytest.raises(TypeMismatch) as info:
        args_to_json(args, ["x", (1.5, 2)])
    assert info.value.path == "arg1[0]"

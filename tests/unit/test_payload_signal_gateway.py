"""Signal and home-gateway payloads (sef.bus._payload): round trips, the exact wire form the
docs give, and garbage that must raise only PayloadError."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sef.bus import (
    GatewayAgents,
    PayloadError,
    SignalEmission,
    decode_bridge_state,
    decode_object,
    encode_bridge_state,
)

finite = st.floats(allow_nan=False, allow_infinity=False)
json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63) | finite | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
times = st.floats(min_value=0, max_value=1e11, allow_nan=False)
seqs = st.integers(0, 2**32 - 1)
ids = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,20}", fullmatch=True)


# -- SignalEmission ---------------------------------------------------------------------


@given(args=st.lists(json_values, max_size=4), ts=st.none() | times, seq=st.none() | seqs)
def test_signal_round_trip(args: list[Any], ts: float | None, seq: int | None) -> None:
    signal = SignalEmission(args, ts, seq)
    assert SignalEmission.from_object(decode_object(signal.to_payload())) == signal


def test_signal_wire_form_is_the_protocol_one() -> None:
    # docs/protocol.md §5.4: {"v":1,"seq":6,"ts":...,"args":[<out-args in order>]}
    payload = SignalEmission([1, "x"], 1767225600.5, 6).to_payload()
    assert payload == b'{"v":1,"seq":6,"ts":1767225600.5,"args":[1,"x"]}'


@pytest.mark.parametrize(
    ("obj", "needle"),
    [
        ({"v": 1, "seq": 1}, "missing field 'args'"),
        ({"v": 1, "args": "x"}, "'args' must be an array"),
        ({"v": 1, "args": [], "seq": -1}, "'seq'"),
        ({"v": 1, "args": [], "seq": 2**32}, "'seq'"),
        ({"v": 1, "args": [], "seq": "3"}, "'seq'"),
        ({"v": 1, "args": [], "ts": -5}, "'ts'"),
        ({"v": 1, "args": [], "ts": True}, "'ts'"),
    ],
)
def test_signal_refuses_bad_fields(obj: dict[str, Any], needle: str) -> None:
    with pytest.raises(PayloadError, match=needle):
        SignalEmission.from_object(obj)


@given(st.dictionaries(st.sampled_from(["v", "args", "ts", "seq", "x"]), json_values, max_size=5))
def test_signal_garbage_raises_only_payload_error(obj: dict[str, Any]) -> None:
    try:
        signal = SignalEmission.from_object(obj)
    except PayloadError:
        return
    assert isinstance(signal.args, list)
    assert signal.seq is None or 0 <= signal.seq < 2**32


# -- GatewayAgents ----------------------------------------------------------------------


@given(home=ids, agents=st.lists(ids, max_size=8))
def test_gateway_agents_round_trip(home: str, agents: list[str]) -> None:
    listed = GatewayAgents(home, agents)
    assert GatewayAgents.from_object(decode_object(listed.to_payload())) == listed


def test_gateway_agents_wire_form_is_the_documented_one() -> None:
    # docs/gateway.md: {"v":1,"home":"HOME","agents":[...]}
    payload = GatewayAgents("home-1", ["bat-1", "wh-1"]).to_payload()
    assert json.loads(payload) == {"v": 1, "home": "home-1", "agents": ["bat-1", "wh-1"]}
    assert list(json.loads(payload)) == ["v", "home", "agents"]


@pytest.mark.parametrize(
    ("obj", "needle"),
    [
        ({"v": 1, "home": "h"}, "missing field 'agents'"),
        ({"v": 1, "agents": []}, "missing field 'home'"),
        ({"v": 1, "home": "h", "agents": "bat-1"}, "'agents' must be an array"),
        ({"v": 1, "home": "h", "agents": ["a", 2]}, "array of agent ids"),
        ({"v": 1, "home": 7, "agents": []}, "'home' must be a string"),
    ],
)
def test_gateway_agents_refuses_bad_fields(obj: dict[str, Any], needle: str) -> None:
    with pytest.raises(PayloadError, match=needle):
        GatewayAgents.from_object(obj)


@given(st.binary(max_size=200))
def test_gateway_agents_garbage_bytes_raise_only_payload_error(data: bytes) -> None:
    try:
        listed = GatewayAgents.from_object(decode_object(data))
    except PayloadError:
        return
    assert isinstance(listed.home, str)
    assert all(isinstance(a, str) for a in listed.agents)


@given(st.dictionaries(st.sampled_from(["v", "home", "agents", "x"]), json_values, max_size=4))
def test_gateway_agents_garbage_objects_raise_only_payload_error(obj: dict[str, Any]) -> None:
    try:
        listed = GatewayAgents.from_object(obj)
    except PayloadError:
        return
    assert isinstance(listed.home, str) and isinstance(listed.agents, list)


# -- bridge state ------------------------------------------------------------------------


@given(st.booleans())
def test_bridge_state_round_trip(up: bool) -> None:
    assert decode_bridge_state(encode_bridge_state(up)) is up


def test_bridge_state_is_mosquittos_notification() -> None:
    assert encode_bridge_state(True) == b"1" and encode_bridge_state(False) == b"0"
    assert decode_bridge_state(b" 1\n") is True
    assert decode_bridge_state(b"0\r\n") is False


@given(st.binary(max_size=40))
def test_bridge_state_garbage_raises_only_payload_error(data: bytes) -> None:
    try:
        up = decode_bridge_state(data)
    except PayloadError as exc:
        assert "bridge state must be 0 or 1" in str(exc)
    else:
        assert data.strip() == (b"1" if up else b"0")

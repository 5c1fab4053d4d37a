"""Unit tests for sef.bus payloads: decode_object hardening and typed payload round trips."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sef.bus import (
    MAX_PAYLOAD_BYTES,
    About,
    Call,
    ErrorName,
    InterfaceRef,
    PayloadError,
    PropertyUpdate,
    Reply,
    Status,
    decode_object,
    encode_object,
)

# -- strategies -------------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63) | finite | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
times = st.floats(min_value=0, max_value=1e11, allow_nan=False)
seqs = st.integers(0, 2**32 - 1)
opt = st.none().__or__


# -- decode_object ----------------------------------------------------------------------------


@given(st.binary(max_size=512))
def test_decode_arbitrary_bytes_raises_only_payload_error(data: bytes) -> None:
    try:
        obj = decode_object(data)
    except PayloadError as exc:
        assert exc.name in (ErrorName.MALFORMED, ErrorName.UNSUPPORTED_VERSION)
        assert str(exc)
    else:
        assert isinstance(obj, dict) and obj["v"] == 1


@given(json_values)
def test_decode_arbitrary_json_raises_only_payload_error(value: Any) -> None:
    data = json.dumps(value).encode()
    try:
        obj = decode_object(data)
    except PayloadError:
        assert not (
            isinstance(value, dict)
            and value.get("v") == 1
            and type(value["v"]) is int
            and "jws" not in value
            and "cose" not in value
        )
    else:
        assert obj == value


@given(st.text(alphabet='{}[]":,0123456789.eE+-tfnrulasvNIiy \\', max_size=80))
def test_decode_json_like_text_raises_only_payload_error(text: str) -> None:
    try:
        obj = decode_object(text.encode())
    except PayloadError as exc:
        assert exc.name in (ErrorName.MALFORMED, ErrorName.UNSUPPORTED_VERSION)
    else:
        assert obj["v"] == 1 and type(obj["v"]) is int


def test_huge_integer_literal_is_a_payload_error() -> None:
    # Python refuses int literals over 4300 digits with a plain ValueError
    data = b'{"v":1,"x":' + b"7" * 5000 + b"}"
    assert len(data) < MAX_PAYLOAD_BYTES
    with pytest.raises(PayloadError) as info:
        decode_object(data)
    assert info.value.name == ErrorName.MALFORMED


def test_size_limit() -> None:
    data = b'{"v":1,"pad":"' + b"x" * 100 + b'"}'
    with pytest.raises(PayloadError) as info:
        decode_object(data, max_bytes=len(data) - 1)
    assert info.value.name == ErrorName.TOO_LARGE
    assert str(len(data)) in str(info.value)
    assert str(len(data) - 1) in str(info.value)
    assert decode_object(data, max_bytes=len(data))["pad"] == "x" * 100


def test_default_size_limit() -> None:
    body = b'{"v":1,"pad":"'
    data = body + b"x" * (MAX_PAYLOAD_BYTES - len(body) - 2) + b'"}'
    assert len(data) == MAX_PAYLOAD_BYTES
    assert decode_object(data)["v"] == 1
    bigger = data[:-2] + b'x"}'
    with pytest.raises(PayloadError) as info:
        decode_object(bigger)
    assert info.value.name == ErrorName.TOO_LARGE
    assert f"{MAX_PAYLOAD_BYTES + 1} bytes" in str(info.value)
    assert f"{MAX_PAYLOAD_BYTES}-byte" in str(info.value)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"[]", "list"),
        (b"[1]", "list"),
        (b"1", "int"),
        (b'"v"', "str"),
        (b"null", "NoneType"),
        (b"true", "bool"),
        (b"1.5", "float"),
    ],
)
def test_non_object_json(data: bytes, kind: str) -> None:
    with pytest.raises(PayloadError, match=f"must be a JSON object, got {kind}") as info:
        decode_object(data)
    assert info.value.name == ErrorName.MALFORMED


@pytest.mark.parametrize(
    "data",
    [
        b"{}",
        b'{"v":2}',
        b'{"v":0}',
        b'{"v":"1"}',
        b'{"v":null}',
        b'{"v":true}',
        b'{"v":[1]}',
        b'{"version":1}',
    ],
)
def test_wrong_version(data: bytes) -> None:
    with pytest.raises(PayloadError, match="unsupported protocol version") as info:
        decode_object(data)
    assert info.value.name == ErrorName.UNSUPPORTED_VERSION


@pytest.mark.parametrize(
    "data",
    [b'{"v":1,"jws":"eyJ..."}', b'{"v":1,"cose":null}', b'{"jws":{}}', b'{"v":2,"jws":1}'],
)
def test_reserved_signature_keys(data: bytes) -> None:
    with pytest.raises(PayloadError, match="signed envelopes") as info:
        decode_object(data)
    assert info.value.name == ErrorName.UNSUPPORTED_VERSION


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_rejected(constant: str) -> None:
    with pytest.raises(PayloadError, match="non-finite") as info:
        decode_object(f'{{"v":1,"value":{constant}}}'.encode())
    assert info.value.name == ErrorName.MALFORMED


@pytest.mark.parametrize("literal", ["1e400", "-1e400", "1.5e309", "123456789e999"])
def test_numbers_beyond_a_double_rejected(literal: str) -> None:
    """Valid JSON syntax that no double holds (Python would read it as infinity): found
    by the registry fuzz test, a Telemetry value 1e400 made the agent list unserialisable."""
    with pytest.raises(PayloadError, match="out of range") as info:
        decode_object(f'{{"v":1,"value":{literal}}}'.encode())
    assert info.value.name == ErrorName.MALFORMED
    assert decode_object(b'{"v":1,"value":1.7976931348623157e308}')["value"] > 1e308


def test_encode_rejects_non_finite() -> None:
    with pytest.raises(ValueError):
        encode_object({"v": 1, "x": float("nan")})


@pytest.mark.parametrize("depth", [10_000, 100_000])
def test_deep_nesting(depth: int) -> None:
    data = b'{"v":1,"x":' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(PayloadError) as info:
        decode_object(data)
    assert info.value.name == ErrorName.MALFORMED


def test_moderate_nesting_is_fine() -> None:
    data = b'{"v":1,"x":' + b"[" * 50 + b"]" * 50 + b"}"
    obj = decode_object(data)
    inner = obj["x"]
    for _ in range(49):
        inner = inner[0]
    assert inner == []


@pytest.mark.parametrize(
    "data",
    [
        b'{"v":1,"s":"\xff"}',  # invalid UTF-8
        b'{"v":1,"s":"\xed\xa0\x80"}',  # UTF-8-encoded lone surrogate
        '{"v":1}'.encode("utf-16"),  # the protocol says UTF-8
        '{"v":1}'.encode("utf-32-le"),
    ],
)
def test_not_utf8(data: bytes) -> None:
    with pytest.raises(PayloadError) as info:
        decode_object(data)
    assert info.value.name == ErrorName.MALFORMED


@pytest.mark.parametrize("data", [b"", b"{", b'{"v":1', b"{'v':1}", b'{"v":1,}', b"\x00"])
def test_not_json(data: bytes) -> None:
    with pytest.raises(PayloadError, match="not JSON") as info:
        decode_object(data)
    assert info.value.name == ErrorName.MALFORMED


def test_encode_is_compact_utf8() -> None:
    assert encode_object({"v": 1, "name": "Ölspeicher"}) == '{"v":1,"name":"Ölspeicher"}'.encode()


# -- round trips ----------------------------------------------------------------------------


@given(
    online=st.booleans(),
    bdseq=st.integers(0, 2**63),
    ts=opt(times),
    keepalive=opt(st.integers(0, 65535)),
    seq=opt(seqs),
    reason=opt(st.text(max_size=20)),
)
def test_status_round_trip(
    online: bool,
    bdseq: int,
    ts: float | None,
    keepalive: int | None,
    seq: int | None,
    reason: str | None,
) -> None:
    status = Status(online, bdseq, ts, keepalive, seq, reason)
    obj = decode_object(status.to_payload())
    assert obj["state"] == ("online" if online else "offline")
    assert Status.from_object(obj) == status


about_fields = st.fixed_dictionaries(
    {k: st.text(max_size=12) for k in About.REQUIRED},
    optional={"Description": st.text(), "Extra": json_values},
)


@given(
    fields=about_fields,
    refs=st.lists(st.builds(InterfaceRef, st.text(max_size=20), st.text(max_size=64)), max_size=3),
    groups=st.lists(st.text(max_size=10), max_size=3),
    bdseq=st.integers(0, 2**63),
    ts=opt(times),
    seq=opt(seqs),
)
def test_about_round_trip(
    fields: dict[str, Any],
    refs: list[InterfaceRef],
    groups: list[str],
    bdseq: int,
    ts: float | None,
    seq: int | None,
) -> None:
    about = About(fields, refs, groups, bdseq, ts, seq)
    assert About.from_object(decode_object(about.to_payload())) == about


@given(value=json_values, ts=opt(times), seq=opt(seqs))
def test_property_update_round_trip(value: Any, ts: float | None, seq: int | None) -> None:
    update = PropertyUpdate(value, ts, seq)
    assert PropertyUpdate.from_object(decode_object(update.to_payload())) == update


reply_topics = st.text(min_size=1, max_size=40).filter(lambda s: "+" not in s and "#" not in s)


@given(
    call_id=st.text(min_size=1, max_size=128),
    args=st.lists(json_values, max_size=4),
    ts=times,
    exp=times,
    reply_to=opt(reply_topics),
    sender=opt(st.text(max_size=20)),
)
def test_call_round_trip(
    call_id: str, args: list[Any], ts: float, exp: float, reply_to: str | None, sender: str | None
) -> None:
    call = Call(call_id, args, ts, exp, reply_to, sender)
    assert Call.from_object(decode_object(call.to_payload())) == call


@given(
    call_id=st.text(max_size=40),
    agent=st.text(max_size=20),
    result=st.lists(json_values, max_size=4),
    ts=opt(times),
    seq=opt(seqs),
)
def test_reply_ok_round_trip(
    call_id: str, agent: str, result: list[Any], ts: float | None, seq: int | None
) -> None:
    reply = Reply(call_id, agent, True, result, ts=ts, seq=seq)
    assert Reply.from_object(decode_object(reply.to_payload())) == reply


@given(
    call_id=st.text(max_size=40),
    agent=st.text(max_size=20),
    error=st.sampled_from([ErrorName.FAILED, ErrorName.INVALID_ARGS, ErrorName.EXPIRED]),
    message=st.text(max_size=60),
    ts=opt(times),
    seq=opt(seqs),
)
def test_reply_error_round_trip(
    call_id: str, agent: str, error: str, message: str, ts: float | None, seq: int | None
) -> None:
    reply = Reply(call_id, agent, False, error=error, message=message, ts=ts, seq=seq)
    assert Reply.from_object(decode_object(reply.to_payload())) == reply


def test_reply_error_without_message_does_not_become_the_string_none() -> None:
    reply = Reply("c1", "bat-1", False, error=ErrorName.FAILED)
    back = Reply.from_object(decode_object(reply.to_payload()))
    assert back.error == ErrorName.FAILED
    assert back.message != "None"
    assert not back.message


def test_reply_error_null_name_defaults_to_failed() -> None:
    obj = {"v": 1, "id": "c", "agent": "a", "ok": False, "error": {"name": None}}
    assert Reply.from_object(obj).error == ErrorName.FAILED
    obj = {"v": 1, "id": "c", "agent": "a", "ok": False, "error": {}}
    back = Reply.from_object(obj)
    assert (back.error, back.message) == (ErrorName.FAILED, "")


# -- from_object rejections ------------------------------------------------------------------

CALL = {
    "v": 1,
    "id": "c1",
    "ts": 100.0,
    "exp": 110.0,
    "args": [],
    "reply_to": "sef/clients/x/reply",
}
STATUS = {"v": 1, "state": "online", "bdseq": 5, "ts": 1.0, "keepalive_s": 30, "seq": 0}
ABOUT = {
    "v": 1,
    "bdseq": 5,
    "about": {k: "x" for k in About.REQUIRED},
    "interfaces": [{"name": "a.b", "sha256": "00"}],
    "groups": ["g"],
}
REPLY = {"v": 1, "id": "c1", "agent": "a", "ok": True, "result": [1]}


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    obj = dict(base)
    for key, value in changes.items():
        if value is _MISSING:
            obj.pop(key)
        else:
            obj[key] = value
    return obj


_MISSING = object()


def test_valid_bases_parse() -> None:
    assert Call.from_object(CALL).id == "c1"
    assert Status.from_object(STATUS).bdseq == 5
    assert About.from_object(ABOUT).groups == ["g"]
    assert Reply.from_object(REPLY).result == [1]


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"exp": "soon"}, r"'exp' must be .*number.*got str"),
        ({"ts": True}, r"'ts' must be .*got bool"),
        ({"exp": -1}, r"'exp' must be a non-negative Unix time"),
        ({"id": _MISSING}, r"missing field 'id'"),
        ({"id": None}, r"missing field 'id'"),
        ({"id": 7}, r"'id' must be a string, got int"),
        ({"id": ""}, r"'id' must be 1-128"),
        ({"id": "x" * 129}, r"'id' must be 1-128"),
        ({"ts": _MISSING}, r"missing field 'ts'"),
        ({"exp": _MISSING}, r"missing field 'exp'"),
        ({"args": _MISSING}, r"missing field 'args'"),
        ({"args": {"a": 1}}, r"'args' must be an array, got dict"),
        ({"reply_to": "sef/clients/#"}, r"'reply_to' must be a topic without wildcards"),
        ({"reply_to": "sef/+/reply"}, r"'reply_to'"),
        ({"reply_to": ""}, r"'reply_to'"),
        ({"reply_to": 5}, r"'reply_to' must be a string"),
        ({"sender": ["me"]}, r"'sender' must be a string, got list"),
    ],
)
def test_call_rejects(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(PayloadError, match=match):
        Call.from_object(_with(CALL, **changes))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"state": "maybe"}, r"'state' must be 'online' or 'offline'"),
        ({"state": True}, r"'state' must be a string, got bool"),
        ({"state": _MISSING}, r"missing field 'state'"),
        ({"bdseq": _MISSING}, r"missing field 'bdseq'"),
        ({"bdseq": True}, r"'bdseq' must be an integer, got bool"),
        ({"bdseq": 5.0}, r"'bdseq' must be an integer, got float"),
        ({"bdseq": "5"}, r"'bdseq' must be an integer, got str"),
        ({"bdseq": -1}, r"'bdseq' must be >= 0"),
        ({"keepalive_s": 1.5}, r"'keepalive_s' must be an integer"),
        ({"seq": 2**32}, r"'seq' must be in 0..4294967295"),
        ({"seq": -1}, r"'seq' must be in 0..4294967295"),
        ({"seq": False}, r"'seq' must be an integer, got bool"),
        ({"ts": "now"}, r"'ts' must be"),
        ({"reason": 3}, r"'reason' must be a string"),
    ],
)
def test_status_rejects(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(PayloadError, match=match):
        Status.from_object(_with(STATUS, **changes))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"about": _MISSING}, r"missing field 'about'"),
        ({"about": ["x"]}, r"'about' must be an object"),
        ({"about": {"AppId": "x"}}, r"missing required field\(s\) DeviceId, AppName"),
        ({"interfaces": _MISSING}, r"missing field 'interfaces'"),
        ({"interfaces": [{"name": "a.b", "sha256": "0"}, {"name": "c.d"}]}, r"interfaces\[1\]"),
        ({"interfaces": ["a.b"]}, r"interfaces\[0\]"),
        ({"groups": ["g", 1]}, r"'groups' must be an array of strings"),
        ({"groups": "g"}, r"'groups' must be an array"),
        ({"bdseq": _MISSING}, r"missing field 'bdseq'"),
        ({"bdseq": "1"}, r"'bdseq' must be an integer"),
    ],
)
def test_about_rejects(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(PayloadError, match=match):
        About.from_object(_with(ABOUT, **changes))


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ({"v": 1}, r"missing field 'value'"),
        ({"v": 1, "value": 1, "ts": "x"}, r"'ts' must be"),
        ({"v": 1, "value": 1, "ts": -5}, r"'ts' must be a non-negative"),
        ({"v": 1, "value": 1, "seq": 1.0}, r"'seq' must be an integer, got float"),
    ],
)
def test_property_update_rejects(obj: dict[str, Any], match: str) -> None:
    with pytest.raises(PayloadError, match=match):
        PropertyUpdate.from_object(obj)


def test_property_update_null_value_is_a_value() -> None:
    assert PropertyUpdate.from_object({"v": 1, "value": None}).value is None


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"ok": "yes"}, r"'ok' must be a boolean, got str"),
        ({"ok": 1}, r"'ok' must be a boolean, got int"),
        ({"ok": _MISSING}, r"missing field 'ok'"),
        ({"agent": _MISSING}, r"missing field 'agent'"),
        ({"id": 1}, r"'id' must be a string"),
        ({"result": "x"}, r"'result' must be an array"),
        ({"ok": False}, r"missing field 'error'"),
        ({"ok": False, "error": "boom"}, r"'error' must be an object"),
    ],
)
def test_reply_rejects(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(PayloadError, match=match):
        Reply.from_object(_with(REPLY, **changes))


def test_payload_error_defaults_to_malformed() -> None:
    exc = PayloadError("x")
    assert exc.name == ErrorName.MALFORMED
    assert isinstance(exc, ValueError)

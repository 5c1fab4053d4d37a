"""The payload decoder's fast path (orjson, issue 16) accepts and refuses exactly what the
standard library's path does, with the same values and the same reasons."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sef.bus import PayloadError, _payload, decode_object, loads_kept


def _outcome(payload: bytes) -> tuple[str, str]:
    try:
        return ("ok", repr(decode_object(payload)))  # repr: 1 and 1.0, 0.0 and -0.0 differ
    except PayloadError as exc:
        return ("error", f"{exc.name}: {exc}")


def _both(payload: bytes, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    fast = _outcome(payload)
    with monkeypatch.context() as m:
        m.setattr(_payload, "_fast_loads", None)
        slow = _outcome(payload)
    return fast, slow


HOSTILE = [
    b'{"v":1,"value":1e400}',
    b'{"v":1,"value":-1e400}',
    b'{"v":1,"value":NaN}',
    b'{"v":1,"value":Infinity}',
    b'{"v":1,"value":-Infinity}',
    b'{"v":1,"value":1' + b"0" * 400 + b".5}",
    b'{"v":1,"value":123456789012345678901234567890}',
    b'{"v":1,"value":-9223372036854775809}',
    b'{"v":1,"value":18446744073709551616}',
    b'{"v":1,"value":"\\ud800"}',
    b'{"v":1,"value":"\xed\xa0\x80"}',
    b'{"v":1,"value":"\xff"}',
    b'\xef\xbb\xbf{"v":1}',
    b'{"v":1,"value":' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"v":1,"value":' + b"[" * 900 + b"]" * 900 + b"}",
    b'{"v":1,"v":2}',
    b'{"v":1.0}',
    b'{"v":true}',
    b"[1,2]",
    b'"x"',
    b"",
    b" ",
    b'{"v":1} x',
    b'{"v":1,"value":01}',
    b'{"v":1,"value":"a\x01b"}',
    b'{"v":1,"value":-0.0}',
    b'{"v":1,"value":1.7976931348623157e308}',
    b'{"v":1,"value":5e-324}',
    b'{"v":1,"value":1e-400}',
    b'{"v":1,"jws":"x"}',
]


@pytest.mark.parametrize("payload", HOSTILE)
def test_hostile_payloads_same_outcome(payload: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    fast, slow = _both(payload, monkeypatch)
    assert fast == slow


def test_overflow_and_nan_still_refused_with_a_reason() -> None:
    for payload, reason in (
        (b'{"v":1,"value":1e400}', "out of range"),
        (b'{"v":1,"value":NaN}', "non-finite number NaN"),
        (b'{"v":1,"value":1' + b"0" * 400 + b".5}", "out of range"),
    ):
        with pytest.raises(PayloadError, match=reason):
            decode_object(payload)


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(value=_VALUES)
def test_generated_values_decode_alike(value: Any) -> None:
    payload = json.dumps({"v": 1, "value": value}).encode()
    assert repr(decode_object(payload)) == repr(json.loads(payload))
    assert repr(loads_kept(payload)) == repr(json.loads(payload))


@settings(max_examples=500, deadline=None)
@given(
    data=st.binary(max_size=80)
    | st.builds(
        lambda a, b, c: a + b + c,
        st.sampled_from([b'{"v":1,"value":', b'{"v":1,"x":[', b"{", b'{"v":']),
        st.binary(max_size=40),
        st.sampled_from([b"}", b"]}", b"", b'"}']),
    )
)
def test_arbitrary_bytes_same_outcome(data: bytes) -> None:
    fast = _outcome(data)
    saved = _payload._fast_loads
    _payload._fast_loads = None
    try:
        slow = _outcome(data)
    finally:
        _payload._fast_loads = saved
    assert fast == slow

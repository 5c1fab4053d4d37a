"""Calls are validated once: a CallTarget is valid by construction, check_args is the one
place arguments are checked, and the Caller sends a checked call as it is."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sef.bus import Call, Topics, decode_object
from sef.clock import RealClock
from sef.ems import EMS, Caller, CallRefused, CallTarget, CheckedArgs, check_args
from sef.interface import DEMO_INTERFACE, builtin_interface

ids = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}", fullmatch=True)
DEMO = builtin_interface(DEMO_INTERFACE)


# -- CallTarget ---------------------------------------------------------------------------


@given(name=ids, group=st.booleans())
def test_target_text_round_trip(name: str, group: bool) -> None:
    target = CallTarget(name, group)
    assert str(target) == (f"group:{name}" if group else name)
    assert CallTarget.parse(str(target)) == target


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: CallTarget("a b"), "invalid agent id 'a b'"),
        (lambda: CallTarget("", group=True), "invalid group id ''"),
        (lambda: CallTarget("x/y", group=True), "invalid group id 'x/y'"),
        (lambda: CallTarget.parse("group:"), "invalid group id ''"),
        (lambda: CallTarget.parse("bad/id"), "invalid agent id 'bad/id'"),
        (lambda: CallTarget.parse("group:a+b"), "invalid group id 'a+b'"),
    ],
)
def test_invalid_targets_cannot_be_made(make: Any, needle: str) -> None:
    with pytest.raises(CallRefused, match=re.escape(needle)):
        make()


# -- check_args -----------------------------------------------------------------------------


def test_check_args_accepts_and_decodes() -> None:
    cmds = [["charge", 4, 1800], ["idle", 0, 0]]
    checked = check_args(DEMO, DEMO_INTERFACE, "EnergyMethod", [cmds])
    assert checked == CheckedArgs(
        DEMO_INTERFACE, "EnergyMethod", [cmds], [[("charge", 4, 1800), ("idle", 0, 0)]]
    )


@pytest.mark.parametrize(
    ("method", "args", "needle", "path"),
    [
        ("Nope", [], "has no method 'Nope'", None),
        ("EnergyMethod", [[["charge", 4, 70000]]], "out of range", "cmds[0][2]"),
        ("EnergyMethod", [[["charge", 4.5, 60]]], "expected an integer", "cmds[0][1]"),
        ("EnergyMethod", [[["charge", 4]]], "with 3 fields, got 2", "cmds[0]"),
        ("EnergyMethod", [], "expected 1 argument", ""),
        ("EnergyMethod", "x", "must be a JSON array", ""),
    ],
)
def test_check_args_refuses_with_the_offending_path(
    method: str, args: Any, needle: str, path: str | None
) -> None:
    with pytest.raises(CallRefused, match=needle) as info:
        check_args(DEMO, DEMO_INTERFACE, method, args)
    if path is None:
        assert info.value.mismatch is None
    else:
        assert info.value.mismatch is not None and info.value.mismatch.path == path
        assert str(info.value).startswith(f"invalid arguments for {DEMO_INTERFACE}.{method}: ")


def test_check_args_refuses_an_interface_name_no_topic_can_hold() -> None:
    with pytest.raises(CallRefused, match="invalid interface name 'no dots'"):
        check_args(DEMO, "no dots", "EnergyMethod", [[["idle", 0, 0]]])


def test_ems_check_needs_a_known_interface() -> None:
    ems = EMS("mqtt://127.0.0.1:1", "check-test", announce=False, request_rebirth=False)
    with pytest.raises(CallRefused, match=re.escape("unknown interface 'com.example.Nope'")):
        ems.check("com.example.Nope", "X", [])
    assert ems.check("sef.Agent", "Ping", []).method == "Ping"


# -- the Caller sends what it is given --------------------------------------------------------


class FakeBus:
    connected = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, **_: Any) -> None:
        self.sent.append((topic, payload))


@pytest.mark.parametrize(
    ("target", "topic"),
    [
        (CallTarget("bat-1"), "sef/agents/bat-1/call/edu.pdx.powerlab.demo/EnergyMethod"),
        (
            CallTarget("feeder-7", group=True),
            "sef/groups/feeder-7/call/edu.pdx.powerlab.demo/EnergyMethod",
        ),
    ],
)
async def test_caller_publishes_a_checked_call_to_its_target(
    target: CallTarget, topic: str
) -> None:
    bus = FakeBus()
    caller = Caller(bus, RealClock(), Topics(), sender="ems")  # type: ignore[arg-type]
    checked = check_args(DEMO, DEMO_INTERFACE, "EnergyMethod", [[["charge", 4, 1800]]])
    assert await caller.call(target, checked, reply=False, call_id="c-1") == []
    [(sent_topic, payload)] = bus.sent
    assert sent_topic == topic
    call = Call.from_object(decode_object(payload))
    assert call.id == "c-1" and call.reply_to is None and call.sender == "ems"
    assert json.loads(payload)["args"] == [[["charge", 4, 1800]]]
    assert caller.calls_sent == 1

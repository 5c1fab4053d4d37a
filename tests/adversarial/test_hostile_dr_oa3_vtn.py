"""Hostile OpenADR 3 events that the test VTN serves as they are (issue 15).

The OpenADR 3 test VTN (``tests/openadr/oa3_vtn.py``, uvicorn on loopback) stores each
event with ``put_raw_event`` (no check: a misbehaving VTN) and serves it over HTTP. The real
:class:`~sef.openadr._oadr3.Oadr3Adapter` polls the VTN and hands what it reads to a real
:class:`~sef.openadr.DrBridge` over the dr_stack. Each event must end opted out with its
reason, logged; nothing may be sent to a device; and a good event must still be carried
out afterwards. NaN and infinity cannot be sent: the VTN's JSON encoder refuses them, and
``test_hostile_dr_events.py`` feeds them to the adapter directly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from hostile_dr_support import Oa3Vtn, oa3_config, rig, simple_oa3

from sef.openadr import Opt
from sef.openadr._oadr3 import Oadr3Adapter
from support import wait_for

Change = Callable[[dict[str, Any]], None]


def _value(value: Any) -> Change:
    def change(event: dict[str, Any]) -> None:
        event["intervals"][0]["payloads"][0]["values"] = [value] if value != "two" else [1, 2]

    return change


def _period(**fields: str) -> Change:
    def change(event: dict[str, Any]) -> None:
        event["intervalPeriod"].update(fields)

    return change


def _targets(names: list[str]) -> Change:
    def change(event: dict[str, Any]) -> None:
        event["targets"] = names

    return change


def _megawatt_limit(event: dict[str, Any]) -> None:
    event["payloadDescriptors"] = [
        {
            "objectType": "EVENT_PAYLOAD_DESCRIPTOR",
            "payloadType": "IMPORT_CAPACITY_LIMIT",
            "units": "MW",
        }
    ]
    event["intervals"][0]["payloads"] = [{"type": "IMPORT_CAPACITY_LIMIT", "values": [1e308]}]


def _no_intervals(event: dict[str, Any]) -> None:
    event["intervals"] = []


CASES: list[tuple[str, Change, str]] = [
    ("simple-4", _value(4), "outside"),
    ("simple-2.5", _value(2.5), "not a whole number"),
    ("simple-2-64", _value(2**64), "outside"),
    ("simple-text", _value("3"), "not a number"),
    ("simple-two-values", _value("two"), "has 2 values, want 1"),
    ("limit-1e308-MW", _megawatt_limit, "out of range"),
    ("start-1970", _period(start="1970-01-01T00:00:00Z"), "already over"),
    ("duration-0", _period(duration="PT0S"), "duration <= 0"),
    ("duration-negative", _period(duration="-PT1H"), "bad time or duration"),
    ("duration-1000-years", _period(duration="P1000Y"), "longer than the 744 h"),
    ("bare-time", _period(start="17:00"), "not an RFC 3339 date-time"),
    ("no-intervals", _no_intervals, "intervals"),
    (
        "wildcards",
        _targets(["*", "#", "+", "group:*", "../x", "ｂａｔｔｅｒｉｅｓ"]),
        "name no known",
    ),
    ("long-target", _targets(["b" * 10_000]), "no known"),
]


async def test_hostile_events_from_the_oa3_vtn_are_opted_out(
    broker_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sef.openadr")
    async with rig(broker_url) as r:
        vtn = await Oa3Vtn(r.stack.clock.now).start()
        adapter: Oadr3Adapter | None = None
        try:
            program = str((await vtn.create("/programs", {"programName": "hostile"}))["id"])
            start_s = r.stack.clock.now() + 600
            for event_id, change, _ in CASES:
                event = simple_oa3(program, event_id, start_s, 3)
                change(event)
                vtn.put_raw_event(event)
            adapter = Oadr3Adapter(oa3_config(vtn), clock=r.stack.clock)
            await adapter.start(r.bridge)
            decisions = adapter.decisions()
            for event_id, _, words in CASES:
                state = decisions[event_id]
                assert state.decision.opt is Opt.OUT, (event_id, state.decision)
                assert words in state.decision.reason, (event_id, state.decision.reason)
                assert any(event_id in m and words in m for m in caplog.messages), event_id
            await asyncio.sleep(0.5)
            assert r.untouched(), r.calls.calls
            vtn.put_raw_event(simple_oa3(program, "good", r.stack.clock.now() + 60, 3))
            await wait_for(lambda: r.stack.battery_kw("bat-1") < 0, 10.0)
            assert {by for _, _, by in r.calls.calls} == {"openadr:oadr3:good"}
            assert adapter.status().errors == 0  # hostile events are not VTN failures
        finally:
            if adapter is not None:
                await adapter.stop()
            await vtn.stop()

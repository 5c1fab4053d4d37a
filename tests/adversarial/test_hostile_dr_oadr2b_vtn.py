"""Hostile OpenADR 2.0b events that a real openleadr VTN sends (issue 15).

A real openleadr VTN on loopback queues the events; the real :class:`Oadr2bAdapter` polls
it and hands what it parses to a real :class:`~sef.openadr.DrBridge` over the dr_stack.
Covered here: the shapes the wire can carry (2^64, ±1e308, SIMPLE 2.5 / -1 / 4 through a
pre-flight shim, a start in 1970 or in year 9999, a 1e12-s random-start window, wildcard
and 10 000-char targets, NaN). The answer the VTN receives is checked, as are the log, the
command log and the emulators (docs/robustness.md, "Demand response (OpenADR)").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hostile_dr_support import (
    POWER_KW,
    Rig,
    TestVtn,
    let_simple_levels_through,
    on_clock,
    raw_event,
    rig,
    warned,
)
from openleadr import objects, utils

from sef.openadr import Oadr2bAdapter, Oadr2bConfig
from support import wait_for

KW = objects.Measurement(
    name="powerReal",
    description="RealPower",
    unit=POWER_KW["unit"],
    scale=POWER_KW["scale"],
    power_attributes=objects.PowerAttributes(50, 230, True),
)


@contextlib.asynccontextmanager
async def ven(broker_url: str) -> AsyncIterator[tuple[Rig, TestVtn, str]]:
    """The rig's bridge attached to a real openleadr VTN (plain HTTP, 1-s poll)."""
    async with rig(broker_url) as r:
        vtn = await TestVtn().start()
        adapter = Oadr2bAdapter(
            Oadr2bConfig(vtn_url=vtn.url, ven_name="sef-ems", report_groups=()),
            clock=r.stack.clock,
        )
        await r.bridge.attach(adapter)
        try:
            yield r, vtn, adapter.status().ven_id or ""
        finally:
            await r.bridge.close()
            await vtn.stop()


def _ignore(ven_id: str, event_id: str, opt_type: str) -> None:
    """Openleadr wants a callback per event; the VTN records the opts itself."""


def _queue(vtn: TestVtn, ven_id: str, event: objects.Event) -> None:
    vtn.server.add_raw_event(ven_id=ven_id, event=event, callback=_ignore)


def _opt(vtn: TestVtn, event_id: str) -> str | None:
    seen = vtn.opts_for(event_id)
    return seen[-1].opt if seen else None


async def test_hostile_events_from_a_real_vtn_are_opted_out(
    broker_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sef.openadr")
    async with ven(broker_url) as (r, vtn, ven_id):
        start = on_clock(r.stack, 600)
        us = objects.Target(ven_id=ven_id)
        expected: dict[str, str] = {}

        def add(event_id: str, words: str, name: str, kind: str, value: float, **kw: Any) -> None:
            kw.setdefault("target", us)
            _queue(vtn, ven_id, raw_event(event_id, start, name, kind, [value], 60, **kw))
            expected[event_id] = words

        add("ld-2-64", "outside", "LOAD_DISPATCH", "delta", 2**64, measurement=KW)
        add("ld-1e308", "outside", "LOAD_DISPATCH", "delta", 1e308, measurement=KW)
        add("ld-neg-1e308", "outside", "LOAD_DISPATCH", "delta", -1e308, measurement=KW)
        add("simple-2.5", "not a whole number", "SIMPLE", "level", 2.5)
        add("simple-neg", "outside", "SIMPLE", "level", -1)
        add("simple-4", "outside", "SIMPLE", "level", 4)
        add("wildcard", "name no known group", "SIMPLE", "level", 3)
        add("long-group", "name no known group", "SIMPLE", "level", 3)
        old = raw_event(
            "start-1970", datetime(1970, 1, 1, tzinfo=UTC), "SIMPLE", "level", [3], 60, target=us
        )
        _queue(vtn, ven_id, old)  # handed over, but openleadr sends no answer for it
        for event in vtn.server.events[ven_id]:  # several targets: set after construction
            event_id = event.event_descriptor.event_id
            if event_id == "wildcard":
                names = ["*", "#", "+", "../x"]
                event.targets = [us, *(objects.Target(resource_id=x) for x in names)]
                event.targets_by_type = {"ven_id": [ven_id], "resource_id": names}
            elif event_id == "long-group":
                event.targets = [us, objects.Target(group_id="g" * 10_000)]
                event.targets_by_type = {"ven_id": [ven_id], "group_id": ["g" * 10_000]}
        with let_simple_levels_through({"simple-2.5", "simple-neg", "simple-4"}):  # all along
            await wait_for(lambda: all(_opt(vtn, e) for e in expected), 15.0)
            assert {e: _opt(vtn, e) for e in expected} == dict.fromkeys(expected, "optOut")
            expected["start-1970"] = "already over"
            record = r.bridge.history.latest("oadr2b", "start-1970")
            assert record is not None and record.opt == "optOut"
            for event_id, words in expected.items():
                assert warned(caplog, event_id, words), (event_id, words)
            await asyncio.sleep(0.5)
            assert r.untouched(), r.calls.calls
            vtn.add_simple(ven_id, "good", 3, on_clock(r.stack, 60), 600)
            await wait_for(lambda: r.stack.battery_kw("bat-1") < 0, 10.0)
            assert _opt(vtn, "good") == "optIn"
            assert {by for _, _, by in r.calls.calls} == {"openadr:oadr2b:good"}


async def test_a_nan_payload_is_never_heard_and_does_not_stop_the_ven(
    broker_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A VTN rendering NaN makes its whole ``oadrDistributeEvent`` schema-invalid: openleadr
    drops the message (it logs the schema failure; no answer), nothing reaches the bridge,
    nothing is sent. Every event of that message is lost with it, so the good event is
    queued once the VTN has dropped the NaN one; it is then carried out."""
    async with ven(broker_url) as (r, vtn, ven_id):
        bad = raw_event(
            "ld-nan",
            on_clock(r.stack, 600),
            "LOAD_DISPATCH",
            "delta",
            [float("nan")],
            60,
            measurement=KW,
            target=objects.Target(ven_id=ven_id),
        )
        caplog.set_level(logging.WARNING, logger="openleadr")
        _queue(vtn, ven_id, bad)

        def refused() -> int:
            return sum("schema validation" in m and "'nan'" in m for m in caplog.messages)

        await wait_for(lambda: refused() >= 1, 10.0)
        await asyncio.sleep(2.5)  # two more polls: nothing new, nothing heard
        assert not vtn.opts_for("ld-nan") and not r.bridge.history.records()
        assert r.untouched(), r.calls.calls
        vtn.server.events[ven_id].remove(bad)
        vtn.server.events_updated[ven_id] = True
        vtn.add_simple(ven_id, "good", 3, on_clock(r.stack, 60), 600)
        await wait_for(lambda: r.stack.battery_kw("bat-1") < 0, 10.0)
        assert {by for _, _, by in r.calls.calls} == {"openadr:oadr2b:good"}


async def test_far_future_and_huge_random_windows_are_opted_out(broker_url: str) -> None:
    """An event starting in year 9999 and one whose random-start window
    (tolerance/startafter) is 1e12 s, from the real 2.0b VTN: opted out by the mapping's
    ``[limits] max_lead_s`` / ``max_randomize_s``, nothing scheduled."""
    async with ven(broker_url) as (r, vtn, ven_id):
        vtn.add_simple(ven_id, "year-9999", 2, datetime(9999, 12, 30, 22, tzinfo=UTC), 600)
        randomised = raw_event(
            "random-1e12",
            on_clock(r.stack, 60),
            "SIMPLE",
            "level",
            [2],
            600,
            target=objects.Target(ven_id=ven_id),
        )
        _queue(vtn, ven_id, randomised)
        # add_raw_event rebuilt active_period without tolerance (quirk 6a): set it again
        utils.setmember(
            randomised, "active_period.tolerance", {"startafter": timedelta(seconds=1e12)}
        )
        await wait_for(lambda: bool(_opt(vtn, "year-9999") and _opt(vtn, "random-1e12")), 10.0)
        assert (_opt(vtn, "year-9999"), _opt(vtn, "random-1e12")) == ("optOut", "optOut")
        assert not r.bridge.executor._plans  # nothing scheduled

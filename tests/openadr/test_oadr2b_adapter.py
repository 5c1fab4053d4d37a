"""The OpenADR 2.0b VEN adapter against a real openleadr VTN on loopback (poll 1 s), and its
event conversion on hand-built openleadr-shaped dicts (malformed cases)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from oadr2b_vtn import MARKET_CONTEXT, RecordingSink, TestVtn

from sef.clock import RealClock
from sef.openadr import (
    DrEvent,
    EventStatus,
    Oadr2bAdapter,
    Oadr2bConfig,
    OptDecision,
    TelemetrySample,
    VenAdapter,
)
from sef.openadr._oadr2b_events import EventFormatError, event_from_oadr2b
from support import wait_for

log = logging.getLogger(__name__)


@pytest.fixture
async def vtn() -> AsyncIterator[TestVtn]:
    """A plain-HTTP openleadr VTN on a free loopback port, poll 1 s."""
    server = await TestVtn().start()
    yield server
    await server.stop()


async def started(vtn: TestVtn, sink: RecordingSink, **config: Any) -> Oadr2bAdapter:
    """An adapter registered with ``vtn``."""
    config.setdefault("report_interval_s", 1)
    adapter = Oadr2bAdapter(
        Oadr2bConfig(vtn_url=vtn.url, ven_name="sef-ems", **config), clock=RealClock()
    )
    await adapter.start(sink)
    return adapter


def soon(seconds: float) -> datetime:
    """An aware UTC time ``seconds`` from now, whole seconds (what 2.0b carries)."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0)


# ---------------------------------------------------------------------- loopback


async def test_simple_level2_reaches_sink_and_opt_in_reaches_vtn(vtn: TestVtn) -> None:
    sink = RecordingSink()
    adapter = await started(vtn, sink)
    try:
        status = adapter.status()
        assert status.registered and status.ven_id == "VEN-sef-ems"
        start = soon(60)
        added = vtn.add_simple(status.ven_id, "simple-1", 2, start, 600)
        await wait_for(lambda: bool(vtn.opts_for("simple-1")), 5)
        event = sink.versions("simple-1")[0]
        latency = sink.event_seen_at[("simple-1", 0)] - added
        log.info("LATENCY oadr2b add_event -> sink.on_event %.3f s (poll 1 s)", latency)
        assert latency < 2.0
        assert event.source == "oadr2b" and event.modification == 0
        assert event.program == MARKET_CONTEXT
        assert event.status is EventStatus.FAR
        assert event.start_s == start.timestamp() and event.duration_s == 600
        assert event.targets.vens == ("VEN-sef-ems",) and event.targets.whole_fleet
        [signal] = event.signals
        assert (signal.name, signal.type, signal.unit) == ("SIMPLE", "level", None)
        [interval] = signal.intervals
        assert (interval.start_s, interval.duration_s, interval.value) == (
            start.timestamp(),
            600,
            2.0,
        )
        assert event.response_required and not event.test and event.randomize_s == 0
        assert [o.opt for o in vtn.opts_for("simple-1")] == ["optIn"]
        assert adapter.status().last_ok_s is not None
        assert adapter.status().programs == [MARKET_CONTEXT]
    finally:
        await adapter.stop()


async def test_sink_opt_out_reaches_vtn(vtn: TestVtn) -> None:
    sink = RecordingSink(decide=lambda event: OptDecision.opt_out("fleet cannot deliver"))
    adapter = await started(vtn, sink)
    try:
        vtn.add_simple(adapter.status().ven_id or "", "simple-out", 1, soon(60), 300)
        await wait_for(lambda: bool(vtn.opts_for("simple-out")), 5)
        assert [o.opt for o in vtn.opts_for("simple-out")] == ["optOut"]
    finally:
        await adapter.stop()


async def test_load_dispatch_kw_intervals_and_randomize(vtn: TestVtn) -> None:
    sink = RecordingSink()
    adapter = await started(vtn, sink)
    try:
        start = soon(120)
        vtn.add_dispatch(
            adapter.status().ven_id or "",
            "dispatch-1",
            start,
            [5.0, 3.0],
            900,
            resource_id="grp-batteries",
            startafter_s=120,
        )
        await wait_for(lambda: bool(vtn.opts_for("dispatch-1")), 5)
        [event] = sink.versions("dispatch-1")
        [signal] = event.signals
        assert (signal.name, signal.type, signal.unit) == ("LOAD_DISPATCH", "setpoint", "kW")
        t0 = start.timestamp()
        assert [(i.start_s, i.duration_s, i.value) for i in signal.intervals] == [
            (t0, 900, 5.0),
            (t0 + 900, 900, 3.0),
        ]
        assert event.randomize_s == 120
        assert event.duration_s == 1800
        assert event.targets.resources == ("grp-batteries",)
        assert not event.targets.whole_fleet
        assert vtn.opts_for("dispatch-1")[0].opt == "optIn"
    finally:
        await adapter.stop()


async def test_modification_then_cancellation(vtn: TestVtn) -> None:
    sink = RecordingSink()
    adapter = await started(vtn, sink)
    ven_id = adapter.status().ven_id or ""
    try:
        vtn.add_simple(ven_id, "mod-1", 1, soon(60), 600)
        await wait_for(lambda: bool(vtn.opts_for("mod-1")), 5)
        vtn.modify_level(ven_id, "mod-1", 3)
        await wait_for(lambda: len(sink.versions("mod-1")) == 2, 5)
        first, second = sink.versions("mod-1")
        assert (first.modification, second.modification) == (0, 1)
        assert second.signals[0].intervals[0].value == 3.0
        await wait_for(lambda: any(o.modification == 1 for o in vtn.opts_for("mod-1")), 5)
        vtn.cancel(ven_id, "mod-1")
        await wait_for(lambda: bool(sink.cancels), 5)
        assert sink.cancels == [("oadr2b", "mod-1", 2)]
        await wait_for(lambda: any(o.modification == 2 for o in vtn.opts_for("mod-1")), 5)
        assert [o.opt for o in vtn.opts_for("mod-1")] == ["optIn"] * 3
        assert len(sink.versions("mod-1")) == 2  # a cancellation is not a new event
    finally:
        await adapter.stop()


async def test_sink_failure_opts_out_only_that_event(vtn: TestVtn) -> None:
    sink = RecordingSink(fail_on=frozenset({"bad"}))
    adapter = await started(vtn, sink)
    ven_id = adapter.status().ven_id or ""
    try:
        vtn.add_simple(ven_id, "good", 1, soon(60), 600)
        vtn.add_simple(ven_id, "bad", 2, soon(90), 600)
        await wait_for(lambda: bool(vtn.opts_for("good")) and bool(vtn.opts_for("bad")), 5)
        assert vtn.opts_for("good")[-1].opt == "optIn"
        assert vtn.opts_for("bad")[-1].opt == "optOut"
    finally:
        await adapter.stop()


async def test_telemetry_report_values_at_vtn(vtn: TestVtn) -> None:
    now = time.time()
    sink = RecordingSink(
        samples={
            "grp-batteries": TelemetrySample("grp-batteries", now, -4.25, 33.5, 231.5, 18.125, 3),
            "*": TelemetrySample("*", now, 7.5, None, 229.0, 40.0, 5),
        }
    )
    adapter = await started(vtn, sink, report_groups=("grp-batteries", "*"), report_interval_s=1)
    try:
        wanted = [
            (group, item)
            for group in ("grp-batteries", "*")
            for item in ("RealPower", "RealEnergy", "Voltage", "Current")
        ]
        await wait_for(
            lambda: all(vtn.reports.get(k) for k in wanted if k != ("*", "RealEnergy")), 8
        )
        latest = {k: v[-1][1] for k, v in vtn.reports.items() if v}
        assert latest[("grp-batteries", "RealPower")] == -4.25
        assert latest[("grp-batteries", "RealEnergy")] == 33.5
        assert latest[("grp-batteries", "Voltage")] == 231.5
        assert latest[("grp-batteries", "Current")] == 18.125
        assert latest[("*", "RealPower")] == 7.5
        assert latest[("*", "Voltage")] == 229.0
        assert latest[("*", "Current")] == 40.0
        assert ("*", "RealEnergy") not in latest  # no member reports stored energy
        stamp = vtn.reports[("grp-batteries", "RealPower")][-1][0]
        assert abs(stamp.timestamp() - now) < 1
        assert adapter.status().errors == 0
    finally:
        await adapter.stop()


async def test_no_telemetry_sends_no_empty_reports(vtn: TestVtn) -> None:
    adapter = await started(vtn, RecordingSink())  # the sink knows no group
    try:
        await wait_for(lambda: (adapter.status().last_ok_s or 0) > 0, 3)
        await asyncio.sleep(2.5)  # two report intervals
        assert not any(vtn.reports.values())
        assert adapter.status().errors == 0  # the openleadr VTN answers an empty report 500
    finally:
        await adapter.stop()


async def test_cancelled_event_sent_again_keeps_other_opts(vtn: TestVtn) -> None:
    """Openleadr's VEN forgets its opt of a cancelled event; when the VTN sends that event
    again unchanged, openleadr raised KeyError and opted out of every event in the message.
    The adapter gives the opt back, so the active event stays opted in."""
    sink = RecordingSink()
    adapter = await started(vtn, sink)
    ven_id = adapter.status().ven_id or ""
    try:
        vtn.add_simple(ven_id, "keep", 1, soon(60), 600)
        vtn.add_simple(ven_id, "gone", 2, soon(60), 600)
        await wait_for(lambda: bool(vtn.opts_for("keep")) and bool(vtn.opts_for("gone")), 5)
        vtn.cancel(ven_id, "gone")
        await wait_for(lambda: len(vtn.opts_for("gone")) == 2, 5)
        vtn.server.add_raw_event(ven_id=ven_id, event=vtn.cancelled["gone"])
        vtn.modify_level(ven_id, "keep", 2)  # makes the VEN answer all events again
        await wait_for(lambda: any(o.modification == 1 for o in vtn.opts_for("keep")), 5)
        assert {o.opt for o in vtn.opts_for("keep")} == {"optIn"}  # mod 1 too
        assert len(vtn.opts_for("gone")) >= 3 and vtn.opts_for("gone")[-1].opt == "optIn"
    finally:
        await adapter.stop()


async def test_unknown_signal_reaches_sink_which_opts_out(vtn: TestVtn) -> None:
    def decide(event: DrEvent) -> OptDecision:
        if event.signals[0].name.startswith("x-"):
            return OptDecision.opt_out("unsupported signal")
        return OptDecision.opt_in()

    sink = RecordingSink(decide=decide)
    adapter = await started(vtn, sink)
    try:
        vtn.server.add_event(
            ven_id=adapter.status().ven_id,
            signal_name="x-foo",
            signal_type="level",
            intervals=[
                {"dtstart": soon(60), "duration": timedelta(minutes=5), "signal_payload": 1}
            ],
            event_id="foo",
            callback=lambda ven_id, event_id, opt_type: None,
        )
        await wait_for(lambda: bool(vtn.opts_for("foo")), 5)
        [event] = sink.versions("foo")
        assert (event.signals[0].name, event.signals[0].unit) == ("x-foo", None)
        assert [o.opt for o in vtn.opts_for("foo")] == ["optOut"]
    finally:
        await adapter.stop()


async def test_health_counts_failed_polls_when_the_vtn_goes_away(vtn: TestVtn) -> None:
    adapter = await started(vtn, RecordingSink())
    try:
        assert adapter.status().errors == 0
        await vtn.stop()
        await wait_for(lambda: adapter.status().errors >= 2, 5)
        status = adapter.status()
        assert status.last_error is not None and "OadrPoll" in status.last_error
        last_ok = status.last_ok_s
        await asyncio.sleep(1.2)
        assert adapter.status().last_ok_s == last_ok  # nothing succeeded since
    finally:
        await adapter.stop()


async def test_stop_lets_the_exchange_in_flight_finish(
    vtn: TestVtn, caplog: pytest.LogCaptureFixture
) -> None:
    """stop() during a poll whose event the sink is still deciding: the decision still
    reaches the VTN, and apscheduler logs no cancelled job."""
    deciding = asyncio.Event()

    class SlowSink(RecordingSink):
        async def on_event(self, event: DrEvent) -> OptDecision:
            deciding.set()
            await asyncio.sleep(0.5)
            return await super().on_event(event)

    adapter = await started(vtn, SlowSink())
    vtn.add_simple(adapter.status().ven_id or "", "slow", 1, soon(60), 600)
    await asyncio.wait_for(deciding.wait(), 5)
    with caplog.at_level(logging.ERROR):
        await adapter.stop()
        await asyncio.sleep(0.1)
    assert [o.opt for o in vtn.opts_for("slow")] == ["optIn"]
    assert not [r for r in caplog.records if r.name.startswith("apscheduler")]


async def test_configured_ven_id_is_kept(vtn: TestVtn) -> None:
    adapter = await started(vtn, RecordingSink(), ven_id="VEN-utility-42")
    try:
        assert adapter.status().ven_id == "VEN-utility-42"
        assert "VEN-utility-42" in vtn.vens
    finally:
        await adapter.stop()


async def test_stop_is_idempotent_and_status_says_so(vtn: TestVtn) -> None:
    adapter = await started(vtn, RecordingSink())
    await adapter.stop()
    await adapter.stop()
    assert not adapter.status().registered


async def test_unreachable_vtn_raises_connection_error() -> None:
    vtn = TestVtn()  # never started: nothing listens on its port
    adapter = Oadr2bAdapter(
        Oadr2bConfig(vtn_url=vtn.url, ven_name="sef-ems", register_timeout_s=5),
        clock=RealClock(),
    )
    with pytest.raises(ConnectionError):
        await adapter.start(RecordingSink())
    status = adapter.status()
    assert not status.registered and status.errors >= 1 and status.last_error
    await adapter.stop()


# ---------------------------------------------------------------------- conversion (unit)

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def oadr_event(**changes: Any) -> dict[str, Any]:
    """A LOAD_DISPATCH event shaped like openleadr's parse of an oadrEvent."""
    event: dict[str, Any] = {
        "event_descriptor": {
            "event_id": "e1",
            "modification_number": 4,
            "market_context": "http://utility/programs/peak",
            "event_status": "near",
            "priority": 2,
            "test_event": False,
            "created_date_time": T0,
        },
        "active_period": {
            "dtstart": T0,
            "duration": timedelta(minutes=30),
            "tolerance": {"tolerate": {"startafter": timedelta(minutes=5)}},
            "ramp_up": timedelta(minutes=2),
            "recovery": timedelta(minutes=3),
        },
        "event_signals": [
            {
                "intervals": [
                    {"duration": timedelta(minutes=10), "uid": 0, "signal_payload": 5.0},
                    {"duration": timedelta(minutes=20), "uid": 1, "signal_payload": 2500},
                ],
                "signal_name": "LOAD_DISPATCH",
                "signal_type": "setpoint",
                "signal_id": "s1",
                "measurement": {"name": "powerReal", "unit": "W", "scale": "k"},
            }
        ],
        "targets": [{"group_id": "feeder-7"}, {"resource_id": "bat-group"}],
        "targets_by_type": {"group_id": ["feeder-7"], "resource_id": ["bat-group"]},
        "response_required": "always",
    }
    for path, value in changes.items():
        node: Any = event
        keys = path.split("__")
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is _DELETE:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
    return event


_DELETE = object()


def test_conversion_of_a_full_event() -> None:
    event = event_from_oadr2b(oadr_event())
    t0 = T0.timestamp()
    assert event.key == ("oadr2b", "e1", 4)
    assert (event.start_s, event.duration_s) == (t0, 1800)
    assert (event.randomize_s, event.ramp_up_s, event.recovery_s) == (300, 120, 180)
    assert event.priority == 2 and event.status is EventStatus.NEAR
    assert event.targets.groups == ("feeder-7",) and event.targets.resources == ("bat-group",)
    [signal] = event.signals
    assert signal.unit == "kW"
    assert [(i.start_s, i.duration_s, i.value) for i in signal.intervals] == [
        (t0, 600, 5.0),
        (t0 + 600, 1200, 2500.0),
    ]
    assert event.raw["active_period"]["duration"] == 1800.0  # JSON-able


@pytest.mark.parametrize(
    ("measurement", "signal_type", "unit", "factor"),
    [
        ({"name": "powerReal", "unit": "W", "scale": "none"}, "setpoint", "kW", 1e-3),
        ({"name": "powerReal", "unit": "W", "scale": "M"}, "delta", "kW", 1e3),
        ({"name": "energyReal", "unit": "Wh", "scale": "k"}, "setpoint", "kWh", 1.0),
        ({"name": "currencyPerKWh", "unit": "USD", "scale": "none"}, "price", "USD/kWh", 1.0),
        ({"name": "currency", "unit": "EUR", "scale": "none"}, "price", "EUR", 1.0),
        ({"name": "customUnit", "unit": "percent", "scale": "none"}, "setpoint", "%", 1.0),
        (
            {"name": "temperature", "unit": "celsius", "scale": "none"},
            "x-loadControlSetpoint",
            "?temperature:celsius",
            1.0,
        ),
        ({"name": "powerReal", "unit": "VA", "scale": "k"}, "setpoint", "?powerReal:VA", 1.0),
        ({"name": "powerReal", "unit": "W", "scale": "k"}, "level", None, 1.0),
        ({"name": "powerReal", "unit": "W", "scale": "k"}, "multiplier", None, 1.0),
        (None, "setpoint", None, 1.0),
        (None, "x-loadControlPercentOffset", "%", 1.0),
    ],
)
def test_units_and_scales(
    measurement: dict[str, str] | None, signal_type: str, unit: str | None, factor: float
) -> None:
    raw = oadr_event(event_signals__0__signal_type=signal_type)
    if measurement is None:
        del raw["event_signals"][0]["measurement"]
    else:
        raw["event_signals"][0]["measurement"] = measurement
    [signal] = event_from_oadr2b(raw).signals
    assert signal.unit == unit
    assert signal.intervals[0].value == pytest.approx(5.0 * factor)


def test_currency_per_kw_left_unparsed_by_openleadr_is_read() -> None:
    raw = oadr_event(
        event_signals__0__signal_type="price", event_signals__0__signal_name="DEMAND_CHARGE"
    )
    del raw["event_signals"][0]["measurement"]
    raw["event_signals"][0]["currency_per_kw"] = {
        "item_description": "currencyPerKW",
        "item_units": "USD",
        "si_scale_code": "none",
    }
    [signal] = event_from_oadr2b(raw).signals
    assert signal.unit == "USD/kW"


def test_interval_starts_given_duration_zero_and_unknown_signal() -> None:
    raw = oadr_event(
        active_period__duration=timedelta(0),
        event_signals__0__signal_name="x-foo",
        event_signals__0__intervals=[
            {
                "dtstart": T0 + timedelta(minutes=5),
                "duration": timedelta(minutes=1),
                "signal_payload": 1,
            },
        ],
    )
    event = event_from_oadr2b(raw)
    assert math.isinf(event.duration_s) and math.isinf(event.end_s)
    [signal] = event.signals
    assert signal.name == "x-foo"
    assert signal.intervals[0].start_s == T0.timestamp() + 300


def test_lower_case_simple_and_targets_from_list_only() -> None:
    raw = oadr_event(event_signals__0__signal_name="simple", event_signals__0__signal_type="level")
    del raw["targets_by_type"]
    raw["targets"] = [{"ven_id": "v1"}, {"group_id": "g1"}, {"group_id": "g2"}]
    event = event_from_oadr2b(raw)
    assert event.signals[0].name == "SIMPLE"
    assert event.targets.groups == ("g1", "g2") and event.targets.vens == ("v1",)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"event_descriptor__event_id": _DELETE}, "no event_id"),
        ({"event_descriptor__event_status": "postponed"}, "unknown event status"),
        ({"event_descriptor__modification_number": -1}, "modification_number"),
        ({"active_period__dtstart": _DELETE}, "no dtstart"),
        ({"active_period__dtstart": "yesterday"}, "not a date-time"),
        ({"active_period__duration": timedelta(minutes=-5)}, "negative"),
        ({"active_period__duration": "PT5M"}, "not a duration"),
        ({"event_signals": []}, "no signals"),
        ({"event_signals__0__intervals": []}, "no intervals"),
        ({"event_signals__0__intervals__0__signal_payload": float("nan")}, "not finite"),
        ({"event_signals__0__intervals__0__signal_payload": "high"}, "not a number"),
        ({"event_signals__0__intervals__0__duration": timedelta(seconds=-1)}, "negative"),
        ({"event_signals__0__intervals__0__duration": _DELETE}, "no duration"),
        ({"event_signals__0__signal_type": _DELETE}, "no type"),
        ({"active_period__tolerance": {"tolerate": {"startafter": timedelta(-1)}}}, "negative"),
        ({"response_required": "sometimes"}, "response_required"),
        ({"event_descriptor__priority": "high"}, "priority"),
        ({"event_descriptor": None}, "event_descriptor"),
    ],
)
def test_malformed_events_raise_with_reason(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(EventFormatError, match=reason):
        event_from_oadr2b(oadr_event(**changes))


def test_last_interval_without_duration_runs_to_event_end() -> None:
    raw = oadr_event()
    del raw["event_signals"][0]["intervals"][1]["duration"]
    [signal] = event_from_oadr2b(raw).signals
    assert signal.intervals[1].duration_s == 1200


async def test_malformed_event_is_opted_out_with_logged_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = RecordingSink()
    adapter = Oadr2bAdapter(
        Oadr2bConfig(vtn_url="http://127.0.0.1:9", ven_name="v"), clock=RealClock()
    )
    adapter._sink = sink
    good = oadr_event()
    bad = oadr_event(event_signals__0__intervals__0__signal_payload=float("nan"))
    bad["event_descriptor"]["event_id"] = "e2"
    with caplog.at_level(logging.WARNING, logger="sef.openadr"):
        assert await adapter._on_event(bad) == "optOut"
        assert await adapter._on_event(good) == "optIn"
    assert [e.event_id for e in sink.events] == ["e1"]  # the malformed one never reached it
    assert any("e2" in r.getMessage() and "not finite" in r.getMessage() for r in caplog.records)


def test_dr_event_type_is_what_the_sink_gets() -> None:
    assert isinstance(event_from_oadr2b(oadr_event()), DrEvent)


def test_adapter_is_a_ven_adapter() -> None:
    adapter: VenAdapter = Oadr2bAdapter(
        Oadr2bConfig(vtn_url="http://127.0.0.1:9", ven_name="v"), clock=RealClock()
    )
    assert adapter.source == "oadr2b" and adapter.status().vtn == "http://127.0.0.1:9"

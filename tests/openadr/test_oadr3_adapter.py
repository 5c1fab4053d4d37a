"""The OpenADR 3 VEN adapter against the test VTN on loopback (real HTTP, real uvicorn)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oa3_vtn import VEN_CLIENT, Oa3Vtn, iso, limit_event
from openadr3 import VEN_SCOPES

from sef.clock import RealClock, ScaledClock
from sef.openadr import (
    DrEvent,
    EventStatus,
    Oadr3Config,
    Opt,
    OptDecision,
    TelemetrySample,
    VenAdapter,
)
from sef.openadr._oadr3 import Oadr3Adapter
from sef.openadr._oadr3_convert import EventRejected, payload_unit, to_dr_event
from support import wait_for


class Sink:
    """A DrSink that records what it gets; ``decide`` answers each event."""

    def __init__(self, decide: Callable[[DrEvent], OptDecision] | None = None) -> None:
        self.events: list[DrEvent] = []
        self.cancels: list[tuple[str, str, int]] = []
        self.samples: dict[str, TelemetrySample] = {}
        self.decide = decide or (lambda event: OptDecision.opt_in())
        self.first_event_at: float | None = None

    async def on_event(self, event: DrEvent) -> OptDecision:
        self.first_event_at = self.first_event_at or time.monotonic()
        self.events.append(event)
        return self.decide(event)

    async def on_cancel(self, source: str, event_id: str, modification: int) -> None:
        self.cancels.append((source, event_id, modification))

    def telemetry(self, group: str) -> TelemetrySample | None:
        return self.samples.get(group)


def config(vtn: Oa3Vtn, **changes: Any) -> Oadr3Config:
    values: dict[str, Any] = {
        "vtn_url": vtn.url,
        "ven_name": "sef-ems",
        "client_id": VEN_CLIENT[0],
        "client_secret": VEN_CLIENT[1],
        "poll_interval_s": 0.2,
        "report_interval_s": 0.2,
        "max_backoff_s": 0.4,
    }
    return Oadr3Config(**{**values, **changes})


@pytest.fixture
async def vtn() -> AsyncIterator[Oa3Vtn]:
    server = await Oa3Vtn(time.time).start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def running() -> AsyncIterator[list[Oadr3Adapter]]:
    """Adapters a test starts; stopped at the end."""
    adapters: list[Oadr3Adapter] = []
    yield adapters
    for adapter in adapters:
        await adapter.stop()


async def started(
    vtn: Oa3Vtn, running: list[Oadr3Adapter], sink: Sink, **changes: Any
) -> Oadr3Adapter:
    adapter = Oadr3Adapter(config(vtn, **changes), clock=RealClock())
    running.append(adapter)
    await adapter.start(sink)
    return adapter


async def test_capacity_limit_event_reaches_the_sink(
    vtn: Oa3Vtn, running: list[Oadr3Adapter]
) -> None:
    program = await vtn.create("/programs", {"programName": "capacity"})
    start_s = float(int(time.time()) + 3600)
    created = await vtn.create("/events", limit_event(program["id"], start_s))
    sink = Sink()
    adapter = await started(vtn, running, sink)
    protocol: VenAdapter = adapter  # mypy checks it implements the seam
    assert protocol.source == "oadr3" and len(sink.events) == 1
    event = sink.events[0]
    assert (event.source, event.event_id, event.modification) == ("oadr3", created["id"], 0)
    assert event.program == "capacity" and event.status is EventStatus.FAR
    assert (event.start_s, event.duration_s, event.randomize_s) == (start_s, 5400.0, 300.0)
    assert event.targets.groups == ("north",) and not event.response_required
    (signal,) = event.signals
    assert (signal.name, signal.type, signal.unit) == ("IMPORT_CAPACITY_LIMIT", "setpoint", "kW")
    assert [(i.start_s - start_s, i.duration_s, i.value) for i in signal.intervals] == [
        (0.0, 900.0, 12.5),
        (900.0, 900.0, 10.0),
        (1800.0, 3600.0, 14.0),
    ]
    status = adapter.status()
    assert status.registered and status.programs == ["capacity"] and status.errors == 0
    (ven,) = vtn.vens.values()  # the VEN object was created by name
    assert ven["venName"] == "sef-ems" and status.ven_id == ven["id"]
    assert adapter.decisions()[created["id"]].decision.opt is Opt.IN
    # a later event reaches the sink within about one poll
    posted = time.monotonic()
    await vtn.create("/events", limit_event(program["id"], start_s + 7200))
    waited = await wait_for(lambda: len(sink.events) == 2, 5)
    print(f"event posted -> sink: {waited * 1000:.0f} ms (poll 0.2 s)")
    assert time.monotonic() - posted < 2.0  # the event -> command budget
    assert vtn.errors == []


async def test_modification_and_deletion(vtn: Oa3Vtn, running: list[Oadr3Adapter]) -> None:
    program = await vtn.create("/programs", {"programName": "capacity"})
    start_s = float(int(time.time()) + 600)
    event = await vtn.create("/events", limit_event(program["id"], start_s))
    past = await vtn.create("/events", limit_event(program["id"], time.time() - 7200))
    sink = Sink()
    adapter = await started(vtn, running, sink)
    assert [e.modification for e in sink.events] == [0, 0]
    assert sink.events[1].status is EventStatus.COMPLETED
    changed = limit_event(program["id"], start_s)
    changed["intervals"][0]["payloads"][0]["values"] = [8.0]
    answer = await vtn.bl("PUT", f"/events/{event['id']}", changed)
    assert answer.status_code == 200, answer.text
    await wait_for(lambda: len(sink.events) == 3, 5)
    latest = sink.events[2]
    assert (latest.event_id, latest.modification) == (event["id"], 1)
    assert latest.signals[0].intervals[0].value == 8.0
    polls = adapter.polls
    await wait_for(lambda: adapter.polls >= polls + 3, 5)
    assert len(sink.events) == 3  # an unchanged event is not handed over again
    assert (await vtn.bl("DELETE", f"/events/{event['id']}")).status_code == 200
    assert (await vtn.bl("DELETE", f"/events/{past['id']}")).status_code == 200
    await wait_for(lambda: not adapter.decisions(), 5)
    assert sink.cancels == [("oadr3", event["id"], 1)]  # the ended one is just forgotten
    assert vtn.errors == []


async def test_usage_report_reaches_the_vtn(vtn: Oa3Vtn, running: list[Oadr3Adapter]) -> None:
    program = await vtn.create("/programs", {"programName": "capacity"})
    now = time.time()
    active = await vtn.create("/events", limit_event(program["id"], now - 60))
    unasked = limit_event(program["id"], now - 60)
    del unasked["reportDescriptors"]
    await vtn.create("/events", unasked)
    refused = await vtn.create("/events", limit_event(program["id"], now - 60, eventName="no"))
    sink = Sink(
        lambda e: (
            OptDecision.opt_out("test") if e.event_id == refused["id"] else OptDecision.opt_in()
        )
    )
    sink.samples["north"] = TelemetrySample("north", now, 7.25, 20.0, 230.0, 31.5, 3)
    adapter = await started(vtn, running, sink)
    await wait_for(lambda: adapter.reports_sent >= 2, 5)
    assert {r["eventID"] for r in vtn.reports.values()} == {active["id"]}
    report = next(iter(vtn.reports.values()))
    assert report["programID"] == program["id"] and report["clientName"] == "sef-ems"
    assert report["payloadDescriptors"][0]["units"] == "KW"
    (resource,) = report["resources"]
    assert resource["resourceName"] == "north"
    assert resource["intervals"][0]["payloads"] == [{"type": "USAGE", "values": [7.25]}]
    assert resource["intervalPeriod"] == {"start": iso(now)}
    posts = [r for r in vtn.requests if r.method == "POST" and r.path == "/reports"]
    assert posts and {r.status for r in posts} == {201}
    assert vtn.errors == []  # every report passed the strict model check


@pytest.mark.parametrize("credentials", [{"client_secret": "wrong"}, {"token": "not-a-token"}])
async def test_wrong_credentials_show_in_status(vtn: Oa3Vtn, credentials: dict[str, Any]) -> None:
    program = await vtn.create("/programs", {"programName": "capacity"})
    await vtn.create("/events", limit_event(program["id"], time.time() + 600))
    if "token" in credentials:
        credentials = {**credentials, "client_id": None, "client_secret": None}
    adapter = Oadr3Adapter(config(vtn, **credentials), clock=RealClock())
    sink = Sink()
    with pytest.raises(ConnectionError, match="401"):
        await adapter.start(sink)
    status = adapter.status()
    assert not status.registered and status.errors == 1
    assert status.last_error is not None and "401" in status.last_error
    assert sink.events == []
    await adapter.stop()


async def test_malformed_events_are_opted_out_and_logged(
    vtn: Oa3Vtn, running: list[Oadr3Adapter], caplog: pytest.LogCaptureFixture
) -> None:
    program = await vtn.create("/programs", {"programName": "capacity"})
    start_s = time.time() + 600
    good = await vtn.create("/events", limit_event(program["id"], start_s))
    bad: dict[str, str] = {}

    def broken(name: str, change: Callable[[dict[str, Any]], None]) -> None:
        raw = limit_event(program["id"], start_s, id=name)
        change(raw)
        bad[vtn.put_raw_event(raw)] = name

    broken("abc", lambda r: r["intervals"][0]["payloads"][0].update(values=["abc"]))
    broken("negative", lambda r: r["intervalPeriod"].update(duration="-PT15M"))
    broken("zero", lambda r: r["intervalPeriod"].update(duration="PT0S"))
    broken("id-text", lambda r: r["intervals"][1].update(id="one"))
    broken("no-intervals", lambda r: r.update(intervals=[]))
    broken("two-values", lambda r: r["intervals"][0]["payloads"][0].update(values=[1, 2]))
    broken("time-only", lambda r: r["intervalPeriod"].update(start="17:00"))
    broken("nan", lambda r: r["intervals"][0]["payloads"][0].update(values=[float("nan")]))
    caplog.set_level(logging.WARNING, logger="sef.openadr")
    sink = Sink()
    adapter = await started(vtn, running, sink)
    assert [e.event_id for e in sink.events] == [good["id"]]
    decisions = adapter.decisions()
    for event_id in bad:
        state = decisions[event_id]
        assert state.event is None and state.decision.opt is Opt.OUT
        assert "malformed" in state.decision.reason
    assert "not a number" in decisions["abc"].decision.reason
    assert "duration <= 0" in decisions["zero"].decision.reason
    assert "intervals.1.id" in decisions["id-text"].decision.reason
    assert "not an RFC 3339 date-time" in decisions["time-only"].decision.reason
    logged = [r.getMessage() for r in caplog.records if r.name == "sef.openadr"]
    assert all(any(event_id in line for line in logged) for event_id in bad)
    polls = adapter.polls
    await wait_for(lambda: adapter.polls >= polls + 2, 5)
    assert len([r for r in caplog.records if r.name == "sef.openadr"]) == len(logged)
    assert len(sink.events) == 1


async def test_hundred_events_across_four_programs_in_one_poll(
    vtn: Oa3Vtn, running: list[Oadr3Adapter]
) -> None:
    start_s = time.time() + 600
    for index in range(4):
        program = await vtn.create("/programs", {"programName": f"program-{index}"})
        for number in range(25):
            body = limit_event(program["id"], start_s + 60 * number, eventName=f"e{number}")
            await vtn.create("/events", body)
    sink = Sink()
    began = time.monotonic()
    adapter = await started(vtn, running, sink, page_size=10)
    took = time.monotonic() - began
    event_gets = [r for r in vtn.requests if r.method == "GET" and r.path == "/events"]
    print(f"100 events over 4 programs (pages of 10): first poll {took * 1000:.0f} ms")
    assert adapter.polls == 1 and len(sink.events) == 100
    assert len({e.event_id for e in sink.events}) == 100
    assert {e.program for e in sink.events} == {f"program-{i}" for i in range(4)}
    assert took < 5.0
    assert len(event_gets) == 4 * 3  # 25 events: pages of 10, 10, 5
    assert vtn.errors == []


async def test_followed_programs_only(vtn: Oa3Vtn, running: list[Oadr3Adapter]) -> None:
    wanted = await vtn.create("/programs", {"programName": "capacity"})
    other = await vtn.create("/programs", {"programName": "other"})
    await vtn.create("/events", limit_event(wanted["id"], time.time() + 600))
    await vtn.create("/events", limit_event(other["id"], time.time() + 600))
    sink = Sink()
    adapter = await started(vtn, running, sink, programs=("capacity",))
    assert [e.program for e in sink.events] == ["capacity"]
    assert adapter.status().programs == ["capacity"]
    # the program withdrawn at the VTN: its pending event is cancelled
    assert (await vtn.bl("DELETE", f"/programs/{wanted['id']}")).status_code == 200
    await wait_for(lambda: bool(sink.cancels), 5)
    assert sink.cancels == [("oadr3", sink.events[0].event_id, 0)]
    assert adapter.status().programs == []


async def test_vtn_outage_counts_errors_and_polling_resumes(
    vtn: Oa3Vtn, running: list[Oadr3Adapter]
) -> None:
    program = await vtn.create("/programs", {"programName": "capacity"})
    sink = Sink()
    adapter = await started(vtn, running, sink)
    await vtn.stop()
    await wait_for(lambda: adapter.status().errors >= 2, 5)
    status = adapter.status()
    assert status.last_error is not None and "ConnectError" in status.last_error
    await vtn.start()  # same port, same store
    event = await vtn.create("/events", limit_event(program["id"], time.time() + 600))
    await wait_for(lambda: [e.event_id for e in sink.events] == [event["id"]], 5)
    errors = adapter.status().errors
    polls = adapter.polls
    await wait_for(lambda: adapter.polls >= polls + 2, 5)
    assert adapter.status().errors == errors


async def test_ven_found_by_name_or_not_kept(running: list[Oadr3Adapter]) -> None:
    vtn = await Oa3Vtn(time.time).start()
    try:
        first = await started(vtn, running, Sink())
        second = await started(vtn, running, Sink())
        assert len(vtn.vens) == 1  # found, not created twice
        assert first.status().ven_id == second.status().ven_id is not None
    finally:
        await vtn.stop()
    # a VTN that does not let VENs write VEN objects: no id, polling goes on
    scopes = VEN_SCOPES - {"write_vens"}
    vtn = await Oa3Vtn(time.time, clients={VEN_CLIENT[0]: (VEN_CLIENT[1], scopes)}).start()
    try:
        adapter = await started(vtn, running, Sink())
        status = adapter.status()
        assert status.registered and status.ven_id is None and status.errors == 0
        assert not vtn.vens
    finally:
        await vtn.stop()


async def test_expired_token_is_renewed(vtn: Oa3Vtn, running: list[Oadr3Adapter]) -> None:
    await vtn.create("/programs", {"programName": "capacity"})
    adapter = await started(vtn, running, Sink())
    vtn.tokens.clear()  # every token the VTN issued is now unknown (expired)
    polls = adapter.polls
    await wait_for(lambda: adapter.polls >= polls + 2, 5)
    assert adapter.status().errors == 0
    token_posts = [r.status for r in vtn.requests if r.path == "/auth/token"]
    assert token_posts[-1] == 200 and len(token_posts) >= 3  # adapter x2 + the BL client
    assert [r.status for r in vtn.requests if r.status == 401] == [401]


async def test_scaled_ems_clock(running: list[Oadr3Adapter]) -> None:
    """Team decision 1: the VTN stamps on the EMS clock; the status and the reports follow
    that clock (600 clock s per real s)."""
    clock = ScaledClock(speed=600.0)
    vtn = await Oa3Vtn(clock.now).start()
    try:
        program = await vtn.create("/programs", {"programName": "capacity"})
        start_s = float(int(clock.now()) + 600)  # one real second ahead
        await vtn.create("/events", limit_event(program["id"], start_s))
        sink = Sink()
        sink.telemetry = lambda group: TelemetrySample(  # type: ignore[method-assign]
            group, clock.now(), 11.0, None, None, None, 1
        )
        adapter = Oadr3Adapter(
            config(vtn, poll_interval_s=60.0, report_interval_s=60.0), clock=clock
        )
        running.append(adapter)
        await adapter.start(sink)
        assert sink.events[0].status is EventStatus.FAR
        await wait_for(lambda: bool(vtn.reports), 5)
        report = next(iter(vtn.reports.values()))
        sampled = datetime.fromisoformat(report["resources"][0]["intervalPeriod"]["start"])
        assert start_s <= sampled.timestamp() < start_s + 5400
        assert clock.now() >= start_s  # the report came once the event was active
        assert vtn.errors == []
    finally:
        await vtn.stop()


def test_units_are_normalised() -> None:
    assert payload_unit("IMPORT_CAPACITY_LIMIT", "KW", None) == ("kW", 1.0)
    assert payload_unit("IMPORT_CAPACITY_LIMIT", "W", None) == ("kW", 0.001)
    assert payload_unit("IMPORT_CAPACITY_LIMIT", None, None) == ("?", 1.0)
    assert payload_unit("IMPORT_CAPACITY_LIMIT", "BTU", None) == ("?BTU", 1.0)
    assert payload_unit("PRICE", "KWH", "USD") == ("USD/kWh", 1.0)
    assert payload_unit("PRICE", "MWH", "USD") == ("USD/kWh", 0.001)
    assert payload_unit("PRICE", "KWH", None) == ("?/KWH", 1.0)
    assert payload_unit("SIMPLE", None, None) == (None, 1.0)
    raw = {
        "id": "e1",
        "programID": "p1",
        "intervalPeriod": {"start": "2026-12-07T17:00:00Z", "duration": "PT1H"},
        "intervals": [
            {
                "id": 0,
                "payloads": [{"type": "PRICE", "values": [95]}, {"type": "SIMPLE", "values": [2]}],
            }
        ],
    }
    program_descriptors = [
        {"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": "PRICE", "units": "MWH"},
        {"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": "X", "currency": "USD"},
    ]
    program_descriptors[0]["currency"] = "USD"
    event = to_dr_event(
        raw,
        program_name="prices",
        modification=0,
        now_s=datetime(2026, 12, 7, 17, 30, tzinfo=UTC).timestamp(),
        program_descriptors=program_descriptors,
    )
    price, level = event.signals
    assert (price.type, price.unit, price.intervals[0].value) == ("price", "USD/kWh", 0.095)
    assert (level.type, level.unit, level.intervals[0].value) == ("level", None, 2.0)
    assert event.status is EventStatus.ACTIVE and event.targets.whole_fleet


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_PATHS = [
    ("id",),
    ("targets",),
    ("priority",),
    ("intervalPeriod",),
    ("intervalPeriod", "start"),
    ("intervalPeriod", "duration"),
    ("intervalPeriod", "randomizeStart"),
    ("intervals",),
    ("intervals", 0, "id"),
    ("intervals", 1, "intervalPeriod"),
    ("intervals", 2, "intervalPeriod", "duration"),
    ("intervals", 0, "payloads"),
    ("intervals", 0, "payloads", 0, "values"),
    ("intervals", 1, "payloads", 0, "type"),
    ("payloadDescriptors",),
    ("payloadDescriptors", 0, "units"),
]
_TEXTS = st.sampled_from(
    ["PT15M", "-PT1M", "P1M", "P9999Y", "PT0S", "2026-13-40T00:00:00Z", "17:00", "", "KW", "MW"]
)


@settings(max_examples=200, deadline=None)
@given(path=st.sampled_from(_PATHS), value=_JSON | _TEXTS)
def test_any_damaged_event_is_converted_or_rejected(path: tuple[Any, ...], value: Any) -> None:
    """Whatever one field holds, conversion returns a DrEvent or raises EventRejected (the
    adapter turns the latter into a logged opt-out)."""
    raw = limit_event("p1", 1_800_000_000.0, id="e1")
    holder: Any = raw
    for step in path[:-1]:
        holder = holder[step]
    holder[path[-1]] = value
    try:
        event = to_dr_event(raw, program_name="p", modification=0, now_s=0.0)
    except EventRejected:
        return
    assert event.duration_s > 0 and math.isfinite(event.start_s)
    for signal in event.signals:
        assert all(math.isfinite(i.value) and i.duration_s > 0 for i in signal.intervals)

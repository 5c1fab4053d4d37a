"""Hostile or failing OpenADR VTNs, driven over the network (issue 15): a flood of events
in one delivery, oversized and endless answers, a forged 2.0b sender, an insecure URL, a
VTN that disappears mid-event and an EMS whose DR service stops mid-event.

Real parts: the test OpenADR 3 VTN (``tests/openadr/oa3_vtn.py``, uvicorn on loopback)
and the openleadr 2.0b VTN (``tests/openadr/oadr2b_vtn.py``, mutual TLS + XML signatures
where it matters), the real adapters, a real :class:`~sef.openadr.DrBridge` over the
dr_stack (Mosquitto, EMS on a 60x clock, BIS → battery emulator, UCM → SGD emulator).
Tests marked ``xfail(strict=True)`` are **findings**: they describe the wanted behaviour
and fail on today's code (docs/robustness.md, "Demand response (OpenADR)").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from hostile_dr_support import (
    LoopLag,
    Oa3Vtn,
    RecordingSink,
    Rig,
    TestVtn,
    make_pki,
    oa3_config,
    on_clock,
    rig,
    simple_oa3,
)
from starlette.middleware.base import RequestResponseEndpoint

from sef.clock import RealClock
from sef.ems import EMS
from sef.openadr import (
    DrBridge,
    DrHistory,
    DrService,
    EventRecord,
    Oadr2bAdapter,
    Oadr2bConfig,
    Opt,
    load_dr_config,
)
from sef.openadr._oadr3 import Oadr3Adapter
from sef.security import CertificateAuthority, Role
from support import wait_for


@contextlib.asynccontextmanager
async def _oa3_rig(broker_url: str) -> AsyncIterator[tuple[Rig, Oa3Vtn, str]]:
    async with rig(broker_url) as r:
        vtn = await Oa3Vtn(r.stack.clock.now).start()
        try:
            program = await vtn.create("/programs", {"programName": "flood"})
            yield r, vtn, str(program["id"])
        finally:
            await vtn.stop()


async def test_ten_thousand_events_in_one_delivery(
    broker_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """10 000 events (SIMPLE level 4: out of range) on 200 pages of the test VTN: the
    adapter reads them all in one poll without stalling the EMS, every one is opted out
    with its reason, nothing is sent, and a good event is then carried out."""
    caplog.set_level(logging.WARNING, logger="sef.openadr")
    async with _oa3_rig(broker_url) as (r, vtn, program_id):
        start_s = r.stack.clock.now() + 3600
        for i in range(10_000):
            vtn.put_raw_event(simple_oa3(program_id, f"flood-{i:05d}", start_s, 4))
        adapter = Oadr3Adapter(oa3_config(vtn), clock=r.stack.clock)
        lag = LoopLag().start()
        began = time.monotonic()
        await adapter.start(r.bridge)
        took = time.monotonic() - began
        lag.stop()
        print(
            f"longest loop stall during the first poll: {lag.worst_s:.2f} s "
            f"({lag.worst_with_gc_s:.2f} s with the collector's; {lag.gc_s:.2f} s of GC)"
        )
        assert lag.worst_s < 1.0  # MQTT keepalives (2 s for the agents) keep flowing
        try:
            decisions = adapter.decisions()
            print(f"first poll of 10 000 events: {took:.2f} s")
            assert len(decisions) == 10_000
            assert all(s.decision.opt is Opt.OUT for s in decisions.values())
            assert all("outside" in s.decision.reason for s in decisions.values())
            assert len(r.bridge.history.records()) == 10_000
            assert r.untouched(), r.calls.calls[:3]
            good = vtn.put_raw_event(simple_oa3(program_id, "good", r.stack.clock.now() + 60, 3))
            # each poll pages the 10 000 known events again: seconds per poll under load
            await wait_for(lambda: r.stack.battery_kw("bat-1") < 0, 30.0)
            assert {by for _, _, by in r.calls.calls} == {f"openadr:oadr3:{good}"}
        finally:
            await adapter.stop()


# ---------------------------------------------------------------------- findings (OA3 volume)


def test_history_lookups_by_event_do_not_scan_the_history() -> None:
    """DrHistory indexes records by (source, event_id): 10 000 ``latest`` and ``versions``
    lookups in a full history take milliseconds (they scanned it: ~10 s); the size limit
    and the oldest-first order still hold, and trimmed records leave the index."""
    history = DrHistory(limit=10_000)
    for i in range(12_000):
        for mod in (0, 1):
            history.add(
                EventRecord("oadr3", f"e{i}", mod, "p", "", "scheduled", "optIn", "", 0, 0, 1)
            )
    began = time.monotonic()
    for i in range(7_000, 12_000):
        latest = history.latest("oadr3", f"e{i}")
        assert latest is not None and latest.modification == 1
        assert [r.modification for r in history.versions("oadr3", f"e{i}")] == [0, 1]
    took = time.monotonic() - began
    print(f"10 000 lookups in a 10 000-record history: {took * 1000:.1f} ms")
    assert took < 0.2
    records = history.records()
    assert len(records) == 10_000 and records[0].key == ("oadr3", "e7000", 0)
    assert records[-1].key == ("oadr3", "e11999", 1)
    assert history.latest("oadr3", "e6999") is None and not history.versions("oadr3", "e0")
    history.add(EventRecord("oadr3", "e7000", 0, "p", "", "cancelled", "optIn", "", 0, 0, 1))
    assert history.records()[-1].status == "cancelled"  # replaced: now the newest
    assert history.latest("oadr3", "e7000") is not None
    with pytest.raises(AttributeError, match="key"):
        history.update(("oadr3", "e7000", 0), modification=5)


async def test_mass_cancellation_does_not_stall_the_loop() -> None:
    """5 000 events vanishing at once (as Oadr3Adapter._drop_vanished hands them over): the
    bridge finds each event's versions through the history's index (it used to scan the
    whole history per cancellation: 2.2 s with a 2.2-s loop stall)."""
    ems = EMS("mqtt://127.0.0.1:9", "ems-x", clock=RealClock())  # never started: no calls
    bridge = DrBridge(ems)
    for i in range(5_000):
        bridge.history.add(
            EventRecord("oadr3", f"e{i}", 0, "p", "", "opted_out", "optOut", "x", 0.0, 0.0, 1.0)
        )
    lag = LoopLag().start()
    await asyncio.sleep(0.05)  # the lag task runs once
    began = time.monotonic()
    for i in range(5_000):
        await bridge.on_cancel("oadr3", f"e{i}", 0)  # as Oadr3Adapter._drop_vanished does
    took = time.monotonic() - began
    await asyncio.sleep(0.05)  # the lag task wakes and notes the stall
    lag.stop()
    print(f"5 000 cancellations: {took:.2f} s, longest stall {lag.worst_s:.2f} s")
    assert took < 0.5 and lag.worst_s < 0.25


def _hostile_events_route(vtn: Oa3Vtn, answer: Any) -> None:
    """Make the VTN answer every ``GET /events`` with ``answer(request)`` (a Response;
    ``None``: the VTN's own answer)."""

    @vtn.app.middleware("http")
    async def hostile(request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.method == "GET" and request.url.path == "/events":
            hostile_answer: Response | None = answer(request)
            if hostile_answer is not None:
                return hostile_answer
        return await call_next(request)


async def _program_vtn() -> Oa3Vtn:
    vtn = await Oa3Vtn(time.time).start()
    await vtn.create("/programs", {"programName": "p"})
    return vtn


async def test_a_20_mb_chunked_answer_is_cut_off_and_polling_goes_on() -> None:
    """A 20 MB event (a 20-million-char name) sent chunked, without Content-Length, while
    the adapter runs: the read stops past ``max_answer_bytes`` (4 MiB), the failed polls
    are counted and cancel nothing (the event known before stays), the adapter's memory
    peak stays near the limit, and a good event afterwards reaches the sink."""
    vtn = Oa3Vtn(time.time)
    served: list[bytes] = []

    def chunked(request: Request) -> Response | None:
        body = served[-1]
        chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
        return StreamingResponse(chunks, media_type="application/json")

    _hostile_events_route(vtn, chunked)
    await vtn.start()
    adapter: Oadr3Adapter | None = None
    try:
        program = await vtn.create("/programs", {"programName": "p"})
        first = simple_oa3(program["id"], "first", time.time() + 3600, 1)
        served.append(json.dumps([first]).encode())
        sink = RecordingSink()
        adapter = Oadr3Adapter(oa3_config(vtn, poll_interval_s=0.2), clock=RealClock())
        await adapter.start(sink)
        running = adapter
        big = simple_oa3(program["id"], "big", time.time() + 3600, 1)
        big["eventName"] = "x" * 20_000_000
        served.append(json.dumps([first, big]).encode())
        errors = adapter.status().errors
        tracemalloc.start()
        try:
            await wait_for(lambda: running.status().errors >= errors + 2, 10.0)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        print(f"memory peak of two polls with a 20 MB chunked answer: {peak / 1e6:.1f} MB")
        assert peak < 16e6  # the 4 MiB body, its chunks, httpx and the server; 60 MB unbounded
        assert "too large" in (adapter.status().last_error or "")
        assert [e.event_id for e in sink.events] == ["first"] and not sink.cancels
        small = simple_oa3(program["id"], "small", time.time() + 60, 1)
        served.append(json.dumps([first, small]).encode())
        await wait_for(lambda: "small" in running.decisions(), 5.0)
        assert "big" not in running.decisions() and "first" in running.decisions()
    finally:
        if adapter is not None:
            await adapter.stop()
        await vtn.stop()


async def test_a_20_mb_answer_is_refused() -> None:
    """A 20 MB answer with its Content-Length: refused before its body is read
    (``max_answer_bytes``), the first poll fails, the sink hears nothing."""
    vtn = Oa3Vtn(time.time)
    big = simple_oa3("p", "big", time.time() + 3600, 1)
    big["eventName"] = "x" * 20_000_000
    body = json.dumps([big]).encode()
    _hostile_events_route(vtn, lambda request: Response(body, media_type="application/json"))
    await vtn.start()
    try:
        program = await vtn.create("/programs", {"programName": "p"})
        big["programID"] = program["id"]
        body = json.dumps([big]).encode()
        sink = RecordingSink()
        adapter = Oadr3Adapter(oa3_config(vtn, poll_interval_s=0.2), clock=RealClock())
        try:
            with pytest.raises(ConnectionError, match="too large"):
                await adapter.start(sink)
        finally:
            await adapter.stop()
        assert not sink.events
    finally:
        await vtn.stop()


async def test_an_endless_pager_is_cut_off() -> None:
    """A VTN that ignores ``skip`` and answers the same full page forever: the second page
    brings no new id, the poll fails (``page ... repeats ids``) within one page."""
    vtn = Oa3Vtn(time.time)
    page = [simple_oa3("p", f"loop-{i}", time.time() + 3600, 1) for i in range(50)]
    body = json.dumps(page).encode()
    _hostile_events_route(vtn, lambda request: Response(body, media_type="application/json"))
    await vtn.start()
    try:
        await vtn.create("/programs", {"programName": "p"})
        adapter = Oadr3Adapter(oa3_config(vtn), clock=RealClock())
        try:
            with pytest.raises(ConnectionError, match="page"):
                await asyncio.wait_for(adapter.start(RecordingSink()), 5.0)
        finally:
            await adapter.stop()
    finally:
        await vtn.stop()


async def test_a_pager_of_ever_new_ids_is_cut_at_max_events_per_poll() -> None:
    """A VTN that honours ``skip`` but never ends (every page full of new ids): the poll
    fails once the list holds more than ``max_events_per_poll`` objects."""
    vtn = Oa3Vtn(time.time)
    asked: list[int] = []

    def pages(request: Request) -> Response:
        skip = int(request.query_params.get("skip", "0"))
        asked.append(skip)
        page = [simple_oa3("p", f"new-{skip + i}", time.time() + 3600, 1) for i in range(50)]
        return Response(json.dumps(page).encode(), media_type="application/json")

    _hostile_events_route(vtn, pages)
    await vtn.start()
    try:
        await vtn.create("/programs", {"programName": "p"})
        adapter = Oadr3Adapter(oa3_config(vtn, max_events_per_poll=500), clock=RealClock())
        try:
            with pytest.raises(ConnectionError, match="more than 500 objects"):
                await asyncio.wait_for(adapter.start(RecordingSink()), 5.0)
        finally:
            await adapter.stop()
        assert asked == list(range(0, 550, 50))  # 11 pages: 550 > 500, no more asked
    finally:
        await vtn.stop()


# ---------------------------------------------------------------------- forged and insecure


async def test_a_vtn_signing_with_another_certificate_is_not_heard(
    broker_url: str, tmp_path: Path
) -> None:
    """Mutual TLS + XML signatures: the VEN registers with the real VTN; an impostor with a
    certificate of the **same CA** (so TLS passes) takes its address and queues a SIMPLE
    level 3 event for the VEN. Its messages are signed by the wrong certificate
    (``vtn_fingerprint``): dropped, the event never reaches the bridge, nothing is sent,
    the failures are counted. The real VTN back: its event is carried out."""
    pki = make_pki(tmp_path / "ca")
    ca = CertificateAuthority.open(tmp_path / "ca")
    _, impostor_key = ca.issue("impostor-vtn", Role.BROKER, hosts=("127.0.0.1", "localhost"))
    impostor_pki = replace(pki, vtn_cert=ca.cert_path("impostor-vtn"), vtn_key=impostor_key)
    assert impostor_pki.vtn_fingerprint != pki.vtn_fingerprint
    async with rig(broker_url) as r:
        vtn = await TestVtn(pki=pki, expected_ven_fingerprint=pki.ven_fingerprint).start()
        config = Oadr2bConfig(
            vtn_url=vtn.url,
            ven_name="sef-ems",
            cert=pki.ven_cert,
            key=pki.ven_key,
            ca_file=pki.ca,
            vtn_fingerprint=pki.vtn_fingerprint,
            report_groups=(),
            register_timeout_s=10,
        )
        adapter = Oadr2bAdapter(config, clock=r.stack.clock)
        await r.bridge.attach(adapter)
        ven_id = adapter.status().ven_id or ""
        await vtn.stop()
        impostor = TestVtn(pki=impostor_pki, port=vtn.port, vens=dict(vtn.vens))
        await impostor.start()
        try:
            impostor.add_simple(ven_id, "forged", 3, on_clock(r.stack, 60), 600)
            errors = adapter.status().errors
            await wait_for(lambda: adapter.status().errors >= errors + 3, 10.0)  # 3 polls
            assert not r.bridge.history.records() and r.untouched(), r.calls.calls
            assert "no valid answer" in (adapter.status().last_error or "")
            assert not impostor.opts  # nothing answered to the impostor either
        finally:
            await impostor.stop()
        vtn = TestVtn(pki=pki, port=vtn.port, vens=dict(vtn.vens))
        await vtn.start()
        try:
            vtn.add_simple(ven_id, "real", 3, on_clock(r.stack, 60), 600)
            await wait_for(lambda: r.stack.battery_kw("bat-1") < 0, 10.0)
            assert {by for _, _, by in r.calls.calls} == {"openadr:oadr2b:real"}
        finally:
            await r.bridge.close()
            await vtn.stop()


@pytest.mark.parametrize(
    ("section", "extra"),
    [
        ("oadr3", 'client_id = "c"\nclient_secret_file = "s"\n'),
        ("oadr2b", 'cert = "c.pem"\nkey = "k.pem"\nca_file = "ca.pem"\n'),
    ],
)
def test_a_plain_http_vtn_is_refused_by_the_config(
    tmp_path: Path, section: str, extra: str
) -> None:
    (tmp_path / "s").write_text("secret")
    path = tmp_path / "dr.toml"
    path.write_text(
        f'[{section}]\nvtn_url = "http://vtn.example/x"\nven_name = "v"\n{extra}', "utf-8"
    )
    with pytest.raises(ValueError, match=r"insecure: the VTN URL is not https://"):
        load_dr_config(path)


# ---------------------------------------------------------------------- dead peers


def _sef_error(record: logging.LogRecord) -> bool:
    """An ERROR (or an exception) logged by SEF (openleadr logs every failed poll as ERROR)."""
    return record.name.startswith("sef") and (
        record.levelno >= logging.ERROR or record.exc_info is not None
    )


async def test_the_vtn_disappears_mid_event(
    broker_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The VTN stops while a SIMPLE level 2 event runs: the battery keeps its timed
    sequence and goes back to idle at the event's end by itself (no restore call needed),
    the adapter counts failed polls, nothing raises."""
    caplog.set_level(logging.WARNING)
    async with rig(broker_url) as r:
        vtn = await TestVtn().start()
        adapter = Oadr2bAdapter(
            Oadr2bConfig(vtn_url=vtn.url, ven_name="sef-ems", report_groups=()),
            clock=r.stack.clock,
        )
        await r.bridge.attach(adapter)
        try:
            ven_id = adapter.status().ven_id or ""
            start = on_clock(r.stack, 60)
            vtn.add_simple(ven_id, "orphan", 2, start, 240)  # 4 s real at 60x
            await wait_for(lambda: r.stack.battery_kw("bat-1") < 0, 10.0)
            await vtn.stop()
            errors = adapter.status().errors
            assert r.stack.battery_kw("bat-1") < 0  # still running its sequence
            end_s = start.timestamp() + 240
            await r.stack.until(end_s - 30)
            assert r.stack.battery_kw("bat-1") < 0
            await r.stack.until(end_s + 90)  # the BIS polls every 0.1 s real
            assert r.stack.battery_kw("bat-1") == 0.0
            assert adapter.status().errors > errors  # the polls failed and were counted
            sent = [args[0] for _, args, _ in r.calls.calls]
            restores = [seq for seq in sent if seq[0][0] in ("idle", "endshed")]
            assert sent and not restores  # the sequences ended by themselves
            assert not [x for x in caplog.records if _sef_error(x)]
        finally:
            await r.bridge.close()


async def test_the_dr_service_stops_mid_event(
    broker_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The EMS's DrService stops while an event runs: no restore calls (the devices'
    sequences are timed), no exception logged; the battery finishes the event and idles."""
    caplog.set_level(logging.WARNING)
    async with rig(broker_url) as r:
        vtn = await TestVtn().start()
        path = tmp_path / "dr.toml"
        path.write_text(
            f'[bridge]\nrng_seed = 1\n[oadr2b]\ninsecure = true\nvtn_url = "{vtn.url}"\n'
            'ven_name = "sef-ems"\nregister_timeout_s = 5\nreport_groups = []\n',
            "utf-8",
        )
        service = DrService(r.stack.ems, load_dr_config(path))
        try:
            await service.start()
            (status,) = service.bridge.statuses()
            start = on_clock(r.stack, 60)
            vtn.add_simple(status.ven_id or "", "running", 3, start, 240)
            await wait_for(lambda: r.stack.battery_kw("bat-1") < 0, 10.0)
            sent = len(r.calls.calls)
            await service.stop()
            await service.stop()  # idempotent
            await asyncio.sleep(0.5)
            assert len(r.calls.calls) == sent  # no restore storm
            assert r.stack.battery_kw("bat-1") < 0
            await r.stack.until(start.timestamp() + 240 + 90)
            assert r.stack.battery_kw("bat-1") == 0.0 and len(r.calls.calls) == sent
            assert not [x for x in caplog.records if _sef_error(x)]
        finally:
            await service.stop()
            await vtn.stop()

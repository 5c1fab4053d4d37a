"""Bench (issue 15): OpenADR event → first device command, and 100 concurrent events.

Method
------
One process: Mosquitto (:class:`sef.broker.Mosquitto`, free port), an EMS on a 60× clock
with four batteries (BIS agents → SunSpec battery emulators over Modbus TCP;
``bench/_openadr_rig.py``), a :class:`~sef.openadr.DrBridge` with the packaged mapping, and
the VTNs the tests use: openleadr's VTN (``tests/openadr/oadr2b_vtn.py``, poll 1 s, the
shortest openleadr can express) and the OpenADR 3 test VTN (``tests/openadr/oa3_vtn.py``,
every body checked with the ``openadr3`` models). No other bench imports from
``tests/openadr``; this one does (``sys.path``) rather than copy two VTNs. Every
``EMS.call`` and every change of a battery emulator's setpoint (its Modbus write hook) is
timestamped with ``time.monotonic()``.

1. **Latency, OpenADR 2.0b** (plain HTTP, then mutual TLS + XML signatures): ``--events``
   SIMPLE level-2 events for ``bat-1`` (120 clock s, starting now), one at a time, each
   added at a random phase of the 1-s poll (after a U(0, poll) pause). Times from
   ``add_event`` at the VTN to (a) the bridge receiving it and deciding, (b) the first
   ``EnergyMethod`` call the EMS sends (``ScheduledPlan.first_sent_mono``), (c) the battery
   emulator's setpoint changing. Baseline: the poll interval (an event waits for the next
   poll), so the table shows p95 ÷ poll. Target of the issue: < 2 s to the first command.
2. **100 concurrent events across 4 programs** (market contexts / OpenADR 3 programs),
   each 3 intervals of 60 clock s (1 s real) with SIMPLE levels 1-3, targets spread over
   one agent (``resourceID bat-k``), one site (group ``site-k``) and the fleet (group
   ``batteries``), starts spread over 135 clock s after a 5-s real lead; all put on the VTN
   at once (2.0b: one ``oadrDistributeEvent`` at the next poll; OpenADR 3: stored in the
   VTN, checked with ``RawEvent``, between two polls). An interval counts as **missed** when
   no ``EnergyMethod`` call of its event whose sequence reaches into the interval was sent
   before the interval ended; **late** when that call went out more than 10 % of the
   interval after the interval began. Figures: missed, late, lag of each interval's command
   behind its start (real ms), calls and failed calls (refusals, members not answering),
   time until every event is answered (2.0b: the ``oadrCreatedEvent`` opts at the VTN;
   OpenADR 3 has no opt message: the adapter's decisions), and this process's CPU time for
   the cycle (it runs the VTN, the EMS, the agents and the emulators too). Events on the
   same battery overlap, so at the device the newest command wins: part 2 counts what the
   EMS sent, part 1 checks the device.

The machine is shared (2 CPUs): the load average is printed with the figures. Exits 0
whatever the result: it is a measurement, not a test.

Run::

    .venv/bin/python bench/openadr_latency.py [--events 20] [--concurrent 100] [--tls]
        [--quick] [--json out.json]

``--tls`` runs the concurrent 2.0b cycle over mutual TLS + signatures as well (part 1
always measures both); ``--quick`` is a smoke run (3 events, 12 concurrent).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "openadr"))

import numpy as np
from _openadr_rig import Rig, rig, wait_until
from bus_ingest import progress_bar
from oa3_vtn import VEN_CLIENT, Oa3Vtn, iso, strict
from oadr2b_vtn import TestVtn, make_pki
from openadr3.entities.raw import RawEvent
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from sef.broker import Mosquitto
from sef.openadr import DrBridge, DrEvent, Oadr2bAdapter, Oadr2bConfig, Oadr3Config, OptDecision
from sef.openadr._oadr3 import Oadr3Adapter

console = Console()

SPEED = 60.0
"""EMS clock speed: a 60-s interval lasts 1 s real."""
POLL_S = 1.0
"""The 2.0b VTN's poll interval (real s), and the OpenADR 3 adapter's (clock s / SPEED)."""
INTERVAL_S = 60.0
"""Length of each interval of the concurrent events, clock s."""
LEAD_REAL_S = 5.0
"""Real seconds between putting the concurrent events on the VTN and the first start."""
LATE_FRACTION = 0.1
"""An interval's command sent later than this fraction of the interval counts as late."""
PROGRAMS = 4


def _stats_ms(values: list[float]) -> dict[str, float]:
    """p50 / p95 / max of real seconds, in ms."""
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "max": float("nan")}
    a = np.asarray(values) * 1000.0
    return {
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "max": float(a.max()),
    }


def _instrument(bridge: DrBridge) -> tuple[dict[str, float], dict[str, float]]:
    """Wrap ``bridge.on_event``: when each event id first arrived and was first decided."""
    arrived: dict[str, float] = {}
    decided: dict[str, float] = {}
    original = bridge.on_event

    async def on_event(event: DrEvent) -> OptDecision:
        arrived.setdefault(event.event_id, time.monotonic())
        decision = await original(event)
        decided.setdefault(event.event_id, time.monotonic())
        return decision

    bridge.on_event = on_event  # type: ignore[method-assign]
    return arrived, decided


def _ignore_opt(ven_id: str, event_id: str, opt_type: str) -> None:
    """Openleadr wants a callback per event; the VTN wrapper records the opts."""


@contextlib.asynccontextmanager
async def _oadr2b(r: Rig, tls: bool, workdir: Path) -> AsyncIterator[tuple[TestVtn, DrBridge]]:
    """An openleadr VTN (plain, or mutual TLS + signatures) and a bridge whose 2.0b
    adapter is registered with it."""
    pki = make_pki(workdir / f"ca-{uuid.uuid4().hex[:6]}") if tls else None
    vtn = TestVtn(pki=pki, expected_ven_fingerprint=pki.ven_fingerprint if pki else None)
    with contextlib.redirect_stdout(io.StringIO()):  # openleadr prints a banner
        await vtn.start()
    tls_fields: dict[str, Any] = {}
    if pki is not None:
        tls_fields = {
            "cert": pki.ven_cert,
            "key": pki.ven_key,
            "ca_file": pki.ca,
            "vtn_fingerprint": pki.vtn_fingerprint,
        }
    config = Oadr2bConfig(
        vtn_url=vtn.url,
        ven_name="sef-bench",
        report_groups=("feeder-1",),
        report_interval_s=1,
        register_timeout_s=30,
        **tls_fields,
    )
    bridge = DrBridge(r.ems, rng_seed=1)
    try:
        await bridge.attach(Oadr2bAdapter(config, clock=r.clock))
        yield vtn, bridge
    finally:
        await bridge.close()
        await vtn.stop()


# -- part 1: latency --------------------------------------------------------------------


async def latency_2b(
    r: Rig, tls: bool, n: int, workdir: Path, progress: Progress
) -> dict[str, Any]:
    """Part 1 for one transport; the stage times in real s per event."""
    label = "mTLS+sig" if tls else "plain"
    task = progress.add_task(f"latency, 2.0b {label}", total=n)
    stages: dict[str, list[float]] = {
        k: [] for k in ("arrival", "decision", "first_call", "device", "bridge", "call_to_device")
    }
    misses = 0
    rng = random.Random(7)
    async with _oadr2b(r, tls, workdir) as (vtn, bridge):
        arrived, decided = _instrument(bridge)
        ven_id = bridge.adapters[0].status().ven_id
        for i in range(n):
            await wait_until(lambda: r.setpoint_w("bat-1") == 0.0, 10.0)
            await asyncio.sleep(rng.uniform(0.0, POLL_S))
            event_id = f"lat-{'tls' if tls else 'plain'}-{i}"
            start = datetime.fromtimestamp(int(r.clock.now()), UTC)
            vtn.server.add_event(
                ven_id=ven_id,
                signal_name="SIMPLE",
                signal_type="level",
                intervals=[
                    {"dtstart": start, "duration": timedelta(seconds=120), "signal_payload": 2}
                ],
                event_id=event_id,
                targets=[{"resource_id": "bat-1"}],
                market_context="http://sef.test/programs/latency",
                callback=_ignore_opt,
            )
            t0 = time.monotonic()
            key = ("oadr2b", event_id, 0)

            def done(key: tuple[str, str, int] = key, t0: float = t0) -> bool:
                s = bridge.scheduled(key)
                first = s is not None and s.first_sent_mono is not None
                return first and r.first_change_after("bat-1", t0) is not None

            if not await wait_until(done, 10.0):
                misses += 1
                progress.advance(task)
                continue
            s = bridge.scheduled(key)
            assert s is not None and s.first_sent_mono is not None
            device = r.first_change_after("bat-1", t0)
            assert device is not None
            stages["arrival"].append(arrived[event_id] - t0)
            stages["decision"].append(decided[event_id] - t0)
            stages["first_call"].append(s.first_sent_mono - t0)
            stages["device"].append(device - t0)
            stages["bridge"].append(s.first_sent_mono - s.received_mono)
            stages["call_to_device"].append(device - s.first_sent_mono)
            progress.advance(task)
    progress.remove_task(task)
    return {
        "transport": label,
        "events": n,
        "no_command_within_10_s": misses,
        "stages_ms": {k: _stats_ms(v) for k, v in stages.items()},
    }


# -- part 2: concurrent events -----------------------------------------------------------


def _plan_events(r: Rig, n: int) -> list[dict[str, Any]]:
    """The concurrent events, protocol-neutral: id, program, targets, starts, levels."""
    t0 = float(int(r.clock.now() + LEAD_REAL_S * SPEED))
    events = []
    for i in range(n):
        k = i % 4 + 1
        kind = i % 3
        start = t0 + (i % 10) * 15.0
        events.append(
            {
                "id": f"cc-{i}",
                "program": i % PROGRAMS,
                "resource": f"bat-{k}" if kind == 0 else None,
                "group": f"site-{k}" if kind == 1 else "batteries" if kind == 2 else None,
                "starts": [start + j * INTERVAL_S for j in range(3)],
                "levels": [(i + j) % 3 + 1 for j in range(3)],
            }
        )
    return events


def _intervals(
    r: Rig, bridge: DrBridge, source: str, events: list[dict[str, Any]], ids: list[str]
) -> dict[str, Any]:
    """Missed / late intervals, the lag of each event's first command behind its start
    (real s), and how many intervals were covered ahead (by a sequence sent earlier)."""
    lags: list[float] = []
    missed = late = ahead = 0
    for ev, event_id in zip(events, ids, strict=True):
        record = bridge.history.get((source, event_id, 0))
        offset = record.offset_s if record is not None else 0.0
        calls = r.calls_by(f"openadr:{source}:{event_id}")
        for begin in ev["starts"]:
            s, e = begin + offset, begin + offset + INTERVAL_S
            sent = [c.clock_s for c in calls if c.clock_s < e and c.clock_s + c.span_s > s]
            if not sent:
                missed += 1
                continue
            lag = min(sent) - s
            if begin == ev["starts"][0]:
                lags.append(lag / SPEED)
            ahead += lag < 0
            late += lag > LATE_FRACTION * INTERVAL_S
    return {
        "intervals": 3 * len(events),
        "missed": missed,
        "late": late,
        "ahead": ahead,
        "lag_ms": lags,
    }


async def _run_cycle(
    r: Rig,
    bridge: DrBridge,
    source: str,
    events: list[dict[str, Any]],
    put: Callable[[], list[str]],
    answered: Callable[[list[str]], float | None],
    progress: Progress,
    label: str,
) -> dict[str, Any]:
    """Put the events on the VTN (``put`` → their ids), wait for the answers
    (``answered`` → the time of the last, ``None`` before) and for the last interval."""
    arrived, _ = _instrument(bridge)
    calls0, failed0 = bridge.executor.calls_sent, bridge.executor.calls_failed
    task = progress.add_task(f"{label}: {len(events)} events", total=len(events))
    cpu0, t0 = time.process_time(), time.monotonic()
    ids = put()
    await wait_until(lambda: answered(ids) is not None, 60.0)
    cpu_answer = time.process_time() - cpu0
    last_answer = answered(ids)
    first_arrival = min((arrived[i] for i in ids if i in arrived), default=float("nan"))
    end = max(ev["starts"][-1] for ev in events) + INTERVAL_S
    while r.clock.now() < end + SPEED:
        done = sum(1 for ev in events if ev["starts"][-1] + INTERVAL_S <= r.clock.now())
        progress.update(task, completed=done)
        await asyncio.sleep(0.2)
    cpu_cycle = time.process_time() - cpu0
    progress.remove_task(task)
    outcome = _intervals(r, bridge, source, events, ids)
    return {
        "protocol": label,
        "events": len(events),
        "programs": PROGRAMS,
        "intervals": outcome["intervals"],
        "missed": outcome["missed"],
        "late": outcome["late"],
        "ahead": outcome["ahead"],
        "lag_ms": _stats_ms(outcome["lag_ms"]),
        "calls": bridge.executor.calls_sent - calls0,
        "failed": bridge.executor.calls_failed - failed0,
        "answered": sum(1 for i in ids if i in arrived),
        "all_answered_s": None if last_answer is None else last_answer - t0,
        "delivery_to_answers_s": None if last_answer is None else last_answer - first_arrival,
        "cpu_answers_s": cpu_answer,
        "cpu_cycle_s": cpu_cycle,
        "wall_cycle_s": time.monotonic() - t0,
    }


async def concurrent_2b(
    r: Rig, tls: bool, n: int, workdir: Path, progress: Progress
) -> dict[str, Any]:
    """Part 2 over OpenADR 2.0b: every event in one ``oadrDistributeEvent``."""
    events = _plan_events(r, n)
    async with _oadr2b(r, tls, workdir) as (vtn, bridge):
        ven_id = bridge.adapters[0].status().ven_id

        def put() -> list[str]:
            for ev in events:
                target = {"resource_id": ev["resource"]} if ev["resource"] else None
                vtn.server.add_event(
                    ven_id=ven_id,
                    signal_name="SIMPLE",
                    signal_type="level",
                    intervals=[
                        {
                            "dtstart": datetime.fromtimestamp(s, UTC),
                            "duration": timedelta(seconds=INTERVAL_S),
                            "signal_payload": level,
                        }
                        for s, level in zip(ev["starts"], ev["levels"], strict=True)
                    ],
                    event_id=ev["id"],
                    targets=[target or {"group_id": ev["group"]}],
                    market_context=f"http://sef.test/programs/p{ev['program']}",
                    callback=_ignore_opt,
                )
            return [ev["id"] for ev in events]

        def answered(ids: list[str]) -> float | None:
            seen: dict[str, float] = {}
            for opt in vtn.opts:
                seen.setdefault(opt.event_id, opt.at)
            return max(seen[i] for i in ids) if all(i in seen for i in ids) else None

        label = "2.0b mTLS+sig" if tls else "2.0b plain"
        return await _run_cycle(r, bridge, "oadr2b", events, put, answered, progress, label)


async def concurrent_oa3(r: Rig, n: int, progress: Progress) -> dict[str, Any]:
    """Part 2 over OpenADR 3: the events stored in the VTN between two polls."""
    events = _plan_events(r, n)
    vtn = await Oa3Vtn(r.clock.now).start()
    bridge = DrBridge(r.ems, rng_seed=2)
    try:
        programs = [
            (await vtn.create("/programs", {"programName": f"bench-p{j}"}))["id"]
            for j in range(PROGRAMS)
        ]
        config = Oadr3Config(
            vtn_url=vtn.url,
            ven_name="sef-bench",
            client_id=VEN_CLIENT[0],
            client_secret=VEN_CLIENT[1],
            poll_interval_s=POLL_S * SPEED,
            report_interval_s=POLL_S * SPEED,
        )
        adapter = Oadr3Adapter(config, clock=r.clock)
        await bridge.attach(adapter)

        def put() -> list[str]:
            ids = []
            for ev in events:
                body = strict(RawEvent, _oa3_body(ev, programs[ev["program"]]))
                stamp = vtn.stamp()
                event_id = str(uuid.uuid4())
                vtn.events[event_id] = {
                    **body,
                    "id": event_id,
                    "createdDateTime": stamp,
                    "modificationDateTime": stamp,
                    "objectType": "EVENT",
                }
                ids.append(event_id)
            return ids

        def answered(ids: list[str]) -> float | None:
            known = adapter.decisions()
            return time.monotonic() if all(i in known for i in ids) else None

        return await _run_cycle(r, bridge, "oadr3", events, put, answered, progress, "OpenADR 3")
    finally:
        await bridge.close()
        await vtn.stop()


def _oa3_body(ev: dict[str, Any], program_id: str) -> dict[str, Any]:
    return {
        "programID": program_id,
        "eventName": ev["id"],
        "targets": [ev["group"] or ev["resource"].replace("bat-", "site-")],
        "intervalPeriod": {"start": iso(ev["starts"][0]), "duration": "PT1M"},
        "intervals": [
            {"id": j, "payloads": [{"type": "SIMPLE", "values": [level]}]}
            for j, level in enumerate(ev["levels"])
        ],
    }


# -- report ---------------------------------------------------------------------------


def _ms(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def print_latency(results: list[dict[str, Any]]) -> None:
    """Part 1's table."""
    names = {
        "arrival": "→ bridge receives",
        "decision": "→ bridge decided",
        "first_call": "→ first EnergyMethod sent",
        "device": "→ battery setpoint changed",
        "bridge": "  bridge: arrival → 1st call",
        "call_to_device": "  1st call → setpoint changed",
    }
    table = Table(title=f"1. OpenADR 2.0b: from add_event at the VTN (poll {POLL_S:g} s), real ms")
    for col in ("transport", "stage", "p50", "p95", "max", "p95 ÷ poll"):
        table.add_column(col, justify="left" if col in ("transport", "stage") else "right")
    for res in results:
        for key, name in names.items():
            st = res["stages_ms"][key]
            ratio = f"{st['p95'] / (POLL_S * 1000):.2f}" if not name.startswith(" ") else ""
            table.add_row(res["transport"], name, _ms(st["p50"]), _ms(st["p95"]), _ms(st["max"]),
                          ratio)  # fmt: skip
        table.add_section()
    console.print(table)
    for res in results:
        worst = res["stages_ms"]["first_call"]["max"] / 1000
        device = res["stages_ms"]["device"]["max"] / 1000
        verdict = "PASS" if worst < 2.0 and res["no_command_within_10_s"] == 0 else "FAIL"
        console.print(
            f"{res['transport']}: {res['events']} events, worst event → first command "
            f"{worst:.2f} s (device {device:.2f} s), none missing: "
            f"{res['no_command_within_10_s'] == 0} → {verdict} (target < 2 s)"
        )


def print_concurrent(results: list[dict[str, Any]]) -> None:
    """Part 2's table."""
    table = Table(title="2. Concurrent events, 3 × 60-s intervals each (clock 60×)")
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("events / programs", lambda x: f"{x['events']} / {x['programs']}"),
        ("intervals", lambda x: str(x["intervals"])),
        ("missed (no command before its end)", lambda x: str(x["missed"])),
        (f"late (> {LATE_FRACTION:.0%} of the interval)", lambda x: str(x["late"])),
        ("intervals commanded ahead (earlier sequence)", lambda x: str(x["ahead"])),
        ("first command after event start, p50/p95/max ms",
         lambda x: "/".join(_ms(x["lag_ms"][k]) for k in ("p50", "p95", "max"))),
        ("EnergyMethod calls / failed", lambda x: f"{x['calls']} / {x['failed']}"),
        ("events answered", lambda x: str(x["answered"])),
        ("put on VTN → all answered, s", lambda x: _s(x["all_answered_s"])),
        ("first delivery → all answered, s", lambda x: _s(x["delivery_to_answers_s"])),
        ("CPU until all answered, s", lambda x: f"{x['cpu_answers_s']:.2f}"),
        ("CPU for the whole cycle / wall, s",
         lambda x: f"{x['cpu_cycle_s']:.2f} / {x['wall_cycle_s']:.1f}"),
        ("baseline: CPU of the idle rig over that wall, s",
         lambda x: f"{x['cpu_idle_s']:.2f}"),
        ("cycle CPU ÷ idle CPU", lambda x: f"{x['cpu_cycle_s'] / x['cpu_idle_s']:.2f}"),
    ]  # fmt: skip
    table.add_column("figure")
    for res in results:
        table.add_column(res["protocol"], justify="right")
    for name, cell in rows:
        table.add_row(name, *(cell(res) for res in results))
    console.print(table)
    for res in results:
        ok = res["missed"] == 0 and res["answered"] == res["events"]
        console.print(f"{res['protocol']}: no missed interval → {'PASS' if ok else 'FAIL'}")


def _s(x: float | None) -> str:
    return "never" if x is None else f"{x:.2f}"


# -- main -----------------------------------------------------------------------------


async def _idle_cpu(r: Rig, seconds: float) -> float:
    """CPU s per real s of this process with the rig running and no event (baseline)."""
    await wait_until(lambda: all(r.setpoint_w(a) == 0.0 for a in r.batteries), 10.0)
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    return (time.process_time() - cpu0) / (time.monotonic() - t0)


async def run(args: argparse.Namespace, broker_url: str, workdir: Path) -> dict[str, Any]:
    """Every part, on one rig."""
    out: dict[str, Any] = {"load_average_start": os.getloadavg()}
    with progress_bar(console) as progress:
        async with rig(broker_url, batteries=4, speed=SPEED) as r:
            out["latency"] = [
                await latency_2b(r, tls, args.events, workdir, progress) for tls in (False, True)
            ]
            idle_cpu_per_s = await _idle_cpu(r, 2.0 if args.quick else 10.0)
            cycles = [await concurrent_2b(r, False, args.concurrent, workdir, progress)]
            if args.tls:
                cycles.append(await concurrent_2b(r, True, args.concurrent, workdir, progress))
            cycles.append(await concurrent_oa3(r, args.concurrent, progress))
            for cycle in cycles:
                cycle["cpu_idle_s"] = idle_cpu_per_s * cycle["wall_cycle_s"]
            out["concurrent"] = cycles
            out["idle_cpu_s_per_s"] = idle_cpu_per_s
    out["load_average_end"] = os.getloadavg()
    return out


def main() -> None:
    """Parse the options, run, print (and write ``--json``)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=20, help="part 1: events per transport")
    ap.add_argument("--concurrent", type=int, default=100, help="part 2: events at once")
    ap.add_argument("--tls", action="store_true", help="part 2 over mTLS + signatures too")
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 and 12 events")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument("--log-level", default="ERROR", help="log level of the loggers")
    args = ap.parse_args()
    if args.quick:
        args.events, args.concurrent = 3, 12
    if args.events < 1 or args.concurrent < 1:
        ap.error("need --events >= 1 and --concurrent >= 1")
    logging.basicConfig(level=args.log_level.upper())
    logging.getLogger("openleadr").setLevel(args.log_level.upper())
    console.print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="sef-openadr-bench-") as tmp:
        os.environ.setdefault("SEF_STATE_DIR", str(Path(tmp) / "state"))
        (Path(tmp) / "broker").mkdir()
        with Mosquitto(workdir=Path(tmp) / "broker") as broker:
            out = asyncio.run(run(args, broker.url, Path(tmp)))
    print_latency(out["latency"])
    print_concurrent(out["concurrent"])
    console.print(
        "load average start / end: "
        + " ".join(f"{x:.2f}" for x in out["load_average_start"])
        + " / "
        + " ".join(f"{x:.2f}" for x in out["load_average_end"])
        + " (2 CPUs shared with other work)"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()

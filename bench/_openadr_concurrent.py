"""Part 2 of ``bench/openadr_latency.py``: many events delivered at once, across
programs, each with intervals; did every interval's command go out in time?

See the bench's docstring for the method and the definitions of missed and late.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _openadr_arbitration import check, segments
from _openadr_rig import (
    ENERGY_METHOD,
    POLL_S,
    SPEED,
    Rig,
    ignore_opt,
    instrument,
    oadr2b_bridge,
    stats_ms,
    wait_until,
)
from oa3_vtn import VEN_CLIENT, Oa3Vtn, iso, strict
from openadr3.entities.raw import RawEvent
from rich.progress import Progress

from sef.openadr import DrBridge, Oadr3Config
from sef.openadr._oadr3 import Oadr3Adapter

INTERVAL_S = 60.0
"""Length of each interval of the concurrent events, clock s."""
LEAD_REAL_S = 5.0
"""Real seconds between putting the concurrent events on the VTN and the first start."""
PROGRAMS = 4
"""Programs (2.0b market contexts, OpenADR 3 programs) the events are spread over."""


def _plan_events(r: Rig, n: int) -> list[dict[str, Any]]:
    """The concurrent events, protocol-neutral: id, program, priority, targets, starts,
    levels. Every tenth event is a lone one: one battery, after the overlapping block."""
    t0 = float(int(r.clock.now() + LEAD_REAL_S * SPEED))
    lone_t0 = t0 + 9 * 15.0 + 3 * INTERVAL_S
    events = []
    for i in range(n):
        k = i % 4 + 1
        kind = i % 3
        start = t0 + (i % 10) * 15.0
        lone = i % 10 == 9
        if lone:  # alone on bat-k: the j-th lone event on that battery follows the last
            j = i // 10
            k = j % 4 + 1
            start = lone_t0 + (j // 4) * 3 * INTERVAL_S
        events.append(
            {
                "id": f"cc-{i}",
                "program": i % PROGRAMS,
                "priority": (i // 3) % 4,
                "resource": f"bat-{k}" if kind == 0 or lone else None,
                "group": None
                if lone
                else f"site-{k}"
                if kind == 1
                else "batteries"
                if kind == 2
                else None,
                "starts": [start + j * INTERVAL_S for j in range(3)],
                "levels": [(i + j) % 3 + 1 for j in range(3)],
            }
        )
    return events


GROUPS = {"batteries": tuple(f"bat-{k}" for k in range(1, 5))} | {
    f"site-{k}": (f"bat-{k}",) for k in range(1, 5)
}
"""The rig's groups the events target (``feeder-1`` is all batteries too)."""
GROUPS["feeder-1"] = GROUPS["batteries"]


def _spans(
    bridge: DrBridge, source: str, events: list[dict[str, Any]], ids: list[str]
) -> dict[str, dict[str, list[tuple[float, float, tuple[str, int]]]]]:
    """Event id → device → its intervals ``(begin, end, (cmd, rate_kW))``, clock s with the
    offset: the intervals as put on the VTN, the command each maps to from the bridge's
    plan (the mapping, not the arbitration)."""
    out: dict[str, dict[str, list[tuple[float, float, tuple[str, int]]]]] = {}
    for ev, event_id in zip(events, ids, strict=True):
        s = bridge.scheduled((source, event_id, 0))
        if s is None:
            continue
        per: dict[str, list[tuple[float, float, tuple[str, int]]]] = {}
        for begin in ev["starts"]:
            b, e = begin + s.offset_s, begin + s.offset_s + INTERVAL_S
            for d in s.plan.dispatches:
                at = d.start_s + s.offset_s
                for cmd, rate, duration in d.commands:
                    if at <= (b + e) / 2 < at + duration:
                        for agent in d.agents:
                            per.setdefault(agent, []).append((b, e, (str(cmd), int(rate))))
                    at += duration
        out[event_id] = per
    return out


def _arbitration(
    r: Rig,
    bridge: DrBridge,
    source: str,
    events: list[dict[str, Any]],
    ids: list[str],
    arrived: dict[str, float],
    calls_from: int,
) -> dict[str, Any]:
    """Part 2's check (``_openadr_arbitration``), at the EMS's calls and at the devices."""
    by_id = {event_id: {**ev, "id": event_id} for ev, event_id in zip(events, ids, strict=True)}
    arrival = {event_id: n for n, event_id in enumerate(arrived)}
    spans = {e: v for e, v in _spans(bridge, source, events, ids).items() if e in arrival}
    segs = segments(list(by_id.values()), spans, arrival)
    mono, now = time.monotonic(), r.clock.now()
    calls = [
        c
        for c in r.calls[calls_from:]
        if c.method == ENERGY_METHOD and (c.sent_by or "").startswith(f"openadr:{source}:")
    ]
    figures = check(
        segs,
        calls,
        r.setpoints,
        GROUPS,
        f"openadr:{source}:",
        lambda clock_s: mono + (clock_s - now) / SPEED,
        SPEED,
    )
    figures["intervals"] = sum(len(ev["starts"]) for ev in events)
    for view in ("ems", "device"):  # what the bridge knew of a missed segment's holder
        for m in figures[view]["missed_segments"]:
            held = bridge.scheduled((source, m["holder"], 0))
            m["holder_rank"] = None if held is None else held.rank
            m["holder_reached"] = None if held is None else sorted(held.reached)
            m["holder_first_sent_s"] = None if held is None else held.first_sent_s
            m["holder_arrival"] = arrival.get(m["holder"])
            m["holder_calls"] = [
                (round(c.clock_s - m["begin"], 3), c.target, c.args)
                for c in calls
                if c.sent_by == f"openadr:{source}:{m['holder']}"
            ]
    return figures


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
    arrived, _ = instrument(bridge)
    calls_from = len(r.calls)
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
    outcome = _arbitration(r, bridge, source, events, ids, arrived, calls_from)
    return {
        "protocol": label,
        "events": len(events),
        "programs": PROGRAMS,
        "intervals": outcome["intervals"],
        "ems": {**outcome["ems"], "lag_ms": stats_ms(outcome["ems"]["lags_s"])},
        "device": {**outcome["device"], "lag_ms": stats_ms(outcome["device"]["lags_s"])},
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
    async with oadr2b_bridge(r, tls, workdir) as (vtn, bridge):
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
                    callback=ignore_opt,
                )
                # openleadr's add_event has no priority: set it on the queued event
                stored = vtn.server.events[ven_id][-1]
                stored.event_descriptor.priority = ev["priority"]
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
        **({"priority": ev["priority"]} if ev["priority"] > 0 else {}),
        "intervals": [
            {"id": j, "payloads": [{"type": "SIMPLE", "values": [level]}]}
            for j, level in enumerate(ev["levels"])
        ],
    }

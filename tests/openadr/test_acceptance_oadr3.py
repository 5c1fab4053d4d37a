"""Acceptance of issue 15 for OpenADR 3, end to end on loopback: the VEN reads a program and
an IMPORT_CAPACITY_LIMIT event from the test VTN, the live controller keeps the metered
feeder under the limit for the event (checked at the meter emulator), the VTN receives the
usage reports, and the event's deletion at the VTN lifts the limit.

The chain: :class:`~oa3_vtn.Oa3Vtn` (every request and response checked with the
``openadr3`` models; event times stamped on the EMS clock, team decision 1) →
:class:`Oadr3Adapter` (polling every 0.2 real s) → :class:`DrBridge` with
``live_control=True`` → limit windows on the EMS target board → :class:`LiveControl` (its
feeder guard and its step plans) → ``EnergyMethod`` over the test's Mosquitto → BIS agents
→ SunSpec battery emulators (Modbus TCP), whose AC power reaches the SunSpec **meter
emulator** through its CT input; the meter agent publishes the feeder's net power that the
guard holds. A UCM water heater (CTA-2045 over a pty) is on the feeder too.

The feeder's base load is constant and the control app wants the batteries idle and the
heaters left alone, so without the event the meter reads the base load, 3 kW above the
event's limits: only the event can bring it under (the scenario's own feeder limit, the
guard's limit for ``track``, is above the base load).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from e2e_oa3_support import FeederStack, feeder_stack
from oa3_vtn import VEN_CLIENT, Oa3Vtn, iso

from api_stack import ManualClock
from sef.control._live_guard import guard_limit_kw
from sef.control.controllers.base import WH_KEEP, Decision, Forecast, Observation
from sef.control.live import LiveControl
from sef.control.scenario import Scenario, scenario_from_dict
from sef.ems import EMS
from sef.ems._records import AgentRecord, PropertyValue
from sef.ems._target_board import target_board
from sef.interface import DEMO_INTERFACE
from sef.openadr import DrBridge, Oadr3Config, Opt, TelemetrySample
from sef.openadr._oadr3 import Oadr3Adapter
from support import wait_for

SPEED = 120.0  # clock s per real s: a 1-min step is 0.5 real s
DT = 60.0  # step length, clock s
TARGET_KW = 2.0
STEPS = 20
EVENT_STEP = 1  # the event is created at the VTN once this step has started
WINDOW = (5, 21)  # the event's span, steps after step 0: 3 + 3 + 10 min
INTERVALS = ((3, 3.0), (3, 2.0), (10, 3.0))  # (minutes, kW under the base load) each
DELETE_STEP = 13  # the event is deleted at the VTN once this step has started
CUT_KW = 3.0


def _scenario() -> Scenario:
    raw: dict[str, Any] = {
        "name": "oa3-acceptance",
        "dt_s": 60,
        "duration_h": 1,
        "seed": 7,
        "base_load": {"source": "bdew_h0", "homes": 40},
        "target": {"kind": "flat", "value_kw": TARGET_KW},
        "batteries": {"count": 1},  # the scenario's fleet is not used in live mode
        "water_heaters": {"count": 1},
        "control": {"interval_min": 15, "horizon_h": 1},
    }
    return scenario_from_dict(raw)


class Idle:
    """A control app that wants every battery idle (0 kW) and leaves the heaters alone."""

    name = "idle"
    perfect_foresight = False

    def reset(self, scenario: Scenario) -> None:
        pass

    def forecast_steps(self, step: int) -> int:
        return 15

    def decide(self, obs: Observation, forecast: Forecast) -> Decision:
        rates = np.zeros(obs.battery_energy_kwh.size, dtype=np.int64)
        cmd = np.full(obs.wh_energy_kwh.size, WH_KEEP, dtype=np.int64)
        return Decision(rates, cmd, round(obs.dt_s), 1800)


def capacity_event(program_id: str, start_s: float, limits_kw: list[float]) -> dict[str, Any]:
    """An IMPORT_CAPACITY_LIMIT event (kW) over :data:`INTERVALS`, from ``start_s`` (Unix s,
    EMS clock), for ``feeder-1``, asking for USAGE reports."""
    intervals = [
        {
            "id": i,
            "intervalPeriod": {
                "start": iso(start_s + 60.0 * sum(m for m, _ in INTERVALS[:i])),
                "duration": f"PT{minutes}M",
            },
            "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [limit]}],
        }
        for i, ((minutes, _), limit) in enumerate(zip(INTERVALS, limits_kw, strict=True))
    ]
    return {
        "programID": program_id,
        "eventName": "feeder-1 capacity",
        "targets": ["feeder-1"],
        "payloadDescriptors": [
            {
                "objectType": "EVENT_PAYLOAD_DESCRIPTOR",
                "payloadType": "IMPORT_CAPACITY_LIMIT",
                "units": "KW",
            }
        ],
        "reportDescriptors": [{"payloadType": "USAGE", "readingType": "DIRECT_READ"}],
        "intervals": intervals,
    }


def _config(vtn: Oa3Vtn) -> Oadr3Config:
    return Oadr3Config(
        vtn_url=vtn.url,
        ven_name="sef-ems",
        client_id=VEN_CLIENT[0],
        client_secret=VEN_CLIENT[1],
        poll_interval_s=0.2 * SPEED,  # clock s: 0.2 real s
        report_interval_s=DT,
    )


METER_SLACK_KW = 0.05
"""Metering slack (kW): the readings are the base load less whole-kW battery rates; this
only absorbs float rounding and the batteries' standby draw, not control error."""
STEP_START_SLACK_S = 15.0
"""Clock s the meter may spend above the limit at one step start: at the window's start
and where the limit drops (from 7.33 to 6.33 kW) the batteries follow the step's plan a
few clock s late (the bus, the BIS's 6-clock-s poll); and the step plan, made on battery
telemetry older than the meter (the module's last test), can send the batteries idle at
a step start under a limit until the feeder guard answers the next meter sample (6 clock
s) and the BIS applies the correction. The window's first 15 clock s are not checked;
over the rest, readings above the limit may add up to a quarter of 15 s per step held."""


@dataclass
class Outcome:
    """What one end-to-end run produced (clock times Unix s on the EMS clock)."""

    start: float
    begin: float
    lifted_at: float
    base_kw: float
    limits: list[float]
    event_id: str
    program_id: str
    opt: Opt
    board_limits: list[float | None]
    live_limits: list[float | None]
    history_status: str
    ems_means: np.ndarray[Any, Any]
    spied: list[tuple[TelemetrySample, float]] = field(default_factory=list)
    result_extra: dict[str, float] = field(default_factory=dict)

    def limit_at(self, t_s: float) -> float:
        """The event's limit (kW) at clock time ``t_s`` (inf outside its intervals)."""
        edge = self.begin
        for (minutes, _), limit in zip(INTERVALS, self.limits, strict=True):
            if edge <= t_s < edge + 60.0 * minutes:
                return limit
            edge += 60.0 * minutes
        return float("inf")


async def _run(stack: FeederStack, scenario: Scenario, base_kw: float) -> tuple[Outcome, Oa3Vtn]:
    """The VTN, the VEN (adapter + bridge) and live control over ``stack``: the event is
    created at the VTN during step :data:`EVENT_STEP` and deleted during :data:`DELETE_STEP`."""
    limits = [base_kw - cut for _, cut in INTERVALS]
    vtn = await Oa3Vtn(stack.clock.now).start()
    bridge = DrBridge(stack.ems, rng_seed=3, live_control=True)
    spied: list[tuple[TelemetrySample, float]] = []
    telemetry = bridge.telemetry

    def spy(group: str) -> TelemetrySample | None:
        sample = telemetry(group)
        if sample is not None:  # with the devices' power at their emulators then
            spied.append((sample, stack.devices_kw()))
        return sample

    bridge.telemetry = spy  # type: ignore[method-assign]
    adapter = Oadr3Adapter(_config(vtn), clock=stack.clock)
    task: asyncio.Task[Any] | None = None
    try:
        program = await vtn.create("/programs", {"programName": "feeder capacity"})
        await bridge.attach(adapter)
        # step 0 in ~0.3 real s, on a whole second: the VTN's times are RFC 3339 (us)
        start = float(math.ceil(stack.clock.now() + 0.3 * SPEED))
        live = LiveControl(stack.ems, scenario, Idle(), start_s=start, meter_tau_s=0.0)
        task = asyncio.create_task(live.run(STEPS))
        await wait_for(lambda: live.steps_done > EVENT_STEP, 10.0)
        begin = start + WINDOW[0] * DT
        body = capacity_event(program["id"], begin, limits)
        event_id = (await vtn.create("/events", body))["id"]
        await wait_for(lambda: event_id in adapter.decisions(), 5.0)
        opt = adapter.decisions()[event_id].decision.opt
        board = target_board(stack.ems)  # the windows go on it when the plan's task runs
        await wait_for(lambda: board.limit_at(begin + 1.0) is not None, 5.0)
        edges = [begin + 60.0 * sum(m for m, _ in INTERVALS[:i]) for i in range(len(INTERVALS))]
        board_limits = [board.limit_at(begin - 1.0), *(board.limit_at(t + 1.0) for t in edges)]
        live_limits = [live.feeder.limit_kw(k) for k in (WINDOW[0] - 1, WINDOW[0], 8, 11)]
        await wait_for(lambda: live.steps_done > DELETE_STEP, 20.0)
        assert (await vtn.bl("DELETE", f"/events/{event_id}")).status_code == 200
        await wait_for(lambda: board.limit_at(begin + 1.0) is None, 5.0)
        lifted_at = stack.clock.now()
        record = bridge.history.get(("oadr3", event_id, 0))
        result = await task
    finally:
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await bridge.close()
        await vtn.stop()
    outcome = Outcome(
        start=start,
        begin=begin,
        lifted_at=lifted_at,
        base_kw=base_kw,
        limits=limits,
        event_id=event_id,
        program_id=program["id"],
        opt=opt,
        board_limits=board_limits,
        live_limits=live_limits,
        history_status="" if record is None else record.status,
        ems_means=live.feeder.step_means_kw(STEPS),
        spied=spied,
        result_extra=result.extra,
    )
    return outcome, vtn


@pytest.mark.timeout(90)
async def test_capacity_limit_event_holds_the_metered_feeder_and_usage_reaches_the_vtn(
    broker_url: str,
) -> None:
    scenario = _scenario()
    await asyncio.to_thread(scenario.wh_uncontrolled_means)
    track_kw = guard_limit_kw("track", TARGET_KW, float(np.max(scenario.base_expected_kw)))
    assert track_kw is not None
    base_kw = track_kw - 1.5  # the feeder's load: under the scenario's own feeder limit
    async with feeder_stack(broker_url, base_kw=base_kw, speed=SPEED) as stack:
        run, vtn = await _run(stack, scenario, base_kw)
        samples = list(stack.samples)
        means = stack.step_means_kw(run.start, DT, STEPS)
    limits, begin, start = run.limits, run.begin, run.start

    # -- the VEN read the program and the event; opted in; windows on the board ----------
    log = [(r.method, r.path, r.status) for r in vtn.requests]
    assert ("GET", "/programs", 200) in log
    event_polls = [r for r in vtn.requests if r.path == "/events" and r.method == "GET"]
    assert event_polls and all(r.status == 200 for r in event_polls)
    assert all(f"programID={run.program_id}" in r.query for r in event_polls)
    assert run.opt is Opt.IN
    assert run.board_limits == [None, *limits]
    assert run.live_limits == [pytest.approx(track_kw), *map(pytest.approx, limits)]

    # -- the feeder without the event: above the limits (the test can fail) ---------------
    before = [s.kw for s in samples if start <= s.t_s < begin]
    assert before and all(abs(kw - base_kw) <= METER_SLACK_KW for kw in before), before
    assert base_kw - max(limits) >= 2.0 - 1e-9
    assert np.allclose(means[: WINDOW[0]], base_kw, atol=METER_SLACK_KW)

    # -- the event: the meter emulator held under the limit -------------------------------
    react_s = STEP_START_SLACK_S  # the window's start is a step start too
    held = [s for s in samples if begin + react_s <= s.t_s < run.lifted_at]
    over = [s for s in held if s.kw > run.limit_at(s.t_s) + METER_SLACK_KW]
    period = float(np.median(np.diff([s.t_s for s in held])))
    steps_held = int((run.lifted_at - begin) // DT)
    assert len(over) * period <= STEP_START_SLACK_S * steps_held / 4, over  # rare and brief
    assert max(s.kw for s in held) <= base_kw + METER_SLACK_KW  # never above the load
    excess = float(np.mean([s.kw - run.limit_at(s.t_s) for s in held]))
    assert excess <= METER_SLACK_KW, excess  # on the whole under the limit
    slack = CUT_KW * STEP_START_SLACK_S / DT
    full = range(WINDOW[0], int((run.lifted_at - start) // DT))
    for figures in (means, run.ems_means):  # at the emulator, and as the EMS metered it
        for k in full:
            assert figures[k] <= run.limit_at(start + k * DT) + slack, (k, figures.tolist())
    assert run.result_extra["calls_failed"] == 0

    # -- the deletion at the VTN lifted the limit: the load came back ------------------------
    assert run.lifted_at < start + WINDOW[1] * DT  # before the event's end
    assert run.history_status == "cancelled"
    after = [s.kw for s in samples if s.t_s >= run.lifted_at + 2 * DT]
    assert after and all(abs(kw - base_kw) <= METER_SLACK_KW for kw in after), after
    assert np.allclose(means[-3:], base_kw, atol=METER_SLACK_KW)

    # -- USAGE reports: strictly valid at the VTN, the fleet's telemetry ---------------------
    # a report in flight when the VTN deleted the event is refused (400 "no event"): the
    # VEN learns of the deletion at its next poll; at most one such, none before the delete
    deleted = next(i for i, r in enumerate(vtn.requests) if r.method == "DELETE")
    posted = [r for r in vtn.requests if (r.method, r.path) == ("POST", "/reports")]
    crossed = [
        r
        for r in vtn.requests[deleted:]
        if (r.method, r.path, r.status) == ("POST", "/reports", 400)
    ]
    assert len(crossed) <= 1, crossed
    assert vtn.errors == [f"400 POST /reports: no event {run.event_id}"] * len(crossed)
    reports: list[dict[str, Any]] = list(vtn.reports.values())
    assert len(reports) >= 3 and len(posted) == len(reports) + len(crossed)
    assert all(r.status == 201 for r in posted if r not in crossed)
    by_value = {s.power_kw: truth for s, truth in run.spied if s.group == "feeder-1"}
    for report in reports:
        assert report["eventID"] == run.event_id and report["clientName"] == "sef-ems"
        (resource,) = report["resources"]
        assert resource["resourceName"] == "feeder-1"
        (value,) = resource["intervals"][0]["payloads"][0]["values"]
        assert value in by_value  # what the bridge's group telemetry read then
    values = [r["resources"][0]["intervals"][0]["payloads"][0]["values"][0] for r in reports]
    truths = [by_value[v] for v in values]
    # the fleet's telemetry against its emulators' power then: a BIS reports DC power (its
    # conversion losses, ~0.14 kW at 3 kW) and a rate change may be in flight; on a loaded
    # machine the agents' telemetry trails a 1 kW step for several reports (median 0.863
    # kW seen on CI: reported -3.137 while the emulators were at -4.0), so within 1 kW
    assert float(np.median(np.abs(np.subtract(values, truths)))) <= 1.0, (values, truths)
    assert float(np.median(values)) <= -(CUT_KW - 1.0)  # the fleet discharged for the limit
    worst = max(s.kw - run.limit_at(s.t_s) for s in held)
    peak = max(s.kw for s in held)
    print(
        f"base (no event) {base_kw:.2f} kW, limits {[round(x, 2) for x in limits]} kW; meter "
        f"step means {np.round(means, 2).tolist()}; in the event: peak {peak:.2f} kW,"
        f" worst {worst:+.2f} kW vs the limit, {len(over)} of {len(held)} readings over "
        f"(~{len(over) * period:.0f} clock s); reports {np.round(values, 2).tolist()} kW "
        f"(emulators {np.round(truths, 2).tolist()})"
    )


# -- a bug the end-to-end run shows: a step plan made on device power logged too late ------
def _record(agent_id: str, plate: dict[str, Any], telemetry: dict[str, Any], ts: float) -> Any:
    def sv(values: dict[str, Any]) -> dict[str, list[Any]]:
        return {k: ["s" if isinstance(v, str) else "d", v] for k, v in values.items()}

    record = AgentRecord(agent_id, online=True, groups=["feeder-1"])
    record.properties[f"{DEMO_INTERFACE}.Nameplate"] = PropertyValue(sv(plate), ts, ts)
    telemetry = telemetry | {"TimeStamp": ts}
    record.properties[f"{DEMO_INTERFACE}.Telemetry"] = PropertyValue(sv(telemetry), ts, ts)
    return record


def test_a_step_under_a_limit_reads_the_meter_against_the_devices_power_then() -> None:
    """What the end-to-end run above showed in about one run in three before the fix: at a
    step start under the event's limit the live controller sent the batteries idle, and the
    meter read the whole base load until the feeder guard answered the next meter sample.

    The feeder: 9.33 kW of base load; a battery discharging 3 kW since 305 s (its
    telemetry says so from 306 s on) holds it at 6.33 kW, the event's limit. At the step
    start (360 s) the meter's newest sample is from 359 s and the battery's newest
    telemetry from 360 s. The metered base load at 359 s is 6.33 + 3 = 9.33 kW, the net
    6.33 kW, and the step's plan must keep the 3-kW discharge. The device power the base
    is read against used to be logged only at step starts (300 s: 0 kW), so the base was
    taken as 6.33 kW, the net as 3.33 kW, and the plan sent the battery idle (the peak
    guard allowed 0 kW); the feeder watch now logs it at every meter sample."""
    scenario = _scenario()
    clock = ManualClock(306.0)  # the board drops ended windows by the EMS clock
    ems = EMS("mqtt://127.0.0.1:1", "ems-late-log", clock=clock)  # never started: registry
    plate = {"DeviceType": "battery", "Charge_Rate_kW": 8.0, "Discharge_Rate_kW": 8.0,
             "Capacity_kWh": 60.0, "SOC_Min_pct": 10.0, "SOC_Max_pct": 90.0}  # fmt: skip
    meter_plate = {"DeviceType": "meter"}
    start, base, limit = 0.0, 9.33, 6.33
    registry = ems.registry.agents
    registry["bat-1"] = _record("bat-1", plate, {"Sys_Power_kW": 0.0, "Sys_Energy_kWh": 30.0}, 300)
    registry["meter-1"] = _record("meter-1", meter_plate, {"Net_Power_kW": base}, 300)
    target_board(ems).put_window("vtn/event#0", 300.0, 900.0, limit_kw=limit)
    live = LiveControl(ems, scenario, Idle(), start_s=start, meter_tau_s=0.0)
    live.refresh_fleet(5)
    live.observe_step(5)  # the step start at 300 s: the battery idle, the meter at the base
    # 305 s: the battery discharges 3 kW; its telemetry and the meter's samples follow, and
    # the feeder watch logs the devices' power at each new meter sample (it used not to:
    # the base was read against the power of the previous step start, 0 kW)
    registry["bat-1"] = _record("bat-1", plate, {"Sys_Power_kW": -3.0, "Sys_Energy_kWh": 30.0}, 306)
    registry["meter-1"] = _record("meter-1", meter_plate, {"Net_Power_kW": limit}, 312)
    clock.t = 312.0
    live.feeder.once()  # the watch takes the 312-s sample
    clock.t = 360.0
    registry["bat-1"] = _record("bat-1", plate, {"Sys_Power_kW": -3.0, "Sys_Energy_kWh": 30.0}, 360)
    registry["meter-1"] = _record("meter-1", meter_plate, {"Net_Power_kW": limit}, 359)
    obs = live.observe_step(6)
    assert obs.net_kw == pytest.approx(limit)  # was 3.33 kW before the watch logged power
    assert live._guard_kw(6, obs) == -3  # was 0 (idle)

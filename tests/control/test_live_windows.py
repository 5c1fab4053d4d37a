"""Target-board windows and holds honoured by live control over the real bus
(``ems/_target_board.py``, ``control/live.py``, ``control/_live_feeder.py``).

Real Mosquitto, a real EMS and in-process agents (batteries, a feeder meter) on a 240x
clock, with a scripted app that always wants 0 kW (idle batteries). The meter reads a
scripted base load plus what the batteries run (from the ``EnergyMethod`` plans they
received), and each battery reports its running rate as ``Setpoint_kW`` like a BIS, so
every kW the live controller takes off the feeder shows on the meter. The objective is
``track`` with the feeder's base load under its own limit: nothing would be sent but for
the windows and holds put on the EMS's target board during the run (as the OpenADR
bridge does).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np
import pytest

from api_stack import start_stack, stop_stack
from sef.agents import Agent, method
from sef.clock import Clock, ScaledClock
from sef.control._live_guard import guard_limit_kw
from sef.control.controllers.base import WH_KEEP, Decision, Forecast, Observation
from sef.control.live import LiveControl
from sef.control.scenario import Scenario, scenario_from_dict
from sef.control.simulator import SimResult
from sef.ems import EMS
from sef.ems._target_board import TargetBoard, target_board
from sef.interface import DEMO_INTERFACE, Variant
from support import wait_for

START = 1_800_000_000.0  # clock time when a test's clock starts (Unix s)
DT = 60.0  # step length (s)
SPEED = 240.0  # clock s per real s
METER_PERIOD_S = 12.0  # clock s between meter samples
TARGET_KW = 2.0
Event = tuple[str, int, int]


def _scenario() -> Scenario:
    raw: dict[str, Any] = {
        "name": "live-windows",
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


def _track_limit_kw(scenario: Scenario) -> float:
    """The feeder guard's own limit for ``track`` (kW): max(target, forecast base peak)."""
    limit = guard_limit_kw("track", TARGET_KW, float(np.max(scenario.base_expected_kw)))
    assert limit is not None
    return limit


def _signed_kw(event: Event) -> int:
    return {"charge": 1, "discharge": -1}.get(event[0], 0) * event[1]


class Device(Agent):
    """A battery or meter: publishes a nameplate and telemetry and records every
    EnergyMethod call with the clock time (s) it arrived."""

    interfaces = (DEMO_INTERFACE,)

    def __init__(self, agent_id: str, broker: str, clock: Clock, plate: dict[str, Variant]) -> None:
        super().__init__(agent_id, broker, clock=clock, keepalive_s=2)
        iface = self.interface(DEMO_INTERFACE)
        if "Nameplate" not in iface.properties:
            iface.properties["Nameplate"] = replace(iface.properties["Telemetry"], name="Nameplate")
        self.plate = plate
        self.received: list[tuple[float, list[Event]]] = []
        self.telemetry: dict[str, Variant] = {"TimeStamp": Variant("u", int(clock.now()))}
        self._samples = 0

    async def on_start(self) -> None:
        self.set_property(DEMO_INTERFACE, "Nameplate", self.plate)
        self.set_property(DEMO_INTERFACE, "Telemetry", self.telemetry)

    @method(DEMO_INTERFACE, "EnergyMethod")
    def energy_method(self, cmds: list[tuple[str, int, int]]) -> None:
        self.received.append((self.clock.now(), [(str(c[0]), int(c[1]), int(c[2])) for c in cmds]))

    def publish(self, **values: Variant) -> None:
        """Publish a new telemetry sample (a counter makes every sample a change)."""
        self._samples += 1
        self.telemetry.update(values)
        self.telemetry["TimeStamp"] = Variant("u", int(self.clock.now()))
        self.telemetry["Sample"] = Variant("u", self._samples)
        self.set_property(DEMO_INTERFACE, "Telemetry", dict(self.telemetry))

    def rate_at(self, t_s: float) -> int:
        """The power (kW, + = charge) its last plan received by ``t_s`` runs then."""
        got = [(t0, events) for t0, events in self.received if t0 <= t_s]
        if not got:
            return 0
        t0, events = got[-1]
        elapsed = t_s - t0
        for event in events:
            if elapsed < event[2]:
                return _signed_kw(event)
            elapsed -= event[2]
        return 0


def battery(agent_id: str, broker: str, clock: Clock, kw: float, kwh: float) -> Device:
    """A battery of ``kw`` (kW, both ways) and ``kwh`` (kWh), half full."""
    numbers = {
        "Charge_Rate_kW": kw,
        "Discharge_Rate_kW": kw,
        "Capacity_kWh": kwh,
        "SOC_Min_pct": 10.0,
        "SOC_Max_pct": 90.0,
        "Charge_Efficiency_pct": 96.0,
        "Discharge_Efficiency_pct": 96.0,
    }
    plate = {"DeviceType": Variant("s", "battery")} | {
        k: Variant("d", v) for k, v in numbers.items()
    }
    device = Device(agent_id, broker, clock, plate)
    device.telemetry |= {
        "Sys_Energy_kWh": Variant("d", kwh / 2),
        "State": Variant("s", "CONNECTED"),
        "Setpoint_kW": Variant("d", 0.0),
    }
    return device


class Idle:
    """A control app that always wants every battery idle (0 kW) and heaters left alone."""

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


class MeterSample(NamedTuple):
    """A meter sample: clock s since step 0, its reading (kW), the batteries' power it
    read (kW) and the live fleet's batteries when it was taken."""

    since: float
    reading_kw: float
    batteries_kw: int
    fleet: tuple[str, ...]


@dataclass
class Run:
    """A finished live run."""

    start: float
    batteries: list[Device]
    live: LiveControl
    result: SimResult
    samples: list[MeterSample] = field(default_factory=list)


def _done(live: LiveControl, task: asyncio.Task[SimResult], k: int) -> Callable[[], bool]:
    return lambda: live.steps_done >= k or task.done()


async def run_live(
    broker_url: str,
    base_kw: float,
    steps: int,
    on_step: Callable[[TargetBoard, float, int, float], None],
    batteries: Sequence[tuple[float, float]] = ((5.0, 13.5), (3.0, 10.0)),
) -> Run:
    """Run ``steps`` live steps against a meter reading ``base_kw`` plus the batteries'
    power; ``on_step(board, start, k, now)`` is called once the run has done ``k`` steps
    (clock s ``now``: early in step ``k - 1``; the test puts its windows and holds there,
    while the controller runs)."""
    scenario = _scenario()
    await asyncio.to_thread(scenario.wh_uncontrolled_means)
    clock = ScaledClock(speed=SPEED, sim_start=START, real_anchor=time.time())
    ems = EMS(broker_url, "ems-live-windows", clock=clock, keepalive_s=2)
    meter = Device("feeder-meter", broker_url, clock, {"DeviceType": Variant("s", "meter")})
    bats = [battery(f"bat-{i}", broker_url, clock, *plate) for i, plate in enumerate(batteries)]
    samples: list[MeterSample] = []
    start = float("inf")
    running: list[LiveControl] = []

    async def drive_meter() -> None:
        while True:
            now = clock.now()
            rates = [b.rate_at(now) for b in bats]
            for b, rate in zip(bats, rates, strict=True):
                if b.telemetry["Setpoint_kW"].value != float(rate):
                    b.publish(Setpoint_kW=Variant("d", float(rate)))
            reading = base_kw + sum(rates)
            meter.publish(Net_Power_kW=Variant("d", reading))
            fleet = tuple(running[0].fleet.battery_ids) if running else ()
            samples.append(MeterSample(now - start, reading, sum(rates), fleet))
            await asyncio.sleep(METER_PERIOD_S / SPEED)

    started: list[Device] = []
    driver: asyncio.Task[None] | None = None
    task: asyncio.Task[SimResult] | None = None
    await ems.start()
    try:
        for agent in (meter, *bats):
            await agent.start()
            started.append(agent)
        start = clock.now() + 0.3 * SPEED  # step 0 in 0.3 real s
        driver = asyncio.create_task(drive_meter())
        await wait_for(
            lambda: all(
                (r := ems.registry.get(a.agent_id)) is not None
                and r.online
                and r.prop(DEMO_INTERFACE, "Nameplate")
                and r.prop(DEMO_INTERFACE, "Telemetry")
                and (a is not meter or "Net_Power_kW" in r.prop(DEMO_INTERFACE, "Telemetry"))
                for a in started
            ),
            10.0,
        )
        assert clock.now() < start - 5.0, "the agents came online too late for step 0"
        live = LiveControl(ems, scenario, Idle(), start_s=start, meter_tau_s=0.0)
        running.append(live)
        task = asyncio.create_task(live.run(steps))
        board = target_board(ems)
        for k in range(steps):
            await wait_for(_done(live, task, k), 30.0)
            on_step(board, start, k, clock.now())
        result = await task
        await asyncio.sleep(0.05)
    finally:
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if driver is not None:
            driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await driver
        for agent in started:
            await agent.stop()
        await ems.stop()
    return Run(start, bats, live, result, samples)


def _assert_under(
    readings: Sequence[float], means: Sequence[float], limit_kw: float, excess_kw: float
) -> None:
    """The meter held under ``limit_kw`` (kW): its ``readings`` and step ``means``. On a
    quiet machine every reading is at or under it; under load a step's plan made on
    battery telemetry that lags the meter can undo the guard's discharge until the guard
    answers the next sample: at most one reading in ten over, none above the load without
    the limit (``excess_kw`` over it), and each step mean at most one meter sample of that
    excess over."""
    assert readings, "no meter sample in the window"
    over = [r for r in readings if r > limit_kw + 1e-6]
    assert len(over) <= len(readings) // 10, (over, readings)
    assert max(readings) <= limit_kw + excess_kw + 1e-6, readings
    slack = excess_kw * METER_PERIOD_S / DT
    assert all(m <= limit_kw + slack + 1e-6 for m in means), (list(means), limit_kw)


# -- a capacity window ------------------------------------------------------------------
WINDOW = (4, 9)  # the capacity window's steps: [4 DT, 9 DT) after step 0
CUT_KW = 3.0  # the window's limit below the feeder's load (kW)


@pytest.mark.timeout(60)
async def test_a_capacity_window_keeps_the_meter_under_its_limit_then_the_load_returns(
    broker_url: str,
) -> None:
    scenario = _scenario()
    base = _track_limit_kw(scenario) - 1.5  # under the guard's own limit: nothing to do
    window_kw = base - CUT_KW

    def on_step(board: TargetBoard, start: float, k: int, now: float) -> None:
        if k == 1:  # an event arrives while the controller runs
            board.put_window(
                "vtn/event-1", start + WINDOW[0] * DT, start + WINDOW[1] * DT, limit_kw=window_kw
            )
            board.put_window("vtn/event-2", start + 11 * DT, start + 13 * DT, target_kw=1.0)

    steps = 15
    run = await run_live(broker_url, base, steps, on_step)
    live, result = run.live, run.result
    means = live.feeder.step_means_kw(steps)
    print(
        f"capacity window {window_kw:.2f} kW (feeder {base:.2f} kW): step means "
        f"{np.round(means, 2).tolist()}"
    )
    # before the window: nothing sent but the first plan, the feeder at its load (a
    # sample is binned as the mean over the window before it: the first one showing the
    # discharge also lowers the end of step 3)
    assert {m.batteries_kw for m in run.samples if m.since < WINDOW[0] * DT} == {0}
    assert means[: WINDOW[0] - 1] == pytest.approx([base] * (WINDOW[0] - 1), abs=1e-6)
    # in the window: under the limit at once (the window was on the board ahead: the
    # step's own plan correction discharges from its first second)
    # the meter's samples in the window, and the step means of its steps but the last
    # (the first sample after it is binned back into that step)
    inside = [m.reading_kw for m in run.samples if WINDOW[0] * DT < m.since <= WINDOW[1] * DT]
    _assert_under(inside, means[WINDOW[0] : WINDOW[1] - 1].tolist(), window_kw, CUT_KW)
    # the guard's limit in the window is the event's; after it, the objective's again
    assert live.feeder.limit_kw(WINDOW[0]) == pytest.approx(window_kw)
    assert live.feeder.limit_kw(WINDOW[1]) == pytest.approx(_track_limit_kw(scenario))
    # after it: the load comes back (the batteries are given back to the app's 0 kW)
    assert means[-2:] == pytest.approx([base, base], abs=1e-6)
    assert [m.batteries_kw for m in run.samples if m.since >= (steps - 2) * DT] == [0] * sum(
        m.since >= (steps - 2) * DT for m in run.samples
    )
    # the app's target: the limit's min with the scenario's, and the target window's value
    targets = [h.target_kw for h in live.history]
    assert targets[WINDOW[0] : WINDOW[1]] == [min(TARGET_KW, window_kw)] * (WINDOW[1] - WINDOW[0])
    assert targets[11:13] == [1.0, 1.0] and targets[10] == targets[13] == TARGET_KW
    assert result.extra["calls_failed"] == 0


@pytest.mark.timeout(60)
async def test_an_event_starting_mid_step_is_held_by_the_feeder_guard_before_the_next_step(
    broker_url: str,
) -> None:
    """A capacity window put during step 2, from 20 clock s on: the feeder watch reads the
    board again (its version changed) at the next meter sample and the guard discharges
    at once, before the control loop's next step."""
    scenario = _scenario()
    base = _track_limit_kw(scenario) - 1.5
    window_kw = base - CUT_KW
    put: list[float] = []

    def on_step(board: TargetBoard, start: float, k: int, now: float) -> None:
        if k == 3:
            put.append(now)
            board.put_window("vtn/now", now + 20.0, now + 20.0 + 3 * DT, limit_kw=window_kw)

    run = await run_live(broker_url, base, 8, on_step)
    start = run.start
    (t_put,) = put
    assert start + 2 * DT <= t_put < start + 2.5 * DT  # in step 2, after its dispatch
    first = min(t for b in run.batteries for t, events in b.received[1:])
    assert t_put < first < start + 3 * DT  # the guard's correction, not the next step's
    assert run.result.extra["guard_actions"] >= 1
    # held from a meter period after the guard's first correction (both batteries'
    # calls arrived) to the window's end
    since_first, end = first - start + METER_PERIOD_S, t_put - start + 20.0 + 3 * DT
    inside = [m.reading_kw for m in run.samples if since_first <= m.since < end]
    _assert_under(inside, [], window_kw, CUT_KW)
    print(f"event put at {t_put - start:.0f} s, first correction {first - t_put:.1f} s later")


# -- a held battery -----------------------------------------------------------------------
HOLD = (2, 9)  # bat-0 held over steps [2, 9)


@pytest.mark.timeout(60)
async def test_a_held_battery_gets_nothing_until_the_re_plan_after_its_hold(
    broker_url: str,
) -> None:
    scenario = _scenario()
    base = _track_limit_kw(scenario) - 1.5
    window_kw = base - 2.5  # the free 3-kW battery can hold it alone

    def on_step(board: TargetBoard, start: float, k: int, now: float) -> None:
        if k == 1:
            board.hold("vtn/event-1", ["bat-0"], start + HOLD[0] * DT, start + HOLD[1] * DT)
            board.put_window("vtn/event-2", start + 3 * DT, start + 8 * DT, limit_kw=window_kw)

    steps = 17
    run = await run_live(broker_url, base, steps, on_step)
    start, live = run.start, run.live
    held, free = run.batteries
    # bat-0: its first plan, then nothing from the hold's start to the re-plan at step 15
    # (the hold ended at step 9: it rejoins the fleet at the next re-plan), then its plan
    assert held.received[0][0] < start + HOLD[0] * DT
    during = [t for t, _ in held.received if start + HOLD[0] * DT <= t < start + 15 * DT]
    assert during == []
    after = [events for t, events in held.received if t >= start + 15 * DT]
    assert after and after[0] == [("idle", 0, 900)] * 4
    # the live fleet had only bat-1 through the hold; both again after the re-plan
    fleets = {m.fleet for m in run.samples if (HOLD[0] + 1) * DT <= m.since < 15 * DT}
    assert fleets == {("bat-1",)}
    assert live.fleet.battery_ids == ["bat-0", "bat-1"]
    # bat-1 alone held the window's limit
    assert any(
        any(e[0] == "discharge" for e in events)
        for t, events in free.received
        if start + 3 * DT <= t < start + 8 * DT
    )
    means = live.feeder.step_means_kw(steps)
    inside = [m.reading_kw for m in run.samples if 4 * DT < m.since <= 8 * DT]
    _assert_under(inside, means[4:8].tolist(), window_kw, base - window_kw)
    assert run.result.extra["calls_failed"] == 0


# -- what the API shows -----------------------------------------------------------------
@pytest.mark.timeout(60)
async def test_get_control_target_lists_the_windows_and_holds(broker_url: str) -> None:
    stack = await start_stack(broker_url, None)
    try:
        board = target_board(stack.ems)
        now = stack.ems.clock.now()
        board.put_window("vtn/cap", now - 10.0, now + 600.0, limit_kw=40.0)
        board.put_window("vtn/set", now + 60.0, now + 120.0, target_kw=12.5)
        board.put_window("vtn/over", now - 100.0, now - 50.0, limit_kw=1.0)  # ended
        board.hold("vtn/set", ["wh-9", "bat-1"], now + 60.0, now + 120.0)
        async with stack.client("viewer") as viewer:
            body = (await viewer.get("/control/target")).json()
    finally:
        await stop_stack(stack)
    assert body["points"] == [] and body["now_kw"] is None  # the points are unchanged
    assert body["limit_now_kw"] == 40.0
    assert body["windows"] == [
        {"key": "vtn/cap", "start_s": now - 10.0, "end_s": now + 600.0, "limit_kw": 40.0,
         "target_kw": None},
        {"key": "vtn/set", "start_s": now + 60.0, "end_s": now + 120.0, "limit_kw": None,
         "target_kw": 12.5},
    ]  # fmt: skip
    assert body["holds"] == [
        {"key": "vtn/set", "agents": ["bat-1", "wh-9"], "start_s": now + 60.0, "end_s": now + 120.0}
    ]
    assert body["version"] == 4

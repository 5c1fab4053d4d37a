"""The feeder watch of live control over the real bus: the feeder guard, the Load Up
budget and the meter's step means (``control/_live_feeder.py``, ``control/_live_guard.py``).

Real Mosquitto, a real EMS and in-process agents (batteries, heaters, a feeder meter) on a
scaled clock, with a scripted control app whose decisions are known. The meter reads a
scripted base load plus what the batteries run (from the ``EnergyMethod`` plans they
received), so the guard's corrections show on the meter as they would on a feeder.
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

from sef.agents import Agent, method
from sef.clock import Clock, ScaledClock
from sef.control._live_guard import guard_limit_kw
from sef.control.controllers.base import WH_KEEP, WH_LOAD_UP, Decision, Forecast, Observation
from sef.control.live import LiveControl
from sef.control.scenario import Scenario, scenario_from_dict
from sef.control.simulator import SimResult
from sef.ems import EMS
from sef.interface import DEMO_INTERFACE, Variant
from support import wait_for

START = 1_800_000_000.0  # clock time when a test's clock starts (Unix s; only differences matter)
DT = 60.0  # step length (s)
TARGET_KW = 2.0  # below the forecast base peak: the limit for `track` is the base peak
Event = tuple[str, int, int]


def _scenario() -> Scenario:
    raw: dict[str, Any] = {
        "name": "live-feeder",
        "dt_s": 60,
        "duration_h": 2,
        "seed": 7,
        "base_load": {"source": "bdew_h0", "homes": 10},
        "target": {"kind": "flat", "value_kw": TARGET_KW},
        "batteries": {"count": 1},  # the scenario's fleet is not used in live mode
        "water_heaters": {"count": 1},
        "control": {"interval_min": 15, "horizon_h": 2},
    }
    return scenario_from_dict(raw)


def _limit_kw(scenario: Scenario) -> float:
    """The feeder limit (kW) the guard should hold for ``track``: max(target, base peak)."""
    limit = guard_limit_kw("track", TARGET_KW, float(np.max(scenario.base_expected_kw)))
    assert limit is not None
    return limit


def _signed_kw(event: Event) -> int:
    """An EnergyMethod event's battery power (kW, + = charge)."""
    return {"charge": 1, "discharge": -1}.get(event[0], 0) * event[1]


class Device(Agent):
    """A battery, heater or meter: publishes a nameplate and telemetry and records every
    EnergyMethod call with the clock time (s) it arrived."""

    interfaces = (DEMO_INTERFACE,)

    def __init__(self, agent_id: str, broker: str, clock: Clock, plate: dict[str, Variant]) -> None:
        super().__init__(agent_id, broker, clock=clock, keepalive_s=2)
        iface = self.interface(DEMO_INTERFACE)
        if "Nameplate" not in iface.properties:  # until the shipped interface has it
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
        """The battery power (kW, + = charge) its last plan received by ``t_s`` runs then."""
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


def _plate(device_type: str, **numbers: float) -> dict[str, Variant]:
    return {"DeviceType": Variant("s", device_type)} | {
        key: Variant("d", value) for key, value in numbers.items()
    }


def battery(agent_id: str, broker: str, clock: Clock, kw: float, kwh: float) -> Device:
    """A battery of ``kw`` (kW, both ways) and ``kwh`` (kWh), half full."""
    plate = _plate(
        "battery",
        Charge_Rate_kW=kw,
        Discharge_Rate_kW=kw,
        Capacity_kWh=kwh,
        SOC_Min_pct=10.0,
        SOC_Max_pct=90.0,
        Charge_Efficiency_pct=96.0,
        Discharge_Efficiency_pct=96.0,
    )
    device = Device(agent_id, broker, clock, plate)
    device.telemetry["Sys_Energy_kWh"] = Variant("d", kwh / 2)
    device.telemetry["State"] = Variant("s", "CONNECTED")
    return device


def heater(agent_id: str, broker: str, clock: Clock) -> Device:
    """A 190-L resistance water heater with a 4.5-kW element, not heating."""
    plate = _plate(
        "water_heater",
        Volume_L=190.0,
        Element_kW=4.5,
        Compressor_kW=0.0,
        Setpoint_C=51.0,
        Deadband_K=5.0,
    )
    plate["Heater_Type"] = Variant("s", "resistance")
    device = Device(agent_id, broker, clock, plate)
    device.telemetry |= {"Power_W": Variant("d", 0.0), "Energy_Stored_Wh": Variant("d", 1500.0)}
    return device


class Scripted:
    """A control app whose decisions are known: every battery idle (0 kW; before step
    ``battery_until``: ``battery_kw``, kW per battery); at
    ``load_up_step`` every heater is sent a Load Up, else nothing. Its decision at
    ``slow_step`` takes ``slow_s`` real s (a long solve); ``solved_at``: the clock time (s)
    each decision was made."""

    name = "scripted"
    perfect_foresight = False

    def __init__(
        self,
        load_up_step: int | None = None,
        slow_step: int | None = None,
        slow_s: float = 0.0,
        battery_kw: tuple[int, ...] = (),
        battery_until: int = 0,
    ) -> None:
        self.load_up_step = load_up_step
        self.battery_kw = battery_kw
        self.battery_until = battery_until
        self.slow_step = slow_step
        self.slow_s = slow_s
        self.clock: Clock | None = None
        self.solved_at: dict[int, float] = {}

    def reset(self, scenario: Scenario) -> None:
        pass

    def forecast_steps(self, step: int) -> int:
        return 15

    def decide(self, obs: Observation, forecast: Forecast) -> Decision:
        if obs.step == self.slow_step:
            time.sleep(self.slow_s)  # in the control loop's worker thread, as a solve
        rates = np.zeros(obs.battery_energy_kwh.size, dtype=np.int64)
        if obs.step < self.battery_until:
            rates[:] = self.battery_kw
        code = WH_LOAD_UP if obs.step == self.load_up_step else WH_KEEP
        cmd = np.full(obs.wh_energy_kwh.size, code, dtype=np.int64)
        if self.clock is not None:
            self.solved_at[obs.step] = self.clock.now()
        return Decision(rates, cmd, round(obs.dt_s), 1800)


class MeterSample(NamedTuple):
    """A meter sample: clock s since step 0, the scripted base load and the batteries'
    power (kW) it read, and the guard's extra discharge (kW) when it was taken."""

    since: float
    base_kw: float
    batteries_kw: int
    guard_extra_kw: float


@dataclass
class Run:
    """A finished live run: its devices, the control, its result and the meter's samples."""

    start: float
    batteries: list[Device]
    heaters: list[Device]
    live: LiveControl
    result: SimResult
    samples: list[MeterSample] = field(default_factory=list)


async def run_live(
    broker_url: str,
    base_kw: Callable[[float], float],
    *,
    steps: int,
    speed: float,
    meter_period_s: float,
    batteries: Sequence[tuple[float, float]] = ((5.0, 13.5), (3.0, 10.0)),
    heaters: int = 0,
    app: Scripted | None = None,
    feeder_guard: bool = True,
    late_battery: tuple[float, float] | None = None,
    late_step: int = 0,
) -> Run:
    """Run ``steps`` live steps against a meter reading ``base_kw(clock s since step 0)``
    plus the batteries' power (kW), sampled every ``meter_period_s`` clock s.

    ``batteries``: (rating kW, capacity kWh) each; ``speed``: clock s per real s;
    ``late_battery`` (the last of ``Run.batteries``) comes online after step ``late_step``.
    """
    scenario = _scenario()
    # cached on the scenario: computed before step 0 is set, not in the run's first 0.3 s
    await asyncio.to_thread(scenario.wh_uncontrolled_means)
    clock = ScaledClock(speed=speed, sim_start=START, real_anchor=time.time())
    ems = EMS(broker_url, "ems-live-feeder", clock=clock, keepalive_s=2)
    meter = Device("feeder-meter", broker_url, clock, {"DeviceType": Variant("s", "meter")})
    bats = [battery(f"bat-{i}", broker_url, clock, *plate) for i, plate in enumerate(batteries)]
    whs = [heater(f"wh-{j}", broker_url, clock) for j in range(heaters)]
    late = None if late_battery is None else battery("bat-late", broker_url, clock, *late_battery)
    samples: list[MeterSample] = []
    start = float("inf")
    running: list[LiveControl] = []

    def sample() -> None:
        now = clock.now()
        since = now - start
        devices = sum(b.rate_at(now) for b in (*bats, *([late] if late else [])))
        base = base_kw(since)
        meter.publish(Net_Power_kW=Variant("d", base + devices))
        extra = running[0].feeder.guard.extra_kw if running else 0.0
        samples.append(MeterSample(since, base, devices, extra))

    async def drive_meter() -> None:
        while True:
            sample()
            await asyncio.sleep(meter_period_s / speed)

    started: list[Device] = []
    driver: asyncio.Task[None] | None = None
    running_task: asyncio.Task[SimResult] | None = None
    await ems.start()
    try:
        for agent in (meter, *bats, *whs):
            await agent.start()
            started.append(agent)
        start = clock.now() + 0.3 * speed  # step 0 in 0.3 real s
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
        app = app or Scripted()
        app.clock = clock
        live = LiveControl(
            ems,
            scenario,
            app,
            start_s=start,
            meter_tau_s=0.0,
            feeder_guard=feeder_guard,
        )
        running.append(live)
        running_task = asyncio.create_task(live.run(steps))
        if late is not None:
            await wait_for(lambda: live.steps_done > late_step or running_task.done(), 30.0)
            await late.start()
            started.append(late)
        result = await running_task
        await asyncio.sleep(0.05)  # the last calls arrive
    finally:
        if running_task is not None and not running_task.done():
            running_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running_task
        if driver is not None:
            driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await driver
        for agent in started:
            await agent.stop()
        await ems.stop()
    return Run(start, [*bats, *([late] if late else [])], whs, live, result, samples)


# -- the feeder guard -------------------------------------------------------------------
EXCESS_KW = 3.4  # the meter's reading above the limit in the peak (kW)
PEAK = (3 * DT, 6 * DT)  # the base load's peak: steps 3-5 (clock s since step 0)
GUARD_STEPS = 14


def _peak_script(limit: float) -> Callable[[float], float]:
    """The base load: 2 kW under the limit, EXCESS_KW over it in PEAK, then 0.5 kW
    under it (inside the guard's 1-kW band: the release depends on the batteries)."""

    def base(since: float) -> float:
        if since < PEAK[0]:
            return limit - 2.0
        if since < PEAK[1]:
            return limit + EXCESS_KW
        return limit - 0.5

    return base


def _plans(device: Device) -> list[tuple[float, list[Event]]]:
    """The calls after the first (the plan at step 0)."""
    assert device.received, f"{device.agent_id} got no plan"
    first = device.received[0][1]
    assert first == [("idle", 0, 900)] * 4, first  # the app's 0 kW for the next hour
    return device.received[1:]


@pytest.mark.timeout(60)
async def test_guard_discharges_the_excess_at_once_and_gives_it_back_gradually(
    broker_url: str,
) -> None:
    limit = _limit_kw(_scenario())
    assert limit > TARGET_KW  # the forecast base peak is the limit, not the target
    run = await run_live(
        broker_url, _peak_script(limit), steps=GUARD_STEPS, speed=240.0, meter_period_s=12.0
    )
    live, start = run.live, run.start
    assert live.feeder.limit_kw(3) == pytest.approx(limit)
    corrections = {b.agent_id: _plans(b) for b in run.batteries}
    # nothing but the plan before the peak
    for calls in corrections.values():
        assert all(t >= start + PEAK[0] for t, _ in calls), calls

    # within a few meter samples of the peak: a discharge of the excess, in whole kW, split
    # over both batteries (5 and 3 kW), lasting the rest of the 15-min control interval
    first = [calls[0] for calls in corrections.values()]
    for t, events in first:
        assert t < start + PEAK[0] + 1.5 * DT, "the guard took more than a few samples"
        kind, kw, duration = events[0]
        assert kind == "discharge" and kw >= 1
        assert duration % DT == 0
        step_start = start + 15 * DT - duration  # the step the correction was made in
        assert step_start <= t < step_start + 2 * DT  # + latency
        # the later intervals: the app's idle less the guard's extra (it holds past the
        # interval end should no re-plan come: the batteries run them on their own clock)
        assert [e[2] for e in events[1:]] == [900] * 3
        assert all(e[0] in ("discharge", "idle") for e in events[1:])
    assert sum(events[0][1] for _, events in first) == int(np.ceil(EXCESS_KW))
    later = [
        sum(events[j][1] for _, events in first if events[j][0] == "discharge") for j in (1, 2, 3)
    ]
    assert all(0 < kw <= int(np.ceil(EXCESS_KW)) for kw in later), later
    for (_, events), rating_kw in zip(first, (5, 3), strict=True):
        assert events[0][1] <= rating_kw

    # held through the peak: in its last step the batteries covered the excess (-4 kW;
    # more if a sample came before the correction showed on the meter: the guard then
    # adds the excess again and gives it back later)
    late_peak = [m.batteries_kw for m in run.samples if PEAK[1] - DT <= m.since < PEAK[1]]
    assert late_peak and max(late_peak) <= -int(np.ceil(EXCESS_KW)), late_peak

    # after the peak: given back gradually (each level discharges less, with at least one
    # between -4 kW and the app's 0 kW), down to the app's own rate (at 240x on a quiet
    # machine: -4, -2, -1, 0 kW)
    after = [m.batteries_kw for m in run.samples if m.since >= PEAK[1]]
    assert after == sorted(after), after  # never more discharge than before
    assert after[-1] == 0
    assert any(-int(np.ceil(EXCESS_KW)) < kw < 0 for kw in after), after
    for calls in corrections.values():
        kind, kw, _ = calls[-1][1][0]
        assert (kind, kw) == ("idle", 0)
        release = [_signed_kw(events[0]) for t, events in calls if t >= start + PEAK[1]]
        assert release == sorted(release)
    extra = run.result.extra
    # what the feeder drew: the peak's steps held under the limit once the guard acted
    means = live.feeder.step_means_kw(GUARD_STEPS)
    assert means[5] <= limit
    assert extra["meter_peak_1min_kw"] < limit + EXCESS_KW
    assert extra["guard_actions"] >= 3
    assert extra["corrections_sent"] >= 3
    assert extra["calls_failed"] == 0


@pytest.mark.timeout(60)
async def test_without_the_guard_the_same_meter_gets_no_correction(broker_url: str) -> None:
    limit = _limit_kw(_scenario())
    run = await run_live(
        broker_url,
        _peak_script(limit),
        steps=8,
        speed=240.0,
        meter_period_s=12.0,
        feeder_guard=False,
    )
    for device in run.batteries:
        assert _plans(device) == []  # the plan only: no correction
    assert {m.batteries_kw for m in run.samples} == {0}
    extra = run.result.extra
    assert extra["guard_actions"] == 0 and extra["corrections_sent"] == 0
    # the peak was there: the meter's means of steps 3 and 4 are the excess over the limit
    means = run.live.feeder.step_means_kw(8)
    assert means[3:5] == pytest.approx([limit + EXCESS_KW] * 2, abs=1e-6)
    assert extra["meter_peak_1min_kw"] == pytest.approx(limit + EXCESS_KW, abs=1e-6)


@pytest.mark.timeout(60)
async def test_guard_acts_while_the_app_solves(broker_url: str) -> None:
    """The app's decision at step 2 takes 3 steps (0.75 real s at 240x); the peak starts at
    step 3: the batteries get the guard's discharge before the app has decided."""
    limit = _limit_kw(_scenario())
    app = Scripted(slow_step=2, slow_s=0.75)
    run = await run_live(
        broker_url, _peak_script(limit), steps=8, speed=240.0, meter_period_s=12.0, app=app
    )
    start = run.start
    solved = app.solved_at[2]
    assert solved > start + PEAK[0] + DT  # the solve ran over the peak's first step
    first = [_plans(b)[0] for b in run.batteries]
    for t, events in first:
        assert start + PEAK[0] <= t < solved
        assert events[0][0] == "discharge"
        assert t + events[0][2] >= start + 15 * DT  # at least to the interval's end
    assert sum(events[0][1] for _, events in first) == int(np.ceil(EXCESS_KW))


@pytest.mark.timeout(60)
async def test_a_correction_during_a_solve_over_the_interval_end_holds(broker_url: str) -> None:
    """The app's decision at step 13 takes until step ~18 (1.4 real s at 240x), so the
    re-plan at step 15 is late; the peak starts at step 14.5: the guard's discharge must
    hold until the late re-plan (the running plan rolls on with the batteries' clock),
    not fall back to the old plan's next interval (idle) while the meter is over."""
    limit = _limit_kw(_scenario())
    app = Scripted(slow_step=13, slow_s=1.4)

    def base(since: float) -> float:
        return limit + (EXCESS_KW if since >= 14.5 * DT else -2.0)

    run = await run_live(broker_url, base, steps=20, speed=240.0, meter_period_s=12.0, app=app)
    start = run.start
    assert app.solved_at[13] > start + 16 * DT  # the re-plan at step 15 came late
    first = min(calls[0][0] for calls in (_plans(b) for b in run.batteries))
    assert first < start + 15.5 * DT
    held = [m.batteries_kw for m in run.samples if m.since > first - start + 1.0]
    assert set(held) == {-int(np.ceil(EXCESS_KW))}, held


@pytest.mark.timeout(60)
async def test_guard_memory_stays_non_negative_when_the_app_asks_beyond_the_batteries(
    broker_url: str,
) -> None:
    """The app asks 10 kW of discharge from 5 + 3 kW of batteries while the meter is still
    over the limit (steps 0-4), then 0 kW with the meter 3.4 kW over: the guard's extra
    discharge (>= 0 by its contract) must answer that excess at once (-4 kW)."""
    limit = _limit_kw(_scenario())
    app = Scripted(battery_kw=(-6, -4), battery_until=5)

    def base(since: float) -> float:
        return limit + (EXCESS_KW + 8.0 if since < 5 * DT else EXCESS_KW)

    run = await run_live(broker_url, base, steps=9, speed=240.0, meter_period_s=12.0, app=app)
    assert min(m.guard_extra_kw for m in run.samples) >= 0.0
    after = [m.batteries_kw for m in run.samples if m.since >= 5 * DT + DT / 2]
    assert not any(-int(np.ceil(EXCESS_KW)) < kw < 0 for kw in after), after
    assert after[-1] == -int(np.ceil(EXCESS_KW))


@pytest.mark.timeout(60)
async def test_guard_adds_nothing_while_there_is_no_battery(broker_url: str) -> None:
    """The feeder is 3.4 kW over the limit for 10 steps with no battery online (a heater
    only), then 0.5 kW under it; a battery comes online at step 2 and joins at the re-plan
    (step 15): its first plan is the app's 0 kW, not a discharge the guard piled up while
    there was nothing to discharge ("the extra is bounded by what the batteries can still
    discharge")."""
    limit = _limit_kw(_scenario())

    def base(since: float) -> float:
        return limit + (EXCESS_KW if since < 10 * DT else -0.5)

    run = await run_live(
        broker_url,
        base,
        steps=17,
        speed=240.0,
        meter_period_s=12.0,
        batteries=(),
        heaters=1,
        late_battery=(5.0, 13.5),
        late_step=2,
    )
    (late,) = run.batteries
    assert run.live.fleet.battery_ids == ["bat-late"]
    before = [m.guard_extra_kw for m in run.samples if m.since < 15 * DT]
    assert max(before) == 0.0
    t, events = late.received[0]
    assert t >= run.start + 15 * DT
    assert events[0] == ("idle", 0, 900)


# -- the Load Up budget -----------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("room_kw", "guard", "sent", "held"),
    [
        (10.0, True, 2, 1),  # 2 x 4.5 kW fit under the limit, the third would pass it
        (20.0, True, 3, 0),  # room for all three
        (10.0, False, 3, 0),  # no guard, no budget
    ],
)
async def test_load_ups_beyond_the_feeder_limit_are_held_back(
    broker_url: str, room_kw: float, guard: bool, sent: int, held: int
) -> None:
    limit = _limit_kw(_scenario())
    run = await run_live(
        broker_url,
        lambda since: limit - room_kw,
        steps=4,
        speed=240.0,
        meter_period_s=12.0,
        batteries=((5.0, 13.5),),
        heaters=3,
        app=Scripted(load_up_step=2),
        feeder_guard=guard,
    )
    start = run.start
    got = [h for h in run.heaters if h.received]
    assert [h.agent_id for h in got] == [f"wh-{j}" for j in range(sent)]
    for rank, device in enumerate(got):
        (t, events), *more = device.received
        assert more == []
        assert start + 2 * DT <= t < start + 4 * DT  # sent at step 2 (+ latency at 240x)
        delay = round(rank * 10.0 / sent)  # starts staggered over 10 s
        assert events == ([("endshed", 0, delay)] if delay else []) + [("charge", 0, 1800)]
    assert run.result.extra["load_ups_held"] == held
    assert run.live.feeder.load_ups_held == held


# -- what the feeder drew ---------------------------------------------------------------
@pytest.mark.timeout(60)
async def test_meter_figures_are_the_step_means_of_the_readings(broker_url: str) -> None:
    scenario = _scenario()
    steps = 8
    allowed = float(np.max(scenario.base_kw[:steps])) + 4.5  # base peak + one element
    low, high = allowed - 5.0, allowed + 5.0

    def base(since: float) -> float:  # high through steps 3 and 4
        return high if 3 * DT <= since < 5 * DT else low

    run = await run_live(
        broker_url,
        base,
        steps=steps,
        speed=120.0,
        meter_period_s=6.0,
        batteries=((5.0, 13.5),),
        heaters=1,
        feeder_guard=False,
    )
    extra = run.result.extra
    assert extra["meter_allowed_kw"] == pytest.approx(allowed)
    # a sample is the mean over the window before it (here: the value at its end), so a
    # step is all `high` when its samples and the first after it are; the edges of the
    # high hour (steps 2 and 4) hold up to one sample window of the other level
    means = run.live.feeder.step_means_kw(steps)
    assert np.isfinite(means).all()
    assert means[[0, 1, 5, 6, 7]] == pytest.approx([low] * 5, abs=1e-6)
    assert means[3] == pytest.approx(high, abs=1e-6)
    assert low <= means[2] < allowed < means[4] <= high
    assert extra["meter_peak_1min_kw"] == pytest.approx(high, abs=1e-6)
    assert extra["meter_steps_over"] == 2
    assert extra["metered_steps"] >= steps

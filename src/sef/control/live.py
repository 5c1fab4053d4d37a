"""Live mode: a control app inside the EMS, driving whatever fleet is online over the bus.

The same :class:`~sef.control.controllers.base.ControlApp` that the fleet simulator runs
sees the same :class:`~sef.control.controllers.base.Observation`, built here from the
agents' last telemetry in the EMS registry. Time is the EMS clock (scaled in demos and
tests): step ``k`` starts at ``start + k·dt_s``.

The fleet is the registry's (:mod:`sef.control._live_fleet`): every online agent with a
``Nameplate``, read again at every re-plan (each control interval); when it changed, the
app is reset with the scenario rebuilt for the new fleet (same step index), so agents
that join or leave are used or dropped from that re-plan on. The scenario gives only
the base-load forecast, the target (unless the API set one: ``PUT /control/target``,
:mod:`sef.ems._target_board`) and the settings.

Demand-response events act through the same target board: a window's target replaces the
target over its span, a window's feeder limit caps it (the app's target is at most the
limit, and the feeder guard holds the limit on the meter whatever the objective), and the
agents an event holds leave the fleet at the next step of the hold and come back at the
next re-plan after it; nothing is sent to a held agent.

Commands are plans the devices run on their own clock (:mod:`sef.control._live_plans`):
each battery gets its next hour as 15-min ``EnergyMethod`` events at each re-plan
(corrections supersede it between re-plans), heaters get events with staggered starts.

What the EMS measures (the net load from the feeder meter, :mod:`sef.control._live_meter`;
battery power, stored energy, heater power, heat and DR mode from telemetry) and the
violations it counts are listed in ``docs/control.md``, "Live mode".
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from sef.control._live_board import LiveBoard
from sef.control._live_feeder import FeederWatch
from sef.control._live_fleet import (
    LiveFleet,
    battery_limits,
    discover_fleet,
    fleet_scenario,
    wait_for_fleet,
)
from sef.control._live_meter import MeteredBase
from sef.control._live_observe import LiveObservation
from sef.control._live_plans import BatteryPlans, planned_fleet_kw, stagger_heaters
from sef.control._live_record import record_step
from sef.control.allocation import decision_to_events
from sef.control.controllers.base import ControlApp, Decision, Observation
from sef.control.forecast import make_forecaster
from sef.control.scenario import WATER_KWH_PER_L_K, Scenario
from sef.control.simulator import SERIES, SimResult
from sef.ems import EMS
from sef.interface import DEMO_INTERFACE
from sef.tasks import TaskSet

__all__ = ["LiveControl", "LiveFleet", "LiveStep", "next_midnight", "wait_for_fleet"]

log = logging.getLogger("sef.control.live")

STORAGE_REFERENCE_C = 43.33
"""CTA-2045 energy-storage reference temperature (°C, 110 °F)."""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass
class LiveStep:
    """What happened in one live step (for displays): kW, calls sent, decide time (s)."""

    step: int
    net_kw: float
    target_kw: float
    base_kw: float
    calls: int
    decide_s: float


@dataclass
class LiveControl(LiveObservation, LiveBoard):
    """Runs ``app`` against the fleet online in ``ems``'s registry.

    Args:
        ems: a started EMS (its registry has the agents' nameplates and telemetry).
        scenario: base-load forecast, target and settings (its fleet is not used).
        app: the control app.
        start_s: clock time of step 0 (Unix s); default: the next whole minute.
        plan_horizon_s: length of each battery plan (s; 1 h = four 15-min events).
        correction_kw: fleet battery power change (kW) that re-sends the batteries'
            plans between re-plans.
        stagger_s: spread of the start times of the heater events of one step (s). Kept
            well under a step: the controller counts on a step's commands for that step
            (spread over a whole 1-min step, the 3+3 test fleet tracked 10-60 % worse at
            360x).
        meter_aligned: read the meter as base load at its sample time (see
            :meth:`observe_step`); ``False``: its reading is the net load as it stands.
        meter_tau_s: time constant (s) of the filter on the metered base load: device
            telemetry lags the meter (a heater's power reaches the EMS through the UCM's
            CTA-2045 polls), so each switching leaves a short false step in reading −
            devices; 0: no filter.
        peak_guard_kw: the batteries are never sent less discharge than keeps the
            measured net within this many kW of max(target, measured base) (``cap``: at
            the cap); a little under one 4.5-kW heater element.
        feeder_guard: hold the feeder limit against every meter sample between steps and
            during solves, and hold back Load Ups the feeder has no room for
            (:mod:`sef.control._live_feeder`); needs a meter.
        guard_poll_s: how often the feeder watch looks for a new meter sample (real s).
    """

    ems: EMS
    scenario: Scenario
    app: ControlApp
    start_s: float | None = None
    plan_horizon_s: float = 3600.0
    correction_kw: float = 1.0
    stagger_s: float = 10.0
    meter_aligned: bool = True
    meter_tau_s: float = 900.0
    peak_guard_kw: float = 4.0
    feeder_guard: bool = True
    guard_poll_s: float = 0.005
    steps_done: int = 0
    calls_failed: int = 0
    calls_held: int = 0
    comfort_violations: int = 0
    soc_violations: int = 0
    throughput_kwh: float = 0.0
    fleet_changes: int = 0
    plans_sent: int = 0
    corrections_sent: int = 0
    metered_steps: int = 0
    decide_failures: int = 0
    fleet: LiveFleet = field(default_factory=LiveFleet)
    series: dict[str, FloatArray] = field(default_factory=dict)
    history: list[LiveStep] = field(default_factory=list)
    _sends: TaskSet = field(default_factory=lambda: TaskSet("live control"), init=False, repr=False)

    def __post_init__(self) -> None:
        sc = self.scenario
        self.current = sc  # the scenario rebuilt for the fleet online
        self.series = {name: np.full(sc.steps, np.nan) for name in SERIES}
        self._target_version = -1
        self._limit_version = -1
        self._limits = np.full(sc.steps, np.inf)  # the board's feeder limit per step (kW)
        self._plans = BatteryPlans(self.plan_horizon_s, self.correction_kw)
        self._metered = False
        # per device: (telemetry time, power kW) samples, to read the meter against
        self._meter = MeteredBase(self.meter_tau_s)
        self.steps_started = 0  # the step being run
        self.feeder = FeederWatch(self, self.feeder_guard)
        self._set_fleet_arrays()

    # -- fleet and target -----------------------------------------------------------
    def _set_fleet_arrays(self) -> None:
        hs = self.fleet.heaters
        volume = np.array([h.volume_l for h in hs], dtype=np.float64)
        inlet = np.array([h.inlet_c for h in hs], dtype=np.float64)
        # heat (kWh) between the inlet temperature and the CTA-2045 reference
        self._wh_offset_kwh = volume * WATER_KWH_PER_L_K * (STORAGE_REFERENCE_C - inlet)
        self._wh_capacity_kwh = volume * WATER_KWH_PER_L_K
        self._tank_c = np.full(len(hs), np.nan)  # measured top-of-tank °C, if reported
        self._capacity = self.fleet.capacity_kwh()
        self._soc_lo = np.array([b.soc_min for b in self.fleet.batteries], dtype=np.float64)
        self._soc_hi = np.array([b.soc_max for b in self.fleet.batteries], dtype=np.float64)

    def refresh_fleet(self, step: int) -> bool:
        """Read the fleet from the registry; on a change rebuild the scenario (the caller
        then resets the app with it; the step index is kept). Returns whether it changed."""
        held = self.held_agents()
        fleet = discover_fleet(self.ems.registry, self.scenario, held)
        if fleet == self.fleet:
            return False
        old = self.fleet
        self.fleet = fleet
        self._set_fleet_arrays()
        energy = self.observe(step, 0.0).battery_energy_kwh
        self.current = fleet_scenario(
            replace(self.scenario, target_kw=self.current.target_kw), fleet, energy
        )
        self._plans.plan = None
        self.fleet_changes += 1
        log.info(
            "live fleet at step %d: %d batteries %s, %d water heaters %s, meters %s "
            "(was %d batteries, %d water heaters; held by events: %s)",
            step,
            len(fleet.batteries),
            fleet.battery_ids,
            len(fleet.heaters),
            fleet.heater_ids,
            list(fleet.meters),
            len(old.batteries),
            len(old.heaters),
            sorted(held),
        )
        return True

    # -- running --------------------------------------------------------------------
    async def run(self, steps: int | None = None) -> SimResult:
        """Run ``steps`` steps (default: the whole scenario); return the recorded series.

        Calls still being sent when the run ends (or is cancelled) are cancelled.
        """
        try:
            return await self._run(steps)
        finally:
            await self._sends.close()

    async def _run(self, steps: int | None) -> SimResult:
        sc = self.scenario
        clock = self.ems.clock
        total = sc.steps if steps is None else min(steps, sc.steps)
        if self.start_s is None:
            self.start_s = (int(clock.now()) // 60 + 1) * 60.0
        m = sc.interval_steps
        forecaster = make_forecaster(sc, self.app.perfect_foresight)
        if sc.n_heaters and hasattr(sc, "wh_uncontrolled_means"):
            await asyncio.to_thread(sc.wh_uncontrolled_means)  # cached: fleet rebuilds reuse it
        started = time.perf_counter()
        decide_total = 0.0
        if self.refresh_fleet(0):  # the fleet and the app's first reset before step 0
            self._target_version = -1
            await asyncio.to_thread(self.app.reset, self.current)
        self._sends.spawn(self.feeder.run(self.guard_poll_s), name="feeder watch")
        for k in range(total):
            await clock.sleep(self.start_s + k * sc.dt_s - clock.now())
            self.steps_started = k
            replan = k % m == 0
            if (replan or self._member_held()) and self.refresh_fleet(k):
                self._target_version = -1
                # solver work runs in a thread: the EMS keeps taking telemetry meanwhile
                await asyncio.to_thread(self.app.reset, self.current)
            if self.refresh_target() or forecaster.sc is not self.current:
                forecaster.sc = self.current
            obs = self.observe_step(k)
            if k > 0:
                self._record(k - 1, obs)
            forecaster.update(obs)
            calls = 0
            if replan and k > 0:  # keep the running rates until the new plan is out
                for agent_id, seq in self._plans.hold(self.fleet, m * sc.dt_s, k):
                    self._call(agent_id, seq)
            if self.fleet.batteries or self.fleet.heaters:
                t0 = time.perf_counter()
                forecast = forecaster.forecast(k, self.app.forecast_steps(k))
                try:
                    decision = await asyncio.to_thread(self.app.decide, obs, forecast)
                except Exception:  # the devices keep their plans and the guard runs on
                    self.decide_failures += 1
                    log.exception("live control: the app failed at step %d", k)
                else:
                    calls = self._dispatch(k, obs, decision, replan)
                decide_total += time.perf_counter() - t0
            await asyncio.sleep(0)
            self.history.append(
                LiveStep(
                    k,
                    obs.net_kw,
                    float(self.current.target_kw[k]),
                    obs.base_kw if self._metered else float(sc.base_kw[k]),
                    calls,
                    decide_total,
                )
            )
            self.steps_done = k + 1
            self._publish_series(k)
        await clock.sleep(self.start_s + total * sc.dt_s - clock.now())
        self._record(total - 1, self.observe_step(total))
        trimmed = {name: values[:total] for name, values in self.series.items()}
        return SimResult(
            controller=f"{self.app.name}-live",
            scenario=sc.name,
            dt_s=sc.dt_s,
            series=trimmed,
            comfort_violations=self.comfort_violations,
            soc_violations=self.soc_violations,
            throughput_kwh=self.throughput_kwh,
            wall_s=time.perf_counter() - started,
            decide_s=decide_total,
            extra={
                "calls_failed": float(self.calls_failed),
                "calls_held": float(self.calls_held),
                "fleet_changes": float(self.fleet_changes),
                "plans_sent": float(self.plans_sent),
                "corrections_sent": float(self.corrections_sent),
                "metered_steps": float(self.metered_steps),
                "decide_failures": float(self.decide_failures),
                **self.feeder.figures(total),
            },
        )

    def _dispatch(self, k: int, obs: Observation, decision: Decision, replan: bool) -> int:
        """Send the batteries' plans (or corrections) and the staggered heater events."""
        sc, fleet = self.current, self.fleet
        calls: list[tuple[str, list[tuple[str, int, int]]]] = []
        if fleet.batteries:
            lo, hi = battery_limits(fleet, obs.battery_energy_kwh, sc.dt_s)
            wanted = min(int(np.sum(decision.battery_kw)), self._guard_kw(k, obs))
            self.feeder.wanted_kw = wanted
            rates = self.feeder.battery_rates(lo, hi)
            future = planned_fleet_kw(self.app, k) if replan else None
            plans = self._plans
            calls += plans.update(
                k,
                replan,
                rates,
                future,
                fleet,
                obs.battery_energy_kwh,
                sc.interval_steps,
                sc.dt_s,
                later_offset_kw=self.feeder.guard.extra_kw,
            )
            self.plans_sent, self.corrections_sent = plans.sent, plans.corrections
        heaters = decision_to_events(replace(decision, battery_kw=np.zeros(0, dtype=np.int64)))
        commands = self.feeder.budget_heaters(k, heaters.water_heaters)
        stagger = min(self.stagger_s, sc.dt_s)
        for j, seq in stagger_heaters(commands, obs.wh_mode, stagger).items():
            calls.append((fleet.heater_ids[j], seq))
        for agent_id, seq in calls:
            self._call(agent_id, seq)
        return len(calls)

    def _guard_kw(self, k: int, obs: Observation) -> int:
        """Peak guard: the largest fleet battery power (kW, + = charge) that keeps the
        measured net (base + heaters now + batteries) within ``peak_guard_kw`` of the
        larger of the target and the measured base (``cap``: within the cap). The MPC
        counts on its own estimate of the heaters' power, which at 720x is minutes ahead
        of what they draw (a shed takes effect through the CTA-2045 polls); the guard
        discharges the batteries against what is measured (the net the app sees). Using the
        raw meter reading instead (it sees a heater minutes before its telemetry does) was
        worse in the 720x demo: 20 meter samples over the limit instead of 9, RMSE 1.80 kW."""
        window = self.window_limit_kw(k)  # an event's feeder limit holds for any objective
        if self.current.objective == "floor" and window is None:
            return 1 << 30  # no upper limit
        unc = obs.net_kw - float(obs.battery_power_kw.sum())  # base + heaters, kW
        target = float(self.current.target_kw[k])
        level = target if self.current.objective == "cap" else target + self.peak_guard_kw
        level = max(level, unc - float(obs.wh_power_kw.sum()) + self.peak_guard_kw)
        if window is not None:
            level = window if self.current.objective == "floor" else min(level, window)
        return int(np.floor(level - unc + 1e-9))

    def running_fleet_kw(self, k: int) -> int | None:
        """The running plan's fleet battery power (kW) in step ``k``'s interval, rolled on
        by the clock (``None``: no plan yet)."""
        return self._plans.running_fleet_kw(k, self.current.interval_steps)

    def correct_batteries(self, k: int, rates: IntArray, energy_kwh: FloatArray) -> int:
        """Send the batteries ``rates`` (kW) for the rest of step ``k``'s interval as a
        correction of their running plan (the feeder guard's); returns the calls sent."""
        sc = self.current
        calls = self._plans.update(
            k,
            False,
            rates,
            None,
            self.fleet,
            energy_kwh,
            sc.interval_steps,
            sc.dt_s,
            later_offset_kw=self.feeder.guard.extra_kw,
        )
        self.plans_sent, self.corrections_sent = self._plans.sent, self._plans.corrections
        for agent_id, seq in calls:
            self._call(agent_id, seq)
        return len(calls)

    def _call(self, agent_id: str, events: list[tuple[str, int, int]]) -> None:
        if agent_id in self.held_agents():  # held since the fleet was read: the event's
            self.calls_held += 1
            log.debug("live control: %s is held by an event: nothing sent", agent_id)
            return

        async def send() -> None:
            try:
                await self.ems.call(
                    agent_id,
                    DEMO_INTERFACE,
                    "EnergyMethod",
                    [[list(e) for e in events]],
                    reply=False,
                )
            except Exception as exc:  # a refused or failed call must not stop the loop
                self.calls_failed += 1
                log.warning("live control: call to %s failed: %s", agent_id, exc)

        self._sends.spawn(send(), name=f"EnergyMethod to {agent_id}")

    def _record(self, k: int, end_obs: Observation) -> None:
        """Series of step ``k`` from the measurements at its end."""
        sc = self.current
        soc = end_obs.battery_energy_kwh / np.maximum(self._capacity, 1e-9)
        base = end_obs.base_kw if self._metered else float(sc.base_kw[k])
        soc_bad, comfort_bad, throughput = record_step(
            self.series,
            k,
            sc,
            end_obs,
            base,
            soc,
            (self._soc_lo, self._soc_hi),
            self._top_c(end_obs),
        )
        self.soc_violations += soc_bad
        self.comfort_violations += comfort_bad
        self.throughput_kwh += throughput

    def _top_c(self, obs: Observation) -> FloatArray:
        estimate = STORAGE_REFERENCE_C + (obs.wh_energy_kwh - self._wh_offset_kwh) / np.maximum(
            self._wh_capacity_kwh, 1e-9
        )
        return np.asarray(np.where(np.isfinite(self._tank_c), self._tank_c, estimate))

    def _publish_series(self, k: int) -> None:
        """Keep the EMS's ``control_series`` (served to the dashboard) up to date."""
        assert self.start_s is not None
        dt = self.scenario.dt_s
        done = [h for h in self.history if h.step <= k]
        self.ems.control_series = {
            "t": [self.start_s + h.step * dt for h in done],
            "net_kw": [round(h.net_kw, 3) for h in done],
            "target_kw": [round(h.target_kw, 3) for h in done],
            "base_kw": [round(h.base_kw, 3) for h in done],
        }


def next_midnight(now_s: float) -> float:
    """The next 00:00 UTC after ``now_s`` (Unix s): where a day-long scenario starts."""
    return (int(now_s) // 86400 + 1) * 86400.0

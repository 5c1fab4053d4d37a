"""Live mode: a control app inside the EMS, driving real agents over the bus.

The same :class:`~sef.control.controllers.base.ControlApp` that the fleet simulator runs
sees the same :class:`~sef.control.controllers.base.Observation`, built here from the
agents' last telemetry in the EMS registry, and its decisions go out as
``EnergyMethod`` calls. Time is the EMS clock (scaled in demos and tests): step ``k``
starts at ``start + k·dt_s``.

What the EMS measures, per step (documented approximations):

* base load: the scenario's feeder load for the step (a stand-in for the feeder meter);
* battery AC power: the BIS's ``Setpoint_kW`` while the battery is ``CONNECTED`` (the
  battery follows it), else its measured ``Sys_Power_kW``; stored energy
  ``Sys_Energy_kWh``;
* water-heater power ``Power_W``; stored heat above the inlet temperature: the
  CTA-2045 "present energy storage" (heat above 43.33 °C, ``Energy_Stored_Wh``) plus the
  tank's heat capacity × (43.33 °C − inlet). The estimate reads high when the tank has
  fallen below 43.33 °C after a large draw (the device reports 0 there);
* heater DR mode from the UCM's running event (``shed`` 1, ``charge`` = Load Up 2).

Violations in live mode are counted from telemetry: a battery outside its SOC window
(± 0.1 %), a heater whose reported tank temperature (``Tank_Temp_C``, polled by the UCM;
else the mean estimated from stored heat) is below the comfort limit.

Net load = base + batteries + heaters, the quantity the control app steers to target.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from sef.control.allocation import DeviceEvents, decision_to_events
from sef.control.controllers.base import ControlApp, Observation
from sef.control.forecast import make_forecaster
from sef.control.scenario import WATER_KWH_PER_L_K, Scenario
from sef.control.simulator import SERIES, SimResult
from sef.ems import EMS
from sef.interface import DEMO_INTERFACE
from sef.tasks import TaskSet

__all__ = ["LiveControl", "LiveStep", "fleet_from_groups", "next_midnight"]

log = logging.getLogger("sef.control.live")

STORAGE_REFERENCE_C = 43.33
"""CTA-2045 energy-storage reference temperature (°C, 110 °F)."""

FloatArray = npt.NDArray[np.float64]


def _plain(telemetry: Any) -> dict[str, Any]:
    """``a{sv}`` JSON mapping → plain values."""
    if not isinstance(telemetry, dict):
        return {}
    return {k: v[1] if isinstance(v, list) and len(v) == 2 else v for k, v in telemetry.items()}


@dataclass
class LiveStep:
    """What happened in one live step (for displays)."""

    step: int
    net_kw: float
    target_kw: float
    base_kw: float
    calls: int
    decide_s: float


@dataclass
class LiveControl:
    """Runs ``app`` on ``scenario`` against the agents ``battery_ids`` and ``heater_ids``.

    Args:
        ems: a started EMS (its registry has the agents' telemetry).
        scenario: the scenario (base load, target, fleet parameters).
        app: the control app.
        battery_ids: agent ids of the scenario's batteries, in order.
        heater_ids: agent ids of its water heaters, in order.
        start_s: clock time of step 0 (Unix s); default: the next whole minute.
    """

    ems: EMS
    scenario: Scenario
    app: ControlApp
    battery_ids: list[str]
    heater_ids: list[str]
    start_s: float | None = None
    steps_done: int = 0
    calls_failed: int = 0
    comfort_violations: int = 0
    soc_violations: int = 0
    throughput_kwh: float = 0.0
    series: dict[str, FloatArray] = field(default_factory=dict)
    history: list[LiveStep] = field(default_factory=list)
    _sends: TaskSet = field(default_factory=lambda: TaskSet("live control"), init=False, repr=False)

    def __post_init__(self) -> None:
        sc = self.scenario
        if len(self.battery_ids) != sc.n_batteries or len(self.heater_ids) != sc.n_heaters:
            raise ValueError(
                f"scenario {sc.name} has {sc.n_batteries} batteries and {sc.n_heaters} "
                f"water heaters; got {len(self.battery_ids)} and {len(self.heater_ids)} agents"
            )
        self.series = {name: np.full(sc.steps, np.nan) for name in SERIES}
        inlet = np.asarray(sc.wh_params.inlet_c, dtype=np.float64) * np.ones(sc.n_heaters)
        volume = np.asarray(sc.wh_params.volume_l, dtype=np.float64) * np.ones(sc.n_heaters)
        # heat (kWh) between the inlet temperature and the CTA-2045 reference
        self._wh_offset_kwh = volume * WATER_KWH_PER_L_K * (STORAGE_REFERENCE_C - inlet)
        self._wh_capacity_kwh = volume * WATER_KWH_PER_L_K
        self._tank_c = np.full(sc.n_heaters, np.nan)  # measured top-of-tank °C, if reported

    # -- observation ------------------------------------------------------------------
    def _telemetry(self, agent_id: str) -> dict[str, Any]:
        record = self.ems.registry.get(agent_id)
        return {} if record is None else _plain(record.prop(DEMO_INTERFACE, "Telemetry"))

    def observe(self, step: int, net_kw: float) -> Observation:
        """The observation at the start of ``step`` from the agents' last telemetry."""
        sc = self.scenario
        energy = np.zeros(sc.n_batteries)
        b_power = np.zeros(sc.n_batteries)
        for i, agent_id in enumerate(self.battery_ids):
            t = self._telemetry(agent_id)
            energy[i] = float(
                t.get("Sys_Energy_kWh", sc.battery_soc0[i] * sc.battery_params.capacity_kwh)
            )
            if t.get("State") == "CONNECTED":
                b_power[i] = float(t.get("Setpoint_kW", 0.0))
            else:
                b_power[i] = float(t.get("Sys_Power_kW", 0.0))
        w_power = np.zeros(sc.n_heaters)
        w_energy = np.zeros(sc.n_heaters)
        w_mode = np.zeros(sc.n_heaters, dtype=np.int64)
        for j, agent_id in enumerate(self.heater_ids):
            t = self._telemetry(agent_id)
            w_power[j] = float(t.get("Power_W", 0.0)) / 1000.0
            stored_wh = t.get("Energy_Stored_Wh")
            w_energy[j] = (
                self._wh_offset_kwh[j] + float(stored_wh) / 1000.0
                if stored_wh is not None
                else self._wh_offset_kwh[j]
            )
            event = t.get("Event")
            w_mode[j] = 1 if event == "shed" else 2 if event == "charge" else 0
            self._tank_c[j] = float(t.get("Tank_Temp_C", np.nan))
        return Observation(
            step=step,
            t_s=step * sc.dt_s,
            dt_s=sc.dt_s,
            net_kw=net_kw,
            battery_energy_kwh=energy,
            battery_power_kw=b_power,
            wh_power_kw=w_power,
            wh_energy_kwh=w_energy,
            wh_mode=w_mode,
        )

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
        self.app.reset(sc)
        forecaster = make_forecaster(sc, self.app.perfect_foresight)
        started = time.perf_counter()
        decide_total = 0.0
        for k in range(total):
            await clock.sleep(self.start_s + k * sc.dt_s - clock.now())
            obs = self.observe_step(k)
            if k > 0:
                self._record(k - 1, obs)
            forecaster.update(obs)
            t0 = time.perf_counter()
            decision = self.app.decide(obs, forecaster.forecast(k, self.app.forecast_steps(k)))
            decide_total += time.perf_counter() - t0
            calls = self._send(decision_to_events(decision))
            await asyncio.sleep(0)
            self.history.append(
                LiveStep(
                    k, obs.net_kw, float(sc.target_kw[k]), float(sc.base_kw[k]), calls, decide_total
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
            extra={"calls_failed": float(self.calls_failed)},
        )

    def observe_step(self, step: int) -> Observation:
        """The observation at the start of ``step``; its net load is the last step's base
        load plus what the agents' telemetry says the devices drew (step 0: base load)."""
        sc = self.scenario
        obs = self.observe(step, 0.0)
        net = (
            float(sc.base_kw[0])
            if step == 0
            else float(sc.base_kw[step - 1] + obs.battery_power_kw.sum() + obs.wh_power_kw.sum())
        )
        return replace(obs, net_kw=net)

    def _send(self, events: DeviceEvents) -> int:
        calls = 0
        for i, seq in enumerate(events.batteries):
            self._call(self.battery_ids[i], seq)
            calls += 1
        for j, seq in events.water_heaters.items():
            self._call(self.heater_ids[j], seq)
            calls += 1
        return calls

    def _call(self, agent_id: str, events: list[tuple[str, int, int]]) -> None:
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
        sc = self.scenario
        s = self.series
        s["base_kw"][k] = sc.base_kw[k]
        s["target_kw"][k] = sc.target_kw[k]
        s["battery_kw"][k] = end_obs.battery_power_kw.sum()
        s["wh_kw"][k] = end_obs.wh_power_kw.sum()
        s["net_kw"][k] = sc.base_kw[k] + s["battery_kw"][k] + s["wh_kw"][k]
        soc = end_obs.battery_energy_kwh / sc.battery_params.capacity_kwh
        if soc.size:
            p10, p90 = np.percentile(soc, [10, 90])
            (
                s["soc_mean"][k],
                s["soc_min"][k],
                s["soc_max"][k],
                s["soc_p10"][k],
                s["soc_p90"][k],
            ) = soc.mean(), soc.min(), soc.max(), p10, p90
        estimate = (
            STORAGE_REFERENCE_C
            + (end_obs.wh_energy_kwh - self._wh_offset_kwh) / self._wh_capacity_kwh
        )
        top = np.where(np.isfinite(self._tank_c), self._tank_c, estimate)
        if top.size:
            p10, p90 = np.percentile(top, [10, 90])
            (
                s["top_c_mean"][k],
                s["top_c_min"][k],
                s["top_c_max"][k],
                s["top_c_p10"][k],
                s["top_c_p90"][k],
            ) = top.mean(), top.min(), top.max(), p10, p90
        bp = sc.battery_params
        self.soc_violations += int(np.sum((soc < bp.soc_min - 1e-3) | (soc > bp.soc_max + 1e-3)))
        self.comfort_violations += int(np.sum(top < sc.comfort_min_c))
        self.throughput_kwh += float(np.abs(end_obs.battery_power_kw).sum()) * sc.dt_s / 3600
        s["events"][k] = float(np.sum(end_obs.wh_mode != 0))
        s["n_shed"][k] = float(np.sum(end_obs.wh_mode == 1))
        s["n_load_up"][k] = float(np.sum(end_obs.wh_mode == 2))

    def _publish_series(self, k: int) -> None:
        """Keep the EMS's ``control_series`` (served to the dashboard) up to date."""
        assert self.start_s is not None
        sc = self.scenario
        done = [h for h in self.history if h.step <= k]
        self.ems.control_series = {
            "t": [self.start_s + h.step * sc.dt_s for h in done],
            "net_kw": [round(h.net_kw, 3) for h in done],
            "target_kw": [round(h.target_kw, 3) for h in done],
            "base_kw": [round(h.base_kw, 3) for h in done],
        }


async def fleet_from_groups(
    ems: EMS, scenario: Scenario, battery_group: str, heater_group: str, timeout_s: float = 60.0
) -> tuple[list[str], list[str]]:
    """Wait (real s) until the groups hold the scenario's batteries and heaters online;
    return their agent ids, sorted, cut to the scenario's counts."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        batteries = sorted(
            r.agent_id for r in ems.registry.group_members(battery_group) if r.online
        )
        heaters = sorted(r.agent_id for r in ems.registry.group_members(heater_group) if r.online)
        if len(batteries) >= scenario.n_batteries and len(heaters) >= scenario.n_heaters:
            return batteries[: scenario.n_batteries], heaters[: scenario.n_heaters]
        if loop.time() > deadline:
            raise TimeoutError(
                f"scenario {scenario.name} needs {scenario.n_batteries} batteries in group "
                f"{battery_group!r} and {scenario.n_heaters} water heaters in group "
                f"{heater_group!r}; online: {len(batteries)} and {len(heaters)}"
            )
        await asyncio.sleep(0.2)


def next_midnight(now_s: float) -> float:
    """The next 00:00 UTC after ``now_s`` (Unix s): where a day-long scenario starts."""
    return (int(now_s) // 86400 + 1) * 86400.0

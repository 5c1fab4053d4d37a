"""Live vs simulated tracking (issue 14): the MPC inside the EMS drives 3 batteries and 3
water heaters (each emulator, BIS and UCM its own process, over Mosquitto) on a scaled
clock, beside the fleet simulator running the same controller on the same scenario and
window. Live control learns its fleet from the registry and sends each battery hour-long
plans of 15-min events (``sef.control._live_plans``).

    .venv/bin/python bench/live_vs_sim.py [--speeds 120 360 720] [--hours 3]
        [--scenario small] [--correction-kw 1] [--stagger-s S]

Prints, per clock speed, the live RMSE (kW), the simulator's on the same window, their
ratio (acceptance at 360x: <= 1.2), the live and simulated peak net load against the
base-load peak, and the plans, corrections and failed calls sent.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sef.broker import Mosquitto
from sef.clock import ScaledClock
from sef.control.controllers import make_controller
from sef.control.live import LiveControl, wait_for_fleet
from sef.control.scenario import Scenario, load_scenario
from sef.control.simulator import SimResult, simulate
from sef.demo._fleet import Fleet
from sef.ems import EMS

LEAD_IN_REAL_S = 45.0
"""Real seconds from the start to the window's midnight: the processes boot meanwhile (the
meter emulator's base-load profile starts at the clock's 00:00, so the window does too)."""
DAY_START = 1_768_867_200.0
"""2026-01-20 00:00 UTC: the window's first step (any midnight does)."""


@dataclass
class Row:
    """One clock speed's figures (kW; counts)."""

    speed: float
    live_rmse: float
    sim_rmse: float
    live_peak: float
    sim_peak: float
    base_peak: float
    plans: int
    corrections: int
    failed: int
    wall_s: float


def _rmse(result: SimResult, steps: int) -> float:
    s = result.series
    err = s["net_kw"][:steps] - s["target_kw"][:steps]
    return float(np.sqrt(np.nanmean(err**2)))


async def live_run(
    scenario: Scenario,
    speed: float,
    steps: int,
    correction_kw: float,
    stagger_s: float,
    work: Path,
) -> tuple[SimResult, LiveControl]:
    """One live run at ``speed`` on a fresh broker and fleet (files under ``work``)."""
    broker = Mosquitto(workdir=work / "mosquitto")
    broker.workdir.mkdir(parents=True)  # type: ignore[union-attr]
    broker.start()
    clock = ScaledClock(speed=speed, sim_start=DAY_START, real_anchor=time.time() + LEAD_IN_REAL_S)
    fleet = Fleet(
        broker.url,
        clock,
        work / "logs",
        battery_soc=scenario.battery_soc0.tolist(),
        heater_temp_c=np.asarray(scenario.wh_params.initial_c).tolist(),
        base_kw=scenario.base_kw.tolist(),  # the metered feeder sums this and the devices
        base_dt_s=scenario.dt_s,
    )
    ems = EMS(broker.url, f"ems-bench-{speed:g}", clock=clock, keepalive_s=5)
    try:
        await ems.start()
        await asyncio.to_thread(fleet.start)
        meters = 1 if fleet.meter_id else 0
        await wait_for_fleet(
            ems, scenario, scenario.n_batteries, scenario.n_heaters, meters, LEAD_IN_REAL_S
        )
        if clock.now() >= DAY_START:
            raise RuntimeError(f"the fleet was not up within {LEAD_IN_REAL_S:g} s")
        live = LiveControl(
            ems,
            scenario,
            make_controller("mpc"),
            start_s=DAY_START,
            correction_kw=correction_kw,
            stagger_s=stagger_s,
        )
        return await live.run(steps), live
    finally:
        fleet.stop()
        await ems.stop()
        broker.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speeds", type=float, nargs="+", default=[120.0, 360.0, 720.0])
    parser.add_argument("--hours", type=float, default=3.0)
    parser.add_argument("--scenario", default="small")
    parser.add_argument("--correction-kw", type=float, default=1.0)
    parser.add_argument("--stagger-s", type=float, default=10.0)
    args = parser.parse_args()
    scenario = load_scenario(args.scenario)
    steps = round(args.hours * 3600.0 / scenario.dt_s)
    simulated = simulate(scenario, make_controller("mpc"))
    sim_rmse = _rmse(simulated, steps)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="sef-live-vs-sim-") as tmp:
        for n, speed in enumerate(args.speeds):
            t0 = time.perf_counter()
            result, live = await live_run(
                scenario, speed, steps, args.correction_kw, args.stagger_s, Path(tmp) / f"run-{n}"
            )
            rows.append(
                Row(
                    speed,
                    _rmse(result, steps),
                    sim_rmse,
                    float(np.nanmax(result.series["net_kw"][:steps])),
                    float(np.nanmax(simulated.series["net_kw"][:steps])),
                    float(np.max(scenario.base_kw[:steps])),
                    live.plans_sent,
                    live.corrections_sent,
                    live.calls_failed,
                    time.perf_counter() - t0,
                )
            )
            print(f"  {speed:g}x done in {rows[-1].wall_s:.0f} s", flush=True)
    print(
        f"\nscenario {scenario.name}, first {args.hours:g} h ({steps} steps), MPC; "
        f"battery plans re-sent on a >= {args.correction_kw:g} kW change, heater starts "
        f"staggered over {args.stagger_s:g} s"
    )
    print(
        f"{'speed':>6} {'live RMSE':>10} {'sim RMSE':>9} {'ratio':>6} {'live peak':>10} "
        f"{'sim peak':>9} {'base peak':>10} {'plans':>6} {'corr.':>6} {'failed':>7}"
    )
    for r in rows:
        print(
            f"{r.speed:>5g}x {r.live_rmse:>9.2f}  {r.sim_rmse:>8.2f} "
            f"{r.live_rmse / r.sim_rmse:>6.2f} {r.live_peak:>9.1f}  {r.sim_peak:>8.1f} "
            f"{r.base_peak:>10.1f} "
            f"{r.plans:>6d} {r.corrections:>6d} {r.failed:>7d}"
        )


if __name__ == "__main__":
    asyncio.run(main())

"""Fleet-simulator benchmark (issue 6): 10 000 water heaters + 1 000 batteries, one day at
1-minute steps, baseline controller — vectorized, beside a per-device Python loop on a
100-device sample (91 heaters + 9 batteries, the same mix) in the same run; the loop
runs the first 6 h only (``--loop-steps``), since its rate per device-step is what counts.

    .venv/bin/python bench/simulate.py [--heaters 10000] [--batteries 1000] [--sample 100]

Prints device-steps per second of both and their ratio; target: the whole run < 30 s.
"""

from __future__ import annotations

import argparse
import copy
import time
import tomllib
from importlib import resources

import numpy as np

from sef.control.controllers import make_controller
from sef.control.scenario import Scenario, scenario_from_dict
from sef.control.simulator import simulate
from sef.models.battery import BatteryModel
from sef.models.waterheater import WaterHeaterModel, WaterHeaterParams


def fleet_scenario(n_w: int, n_b: int) -> Scenario:
    """The reference scenario scaled to ``n_w`` heaters and ``n_b`` batteries (and homes)."""
    res = resources.files("sef.control.scenarios")
    raw = tomllib.loads(res.joinpath("reference.toml").read_text(encoding="utf-8"))
    raw = copy.deepcopy(raw)
    factor = n_b / raw["batteries"]["count"]
    raw["batteries"]["count"] = n_b
    raw["water_heaters"]["count"] = n_w
    raw["base_load"]["scale"] = raw["base_load"]["scale"] * factor
    with resources.as_file(res.joinpath("reference.toml")) as path:
        return scenario_from_dict(raw, path.parent)


def per_device_loop(sc: Scenario, n_w: int, n_b: int, steps: int) -> float:
    """Same physics and baseline logic, one model object per device, stepped in Python
    for the first ``steps`` steps; returns the time taken (s)."""
    whp = sc.wh_params
    init = np.asarray(whp.initial_c, dtype=np.float64)
    heaters = [
        WaterHeaterModel(
            WaterHeaterParams(nodes=whp.nodes, initial_c=float(init[i])), n=1, dr=sc.wh_dr
        )
        for i in range(n_w)
    ]
    bats = [BatteryModel(sc.battery_params, n=1, soc=float(sc.battery_soc0[i])) for i in range(n_b)]
    share = n_b / max(sc.n_batteries, 1)
    target = sc.target_kw * share
    base = sc.base_kw * share
    b_power = [0.0] * n_b
    net = float(base[0])
    t0 = time.perf_counter()
    for k in range(steps):
        err = net - float(target[k])
        fleet = sum(b_power) - err
        each = round(fleet / n_b) if n_b else 0
        total_w = 0.0
        for i, wh in enumerate(heaters):
            if err > 5.0 and wh.mode[0] == 0 and wh.stored_energy_kwh[0] > 6.2:
                wh.shed(None, 3600)
            elif err < -5.0 and wh.mode[0] == 1:
                wh.end_shed(None)
            total_w += float(wh.step(sc.dt_s, float(sc.draws_lpm[k, i % sc.n_heaters]))[0])
        for i, b in enumerate(bats):
            b_power[i] = b.step_one(float(np.clip(each, -5, 5)), sc.dt_s)
        net = float(base[k]) + sum(b_power) + total_w
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heaters", type=int, default=10_000)
    ap.add_argument("--batteries", type=int, default=1_000)
    ap.add_argument("--sample", type=int, default=100)
    ap.add_argument(
        "--loop-steps",
        type=int,
        default=360,
        help="steps of the per-device loop (default 6 h: it is ~400x slower)",
    )
    args = ap.parse_args()
    t_all = time.perf_counter()
    t0 = time.perf_counter()
    sc = fleet_scenario(args.heaters, args.batteries)
    build_s = time.perf_counter() - t0
    result = simulate(sc, make_controller("baseline"))
    devices = args.heaters + args.batteries
    vec_rate = devices * sc.steps / result.wall_s
    n_b = max(1, round(args.sample * args.batteries / devices))
    n_w = args.sample - n_b
    loop_steps = min(args.loop_steps, sc.steps)
    loop_s = per_device_loop(sc, n_w, n_b, loop_steps)
    loop_rate = args.sample * loop_steps / loop_s
    total = time.perf_counter() - t_all
    dev = result.series["net_kw"] - result.series["target_kw"]
    print(
        f"scenario: {args.heaters} water heaters + {args.batteries} batteries, "
        f"{sc.steps} steps of {sc.dt_s:.0f} s (built in {build_s:.2f} s)"
    )
    print(
        f"vectorized  : {result.wall_s:7.2f} s  {vec_rate:12,.0f} device-steps/s "
        f"(controller {result.decide_s:.2f} s; RMSE {np.sqrt(np.mean(dev**2)):.1f} kW, "
        f"comfort violations {result.comfort_violations}, SOC violations "
        f"{result.soc_violations})"
    )
    print(
        f"python loop : {loop_s:7.2f} s  {loop_rate:12,.0f} device-steps/s "
        f"({n_w} heaters + {n_b} batteries, {loop_steps} steps)"
    )
    print(f"ratio       : {vec_rate / loop_rate:7.1f} x")
    print(f"whole run   : {total:7.2f} s (target < 30 s) {'OK' if total < 30 else 'SLOW'}")


if __name__ == "__main__":
    main()

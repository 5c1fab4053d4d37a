"""Fleet-simulator benchmark: the vectorized simulator against a per-device loop (issue 6)
and at scale (issue 14).

Default (issue 6): 10 000 water heaters + 1 000 batteries, one day at 1-minute steps,
baseline controller — vectorized, beside a per-device Python loop on a 100-device sample
(91 heaters + 9 batteries, the same mix) in the same run; the loop runs the first 6 h
only (``--loop-steps``), since its rate per device-step is what counts. Prints
device-steps per second of both and their ratio; target: the whole run < 30 s.

    .venv/bin/python bench/simulate.py [--heaters 10000] [--batteries 1000] [--sample 100]

Scale (issue 14, ``--devices N``): N devices at 1 battery : 10 heaters (1 000 000 →
90 909 batteries + 909 091 heaters), one day at 1 min, after a reference run of
``--ref-devices`` (100 000) in the same invocation; each run in its own process so its
peak RSS is its own. Prints wall time (scenario build + simulation), device-steps/s,
peak RSS and the ratios to the reference run; PASS/FAIL against < 5 min and < 4 GB
(exit status 1 on FAIL).

    .venv/bin/python bench/simulate.py --devices 1000000 [--controller baseline|mpc]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

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
        draws = sc.draws_lpm.row(k)
        for i, wh in enumerate(heaters):
            if err > 5.0 and wh.mode[0] == 0 and wh.stored_energy_kwh[0] > 6.2:
                wh.shed(None, 3600)
            elif err < -5.0 and wh.mode[0] == 1:
                wh.end_shed(None)
            total_w += float(wh.step(sc.dt_s, float(draws[i % sc.n_heaters]))[0])
        for i, b in enumerate(bats):
            b_power[i] = b.step_one(float(np.clip(each, -5, 5)), sc.dt_s)
        net = float(base[k]) + sum(b_power) + total_w
    return time.perf_counter() - t0


def split_devices(devices: int) -> tuple[int, int]:
    """``(heaters, batteries)`` at 1 battery : 10 heaters."""
    n_b = max(1, round(devices / 11))
    return devices - n_b, n_b


def cpu_s() -> float:
    """CPU time of this process so far (user + system, s)."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MB; Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def scale_child(devices: int, controller: str, out: Path) -> None:
    """One scale run in this process: build, simulate with a progress bar, write JSON."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    n_w, n_b = split_devices(devices)
    t0 = time.perf_counter()
    sc = fleet_scenario(n_w, n_b)
    build_s = time.perf_counter() - t0
    build_rss = peak_rss_mb()
    with Progress(
        TextColumn(f"[bold]{devices:,} devices · {controller}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task("steps", total=sc.steps)

        def tick(done: int, total: int) -> None:
            if done % 10 == 0 or done == total:
                bar.update(task, completed=done)

        result = simulate(sc, make_controller(controller), tick)
    dev = result.series["net_kw"] - result.series["target_kw"]
    figures = {
        "devices": devices,
        "heaters": n_w,
        "batteries": n_b,
        "steps": sc.steps,
        "controller": controller,
        "build_s": build_s,
        "sim_s": result.wall_s,
        "decide_s": result.decide_s,
        "wall_s": build_s + result.wall_s,
        "device_steps_per_s": devices * sc.steps / result.wall_s,
        "cpu_s": cpu_s(),
        "load_avg_1min": os.getloadavg()[0],
        "build_rss_mb": build_rss,
        "peak_rss_mb": peak_rss_mb(),
        "draw_storage_mb": sc.draws_lpm.nbytes / 1e6,
        "rmse_kw": float(np.sqrt(np.mean(dev**2))),
        "comfort_violations": result.comfort_violations,
        "soc_violations": result.soc_violations,
    }
    out.write_text(json.dumps(figures), encoding="utf-8")


def run_child(devices: int, controller: str) -> dict[str, Any]:
    """Run :func:`scale_child` in a fresh interpreter (its own peak RSS)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.json"
        cmd = [sys.executable, __file__, "--child", str(devices), "--controller", controller]
        subprocess.run([*cmd, "--json", str(out)], check=True)
        figures: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
        return figures


def scale_main(devices: int, ref_devices: int, controller: str) -> int:
    """Reference run, then the ``devices`` run; print figures, ratios, PASS/FAIL."""
    runs = [run_child(n, controller) for n in dict.fromkeys([ref_devices, devices])]
    print(
        f"{'devices':>10} {'heaters':>9} {'batteries':>9} {'build s':>8} {'sim s':>8} "
        f"{'ctrl s':>7} {'wall s':>8} {'CPU s':>7} {'dev-steps/s':>12} {'build MB':>8} "
        f"{'peak MB':>8} {'draws MB':>8} {'RMSE kW':>9} {'comfort':>7} {'SOC':>4} {'load':>5}"
    )
    for r in runs:
        print(
            f"{r['devices']:>10,} {r['heaters']:>9,} {r['batteries']:>9,} {r['build_s']:>8.1f} "
            f"{r['sim_s']:>8.1f} {r['decide_s']:>7.1f} {r['wall_s']:>8.1f} {r['cpu_s']:>7.1f} "
            f"{r['device_steps_per_s']:>12,.0f} {r['build_rss_mb']:>8.0f} "
            f"{r['peak_rss_mb']:>8.0f} {r['draw_storage_mb']:>8.1f} {r['rmse_kw']:>9.1f} "
            f"{r['comfort_violations']:>7} {r['soc_violations']:>4} {r['load_avg_1min']:>5.1f}"
        )
    print(
        "wall = scenario build + simulation; CPU s = the run's process (user + system); "
        "load = 1-min load average at its end (2 CPUs, shared)"
    )
    ref, big = runs[0], runs[-1]
    if big is not ref:
        print(
            f"ratio {big['devices']:,} / {ref['devices']:,} devices: wall "
            f"{big['wall_s'] / ref['wall_s']:.2f} x, peak RSS "
            f"{big['peak_rss_mb'] / ref['peak_rss_mb']:.2f} x, device-steps/s "
            f"{big['device_steps_per_s'] / ref['device_steps_per_s']:.2f} x "
            f"(devices {big['devices'] / ref['devices']:.1f} x)"
        )
    ok_time = big["wall_s"] < 300.0
    ok_mem = big["peak_rss_mb"] < 4096.0
    verdict = "PASS" if ok_time and ok_mem else "FAIL"
    print(
        f"{verdict}: {big['devices']:,} devices x {big['steps']} steps: wall "
        f"{big['wall_s']:.1f} s (< 300 s: {'ok' if ok_time else 'no'}), peak RSS "
        f"{big['peak_rss_mb']:.0f} MB (< 4096 MB: {'ok' if ok_mem else 'no'})"
    )
    return 0 if verdict == "PASS" else 1


def loop_main(args: argparse.Namespace) -> None:
    """Issue 6: the vectorized simulator against a per-device Python loop."""
    t_all = time.perf_counter()
    t0 = time.perf_counter()
    sc = fleet_scenario(args.heaters, args.batteries)
    build_s = time.perf_counter() - t0
    result = simulate(sc, make_controller(args.controller))
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


def main() -> None:
    """Parse the arguments and run the loop comparison or the scale run."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--heaters", type=int, default=10_000)
    ap.add_argument("--batteries", type=int, default=1_000)
    ap.add_argument("--sample", type=int, default=100)
    ap.add_argument(
        "--loop-steps",
        type=int,
        default=360,
        help="steps of the per-device loop (default 6 h: it is ~400x slower)",
    )
    ap.add_argument("--controller", default="baseline", help="control app (default baseline)")
    ap.add_argument(
        "--devices", type=int, help="scale run: this many devices, 1 battery : 10 heaters"
    )
    ap.add_argument("--ref-devices", type=int, default=100_000, help="reference of --devices")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        scale_child(args.child, args.controller, args.json)
    elif args.devices is not None:
        sys.exit(scale_main(args.devices, args.ref_devices, args.controller))
    else:
        loop_main(args)


if __name__ == "__main__":
    main()

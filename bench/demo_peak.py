"""The demo's feeder peak at 720x (issue 14): ``sef demo`` runs, figures from the meter.

Acceptance: "the demo at 720x never exceeds the base peak by more than one heater element
on a feasible target". Each run is a whole ``sef demo`` (EMS, 3 batteries, 3 water
heaters, the feeder meter, each its own process, mutual TLS) for 24 h; the figures come
from its ``summary.json``, i.e. from the feeder meter's samples binned into the 1-min
steps (``sef.control._live_feeder``): the highest 1-min mean and the minutes whose mean
is above the scenario's base-load peak + the largest heater element (4.5 kW). The
reference is the same demo with the ``baseline`` controller (a proportional peak-shaving
controller on the last meter reading, OpenEMS style: no forecast, no plan, sheds all
heaters when the batteries cannot cover the excess) and without the feeder guard, run in
the same invocation.

    .venv/bin/python bench/demo_peak.py [--runs 3] [--speed 720] [--reference-runs 1]
        [--keep DIR]   (keep each run's report: plots, timeseries.csv, ems.db)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SEF = Path(sys.executable).with_name("sef")


def run_demo(controller: str, speed: float, out: Path) -> dict[str, Any]:
    """One ``sef demo`` run; its controller's summary figures."""
    cmd = [
        str(SEF),
        "demo",
        "--no-browser",
        "--headless",
        "--speed",
        f"{speed:g}",
        "--controller",
        controller,
        "--api",
        "127.0.0.1:0",
        "-o",
        str(out),
    ]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"sef demo failed ({done.returncode}): {done.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    figures: dict[str, Any] = next(iter(summary["controllers"].values()))
    figures["wall_s"] = time.perf_counter() - t0
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--reference-runs", type=int, default=1)
    parser.add_argument("--speed", type=float, default=720.0)
    parser.add_argument("--keep", type=Path, default=None, help="keep the reports here")
    args = parser.parse_args()
    rows: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="sef-demo-peak-") as tmp:
        folder = args.keep if args.keep is not None else Path(tmp)
        plan = ["baseline"] * args.reference_runs + ["mpc"] * args.runs
        for n, controller in enumerate(plan):
            figures = run_demo(controller, args.speed, folder / f"run-{n}-{controller}")
            rows.append((controller, figures))
            print(
                f"  run {n + 1}/{len(plan)} ({controller}) done in {figures['wall_s']:.0f} s",
                flush=True,
            )
    print(
        f"\nsef demo at {args.speed:g}x, 24 h; meter 1-min means against base peak + one "
        f"element ({rows[0][1]['meter_allowed_kw']:.2f} kW)"
    )
    print(
        f"{'controller':>10} {'1-min peak kW':>14} {'min. over':>10} {'RMSE kW':>8} "
        f"{'guard acts':>11} {'load-ups held':>14} {'SOC end':>8}"
    )
    for controller, f in rows:
        print(
            f"{controller:>10} {f['meter_peak_1min_kw']:>14.2f} {f['meter_steps_over']:>10.0f} "
            f"{f['rmse_kw']:>8.2f} {f.get('guard_actions', 0):>11.0f} "
            f"{f.get('load_ups_held', 0):>14.0f} {f['soc_end_mean']:>8.3f}"
        )
    ref = [f["meter_steps_over"] for c, f in rows if c == "baseline"]
    mpc = [f["meter_steps_over"] for c, f in rows if c == "mpc"]
    if ref and mpc:
        print(
            f"minutes over, mpc / baseline (mean): {sum(mpc) / len(mpc):.1f} / "
            f"{sum(ref) / len(ref):.1f}; runs with none: {sum(m == 0 for m in mpc)}/{len(mpc)}"
        )


if __name__ == "__main__":
    main()

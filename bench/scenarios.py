"""The issue-14 control scenario suite: every suite scenario with the baseline, the greedy
battery-only dispatch, the MPC and the perfect-foresight optimum; a table of the
energy-corrected scores and PASS/FAIL per acceptance line.

    .venv/bin/python bench/scenarios.py [--only duck_cap ...] [--out DIR] [--controllers ...]

Acceptance (``sef.control.report.acceptance``): MPC ≤ 1.10 × the optimum on the
energy-corrected score, MPC better than greedy, MPC without SOC or comfort violations;
with a cap, MPC's peak ≤ cap + 1 % whenever the optimum's is. Reports (summary.json,
timeseries.csv, plots) go to ``--out``/<scenario>/. Exit status 1 if a line fails.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sef.control.controllers import make_controller
from sef.control.report import Check, acceptance, write_report
from sef.control.scenario import load_scenario
from sef.control.scenarios import SUITE
from sef.control.simulator import simulate

CONTROLLERS = ("optimal", "mpc", "greedy", "baseline")


def run_scenario(
    name: str, out: Path, controllers: tuple[str, ...] = CONTROLLERS, plots: bool = False
) -> dict[str, Any]:
    """Simulate ``controllers`` on suite scenario ``name``; returns the report summary."""
    sc = load_scenario(name)
    results = []
    for c in controllers:
        t0 = time.perf_counter()
        results.append(simulate(sc, make_controller(c)))
        print(f"  {name} · {c}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return write_report(out / name, sc, results, plots=plots)


def _f(m: dict[str, float], key: str, spec: str = ".2f") -> str:
    v = m.get(key)
    return "-" if v is None or v != v else format(v, spec)


def scores_table(summaries: list[dict[str, Any]]) -> Table:
    """One row per scenario and controller."""
    t = Table(title="Scenario suite (issue 14): energy-corrected scores")
    heads = ["scenario", "objective", "controller", "score", "÷ optimum", "RMSE kW"]
    heads += ["RMSE corr. kW", "peak kW", "limit kW", "over cap % 1 min/15 min", "SOC start→end"]
    heads += ["debt kWh", "SOC viol.", "comfort viol.", "events", "run s"]
    for h in heads:
        t.add_column(h, justify="left" if h in ("scenario", "objective", "controller") else "right")
    for s in summaries:
        obj = s["objective"]
        unit = "kW" if obj == "track" else "kWh"
        for c, m in s["controllers"].items():
            limit = m.get("cap_kw", m.get("floor_kw"))
            t.add_row(
                s["scenario"],
                obj,
                c,
                f"{_f(m, 'score')} {unit}",
                _f(m, "ratio_to_optimal", ".3f"),
                _f(m, "rmse_kw"),
                _f(m, "rmse_corrected_kw"),
                _f(m, "peak_kw", ".1f"),
                "-" if limit is None else f"{limit:.1f}",
                f"{_f(m, 'over_cap_max_pct', '+.2f')}/{_f(m, 'over_cap_demand_pct', '+.2f')}",
                f"{_f(m, 'soc_start_mean')}→{_f(m, 'soc_end_mean')}",
                _f(m, "energy_debt_kwh", "+.1f"),
                _f(m, "soc_violations", ".0f"),
                _f(m, "comfort_violations", ".0f"),
                _f(m, "wh_events", ".0f"),
                _f(m, "run_s", ".1f"),
            )
        t.add_section()
    return t


def checks_table(checks: list[Check]) -> Table:
    """PASS / FAIL / n/a per acceptance line."""
    t = Table(title="Acceptance")
    for h in ("scenario", "line", "result", "detail"):
        t.add_column(h)
    for c in checks:
        res = "n/a" if c.passed is None else ("[green]PASS" if c.passed else "[red]FAIL")
        t.add_row(c.scenario, c.line, res, c.detail)
    return t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=list(SUITE), help="scenarios to run")
    ap.add_argument("--controllers", nargs="*", default=list(CONTROLLERS))
    ap.add_argument("--out", type=Path, default=None, help="report directory (default: tmp)")
    ap.add_argument("--plots", action="store_true", help="write the PNG plots too")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="sef-suite-"))
    summaries, checks = [], []
    for name in args.only:
        s = run_scenario(name, out, tuple(args.controllers), plots=args.plots)
        summaries.append(s)
        if {"mpc", "optimal"} <= set(s["controllers"]):
            checks += acceptance(s)
    console = Console(width=max(Console().width, 170))
    console.print(scores_table(summaries))
    console.print(checks_table(checks))
    console.print(f"reports in {out}")
    return 1 if any(c.passed is False for c in checks) else 0


if __name__ == "__main__":
    raise SystemExit(main())

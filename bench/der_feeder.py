"""Issue 17 acceptance line 4: the ``der_feeder`` scenario (300 homes, 100 PV systems,
50 EVs, 20 batteries, 50 water heaters; 220 kW import cap, 200 kW export limit) with the
MPC, the perfect-foresight optimum and the uncontrolled baseline, measured in the same run.

    .venv/bin/python bench/der_feeder.py [--out DIR] [--controllers mpc optimal baseline]
        [--seed N ...]

Prints per controller: max feeder load vs the cap (kW, minutes over), min net vs the
export limit (kW, minutes below), EV departures missed and the min / median margin at
departure (energy, kWh; time between the need met and departure, h), PV curtailed (kWh,
% of available, and kWh curtailed with the net more than 15 kW above the export limit),
LP solve time per re-plan (mean / max, ms) and the app's time per 1-min step (ms); the
MPC's peak and minutes over the cap as a ratio of the baseline's (the no-control
reference of the same run), and the machine load (``uptime``). ``--seed`` runs other
realisations of the same scenario (base-load noise, clouds, EV sessions).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sef.control.controllers import make_controller
from sef.control.report import write_report
from sef.control.scenario import load_scenario, scenario_from_dict
from sef.control.scenarios import __file__ as _scen_init
from sef.control.simulator import simulate

COLUMNS = (
    ("peak_kw", "peak kW", ".1f"),
    ("minutes_over_cap", "min > cap", ".0f"),
    ("over_cap_max_pct", "over cap %", "+.2f"),
    ("min_net_kw", "min net kW", ".1f"),
    ("minutes_below_export", "min < export", ".0f"),
    ("ev_departures", "EV dep.", ".0f"),
    ("ev_missed", "EV missed", ".0f"),
    ("ev_margin_kwh_min", "margin min kWh", ".2f"),
    ("ev_margin_kwh_median", "margin med kWh", ".2f"),
    ("ev_finish_margin_h_min", "done min h", ".2f"),
    ("ev_finish_margin_h_median", "done med h", ".2f"),
    ("pv_curtailed_kwh", "PV curt kWh", ".1f"),
    ("pv_curtailed_pct", "PV curt %", ".2f"),
    ("pv_curtailed_headroom_kwh", "curt w/ room kWh", ".1f"),
    ("lp_solve_ms_mean", "LP ms", ".0f"),
    ("lp_solve_ms_max", "LP max ms", ".0f"),
    ("decide_ms_per_step", "ms/step", ".1f"),
)


def run(seed: int | None, controllers: list[str], out: Path) -> dict[str, Any]:
    """Simulate the controllers on ``der_feeder`` (``seed``: another realisation)."""
    if seed is None:
        sc = load_scenario("der_feeder")
    else:
        import tomllib

        path = Path(_scen_init).parent / "der_feeder.toml"
        raw = tomllib.loads(path.read_text())
        raw["seed"] = seed
        raw["pv"]["cloud_seed"] = seed
        raw["evs"]["seed"] = seed
        sc = scenario_from_dict(raw, path.parent)
    results = [simulate(sc, make_controller(c)) for c in controllers]
    return write_report(out, sc, results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--controllers", nargs="+", default=["mpc", "optimal", "baseline"])
    ap.add_argument("--seed", type=int, nargs="*", default=[])
    args = ap.parse_args()
    console = Console(width=200)
    out = args.out or Path(tempfile.mkdtemp(prefix="der_feeder_"))
    for seed in [None, *args.seed]:
        where = out / ("default" if seed is None else f"seed{seed}")
        summary = run(seed, args.controllers, where)
        per = summary["controllers"]
        table = Table(title=f"der_feeder seed {seed or 'default'} → {where}")
        table.add_column("controller")
        for _, head, _ in COLUMNS:
            table.add_column(head, justify="right")
        for name, m in per.items():
            cells = []
            for key, _, fmt in COLUMNS:
                v = m.get(key)
                cells.append("-" if v is None or v != v else format(v, fmt))
            table.add_row(name, *cells)
        console.print(table)
        if "mpc" in per and "baseline" in per:
            mpc, base = per["mpc"], per["baseline"]
            console.print(
                f"MPC ÷ baseline: peak {mpc['peak_kw'] / base['peak_kw']:.3f}, minutes over the "
                f"cap {mpc['minutes_over_cap']:.0f} vs {base['minutes_over_cap']:.0f}, below "
                f"the export limit {mpc['minutes_below_export']:.0f} vs "
                f"{base['minutes_below_export']:.0f}"
            )
    console.print(f"load (uptime): {os.getloadavg()}")


if __name__ == "__main__":
    main()

"""Fleet simulator, report and ``sef simulate``; the reference-scenario acceptance run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from control_support import small_scenario
from sef.cli import app
from sef.control.controllers import make_controller
from sef.control.report import metrics, write_report
from sef.control.scenario import load_scenario
from sef.control.simulator import simulate


def test_short_run_every_controller(tmp_path: Path) -> None:
    sc = small_scenario(n_b=3, n_w=6, hours=3.0, kind="smooth", window_h=2.0)
    results = [simulate(sc, make_controller(n)) for n in ("mpc", "baseline", "optimal")]
    for r in results:
        m = metrics(r)
        assert m["soc_violations"] == 0 and m["comfort_violations"] == 0
        assert np.isfinite(m["rmse_kw"]) and m["throughput_kwh"] >= 0
        # the recorded net load is base + batteries + heaters
        s = r.series
        np.testing.assert_allclose(s["net_kw"], s["base_kw"] + s["battery_kw"] + s["wh_kw"])
    summary = write_report(tmp_path, sc, results, plots=False)
    assert set(summary["controllers"]) == {"mpc", "baseline", "optimal"}
    assert summary["controllers"]["optimal"]["ratio_to_optimal"] == 1.0
    header = (tmp_path / "timeseries.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["time_s", "base_kw", "target_kw"] and "mpc.net_kw" in header


def test_cli_writes_report(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(
        'name = "tiny"\ndt_s = 60\nduration_h = 1\n'
        '[base_load]\ncsv = "b.csv"\n[target]\nkind = "flat"\nvalue_kw = 12\n'
        "[batteries]\ncount = 2\n[water_heaters]\ncount = 2\n"
    )
    (tmp_path / "b.csv").write_text("time_s,kw\n0,10\n1800,14\n")
    out = tmp_path / "report"
    res = CliRunner().invoke(
        app, ["simulate", str(tmp_path / "s.toml"), "--out", str(out), "--controller", "baseline"]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["controllers"]) == ["baseline"]
    for f in ("load.png", "fleet_state.png", "events.png", "timeseries.csv"):
        assert (out / f).stat().st_size > 0
    res = CliRunner().invoke(app, ["simulate", "nope", "--out", str(out)])
    assert res.exit_code == 2 and "error" in res.output


def test_reference_acceptance(tmp_path: Path) -> None:
    """Issue 6: MPC within 15 % of the optimum, clearly below the baseline, no violations."""
    sc = load_scenario("reference")
    results = {n: simulate(sc, make_controller(n)) for n in ("optimal", "mpc", "baseline")}
    summary = write_report(tmp_path, sc, list(results.values()))
    m = summary["controllers"]
    print(json.dumps({n: {k: round(v, 3) for k, v in x.items()} for n, x in m.items()}))
    assert m["mpc"]["rmse_kw"] <= 1.15 * m["optimal"]["rmse_kw"]
    assert m["mpc"]["rmse_kw"] <= 0.8 * m["baseline"]["rmse_kw"]
    for x in m.values():
        assert x["comfort_violations"] == 0 and x["soc_violations"] == 0
    for n in ("mpc", "optimal"):  # the LP apps keep their day-end energy
        assert m[n]["soc_end_mean"] >= sc.battery_soc0.mean() - 0.05
    assert (tmp_path / "load.png").exists()

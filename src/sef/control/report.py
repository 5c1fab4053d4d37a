"""Report of simulator runs: metrics, ``summary.json``, a CSV time series and PNG plots.

Metrics per controller run (kW, kWh; deviation = net load − target):

* ``rmse_kw``, ``max_dev_kw``: root-mean-square and largest absolute deviation;
* ``peak_kw``: highest net load; ``energy_kwh``: net energy drawn over the run;
* ``comfort_violations``: heater-steps with the top node, or a draw's outlet, below the
  comfort limit; ``soc_violations``: battery-steps outside the SOC window;
* ``throughput_kwh``: battery AC energy in + out; ``wh_events``: Shed / Load Up / End
  Shed messages; ``ratio_to_optimal``: ``rmse_kw`` / the optimum's ``rmse_kw``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from sef.control.scenario import Scenario
from sef.control.simulator import SERIES, SimResult

__all__ = ["metrics", "write_report"]


def metrics(result: SimResult) -> dict[str, float]:
    """Metrics of one run (see module docstring)."""
    s = result.series
    dev = s["net_kw"] - s["target_kw"]
    hours = result.dt_s / 3600.0
    out: dict[str, float] = {
        "rmse_kw": float(np.sqrt(np.mean(dev**2))),
        "max_dev_kw": float(np.max(np.abs(dev))),
        "mean_dev_kw": float(np.mean(dev)),
        "peak_kw": float(np.max(s["net_kw"])),
        "base_peak_kw": float(np.max(s["base_kw"] + 0.0)),
        "energy_kwh": float(np.sum(s["net_kw"]) * hours),
        "comfort_violations": float(result.comfort_violations),
        "soc_violations": float(result.soc_violations),
        "clipped_steps": float(result.clipped_steps),
        "throughput_kwh": float(result.throughput_kwh),
        "wh_events": float(np.sum(s["events"])),
        "soc_end_mean": float(s["soc_mean"][-1]),
        "run_s": float(result.wall_s),
        "decide_s": float(result.decide_s),
    }
    out.update(result.extra)
    return out


def _write_csv(path: Path, results: list[SimResult]) -> None:
    first = results[0].series
    cols = ["time_s", "base_kw", "target_kw"]
    per = [c for c in SERIES if c not in ("base_kw", "target_kw")]
    header = cols + [f"{r.controller}.{c}" for r in results for c in per]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        n = first["base_kw"].shape[0]
        t = np.arange(n) * results[0].dt_s
        data = [t, first["base_kw"], first["target_kw"]]
        data += [r.series[c] for r in results for c in per]
        table = np.column_stack(data)
        for row in table:
            w.writerow([f"{v:.4g}" for v in row])


def _plots(out: Path, sc: Scenario, results: list[SimResult]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results[0].series["net_kw"])  # a live run may cover part of the scenario
    t_h = np.arange(n) * sc.dt_s / 3600.0
    files = []
    fig, ax = plt.subplots(figsize=(11, 5))
    ax.plot(t_h, sc.base_kw[:n], color="0.6", lw=0.8, label="base load")
    ax.plot(t_h, sc.target_kw[:n], "k--", lw=1.5, label="target")
    for r in results:
        m = metrics(r)
        ax.plot(
            t_h,
            r.series["net_kw"],
            lw=0.9,
            label=f"net, {r.controller} (RMSE {m['rmse_kw']:.2f} kW)",
        )
    ax.set(xlabel="time (h)", ylabel="kW", title=f"{sc.name}: base, target and net load")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    files.append("load.png")
    fig.savefig(out / files[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, axes = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    for r in results:
        s = r.series
        (line,) = axes[0].plot(t_h, s["soc_mean"], lw=1.2, label=f"{r.controller} mean")
        axes[0].fill_between(t_h, s["soc_min"], s["soc_max"], color=line.get_color(), alpha=0.15)
        (line,) = axes[1].plot(t_h, s["top_c_mean"], lw=1.2, label=f"{r.controller} mean")
        axes[1].fill_between(
            t_h, s["top_c_min"], s["top_c_max"], color=line.get_color(), alpha=0.15
        )
    bp = sc.battery_params
    for lim in (bp.soc_min, bp.soc_max):
        axes[0].axhline(lim, color="r", lw=0.8, ls=":")
    axes[1].axhline(sc.comfort_min_c, color="r", lw=0.8, ls=":", label="comfort limit")
    axes[0].set(ylabel="battery SOC (min–max band)")
    axes[1].set(ylabel="tank top temperature (°C)", xlabel="time (h)")
    for a in axes:
        a.legend(fontsize=8)
        a.grid(alpha=0.3)
    files.append("fleet_state.png")
    fig.savefig(out / files[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, axes = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
    for r in results:
        s = r.series
        axes[0].plot(t_h, s["battery_kw"], lw=0.8, label=f"{r.controller} batteries")
        axes[1].step(t_h, s["n_shed"], lw=0.8, where="post", label=f"{r.controller} shed")
        axes[1].step(
            t_h, s["n_load_up"], lw=0.8, ls="--", where="post", label=f"{r.controller} load up"
        )
    axes[0].set(ylabel="battery fleet kW (+ charge)")
    axes[1].set(ylabel="heaters in event", xlabel="time (h)")
    for a in axes:
        a.legend(fontsize=8)
        a.grid(alpha=0.3)
    files.append("events.png")
    fig.savefig(out / files[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)
    return files


def write_report(
    out_dir: str | Path, sc: Scenario, results: list[SimResult], plots: bool = True
) -> dict[str, Any]:
    """Write ``summary.json``, ``timeseries.csv`` and (``plots``) PNGs into ``out_dir``.

    Returns:
        The summary (as written to ``summary.json``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    per = {r.controller: metrics(r) for r in results}
    if "optimal" in per:
        ref = per["optimal"]["rmse_kw"]
        for m in per.values():
            m["ratio_to_optimal"] = m["rmse_kw"] / ref if ref > 0 else float("nan")
    summary: dict[str, Any] = {
        "scenario": sc.name,
        "steps": len(results[0].series["net_kw"]) if results else sc.steps,
        "dt_s": sc.dt_s,
        "seed": sc.seed,
        "batteries": sc.n_batteries,
        "water_heaters": sc.n_heaters,
        "comfort_min_c": sc.comfort_min_c,
        "controllers": per,
    }
    _write_csv(out / "timeseries.csv", results)
    summary["files"] = ["summary.json", "timeseries.csv"]
    if plots:
        summary["files"] += _plots(out, sc, results)
    with open(out / "summary.json", "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2, sort_keys=False)
    return summary

"""Report of simulator runs: metrics, ``summary.json``, a CSV time series and PNG plots.

Metrics per controller run (kW, kWh; deviation = net load − target):

* ``rmse_kw``, ``max_dev_kw``: root-mean-square and largest absolute deviation;
* ``peak_kw``: highest net load; ``energy_kwh``: net energy drawn over the run;
* ``comfort_violations``: heater-steps with the top node, or a draw's outlet, below the
  comfort limit; ``soc_violations``: battery-steps outside the SOC window;
* ``throughput_kwh``: battery AC energy in + out; ``wh_events``: Shed / Load Up / End
  Shed messages;
* stored energy: ``battery_kwh_start``/``_end``, ``soc_start_mean``/``soc_end_mean``,
  ``wh_kwh_start``/``_end`` (heat above inlet), and ``energy_debt_kwh``: the grid energy
  the fleet took from storage over the run (+) or left in it (−), valued at the grid:
  a battery deficit ``ΔB < 0`` costs ``−ΔB / η_c`` (the AC energy to recharge it), a
  surplus is worth ``ΔB · η_d``; heat above inlet counts 1 kWh electric per kWh
  (resistance elements);
* ``correction_kw``: ``energy_debt_kwh`` spread flat over the run (``/ duration_h``);
  0 when the scenario's end-energy rule is ``free``. The energy-corrected net load is
  ``net + correction_kw`` at every step: the controller pays back what it borrowed;
* objective scores (energy-corrected): ``track``: ``rmse_corrected_kw``; ``cap``:
  ``excess_corrected_kwh`` = Σ max(0, net + c − cap)·h (raw: ``excess_kwh``), and
  ``over_cap_max_kw`` / ``over_cap_max_pct`` (the raw net's largest excursion above the
  cap, kW and % of the cap, per step) and ``over_cap_demand_pct`` (the same on means
  over each control interval, 15 min: the demand a utility bills; ``demand_peak_kw``:
  the highest such mean); ``floor``: ``deficit_corrected_kwh`` (raw: ``deficit_kwh``),
  ``under_floor_max_kw`` / ``under_floor_max_pct`` / ``under_floor_demand_pct``;
* ``score`` = the objective's energy-corrected score (``score_unit`` kW or kWh) and
  ``ratio_to_optimal`` = ``max(score, tol) / max(optimum score, tol)``, where ``tol`` is
  0 for ``track`` and, for ``cap``/``floor``, the energy of a 1 % excursion of the mean
  limit for one hour (scores within it count as meeting the limit);
  ``rmse_ratio_to_optimal``: the plain RMSE ratio.

:func:`acceptance` checks a summary against the issue-14 acceptance lines.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sef.control.report_der import der_metrics, der_plots, has_der
from sef.control.scenario import Scenario
from sef.control.simulator import SERIES, SimResult

__all__ = ["Check", "acceptance", "energy_debt_kwh", "metrics", "score_tolerance", "write_report"]

#: Score of each objective and its unit.
SCORE_KEY = {
    "track": "rmse_corrected_kw",
    "cap": "excess_corrected_kwh",
    "floor": "deficit_corrected_kwh",
}
SCORE_UNIT = {"track": "kW", "cap": "kWh", "floor": "kWh"}
#: Peak criterion: the net stays within this fraction of the cap / floor.
LIMIT_TOLERANCE = 0.01


def energy_debt_kwh(
    battery_delta_kwh: float, wh_delta_kwh: float, eta_c: float = 1.0, eta_d: float = 1.0
) -> float:
    """Grid energy taken from storage over a run (kWh; − = left in storage).

    Args:
        battery_delta_kwh: battery stored energy, end − start (kWh).
        wh_delta_kwh: heater heat above inlet, end − start (kWh, 1 kWh electric each).
        eta_c: battery charge efficiency (a deficit costs ``−Δ / η_c`` to recharge).
        eta_d: battery discharge efficiency (a surplus is worth ``Δ · η_d``).
    """
    b = -battery_delta_kwh / eta_c if battery_delta_kwh < 0 else -battery_delta_kwh * eta_d
    return float(b - wh_delta_kwh)


def score_tolerance(objective: str, limit_kw: np.ndarray[Any, Any]) -> float:
    """Scores up to this count as meeting the objective (see module docstring)."""
    if objective == "track":
        return 0.0
    return float(LIMIT_TOLERANCE * np.mean(np.abs(limit_kw)) * 1.0)


def _extra(result: SimResult, key: str) -> float:
    return float(result.extra.get(key, float("nan")))


def metrics(result: SimResult, sc: Scenario | None = None) -> dict[str, float]:
    """Metrics of one run (see module docstring); ``sc`` gives the objective, the end-energy
    rule and the battery parameters (without it: ``track``, ``return``, efficiencies 1)."""
    s = result.series
    net, target = s["net_kw"], s["target_kw"]
    dev = net - target
    hours = result.dt_s / 3600.0
    out: dict[str, float] = {
        "rmse_kw": float(np.sqrt(np.mean(dev**2))),
        "max_dev_kw": float(np.max(np.abs(dev))),
        "mean_dev_kw": float(np.mean(dev)),
        "peak_kw": float(np.max(net)),
        "base_peak_kw": float(np.max(s["base_kw"] + 0.0)),
        "energy_kwh": float(np.sum(net) * hours),
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
    objective = sc.objective if sc is not None else "track"
    free = sc is not None and sc.end_energy == "free"
    eta_c = sc.battery_params.charge_efficiency if sc is not None else 1.0
    eta_d = sc.battery_params.discharge_efficiency if sc is not None else 1.0
    b0, b1 = _extra(result, "battery_kwh_start"), _extra(result, "battery_kwh_end")
    w0, w1 = _extra(result, "wh_kwh_start"), _extra(result, "wh_kwh_end")
    if sc is not None and sc.n_batteries:
        full = sc.n_batteries * sc.battery_params.capacity_kwh
        out["soc_start_mean"] = b0 / full
    debt = energy_debt_kwh(b1 - b0, w1 - w0, eta_c, eta_d)
    out["energy_debt_kwh"] = debt
    duration_h = len(net) * hours
    c = 0.0 if free or not np.isfinite(debt) else debt / duration_h
    out["correction_kw"] = c
    out["rmse_corrected_kw"] = float(np.sqrt(np.mean((dev + c) ** 2)))
    m = sc.interval_steps if sc is not None else 1
    blocks = len(net) // m
    net_d = net[: blocks * m].reshape(blocks, m).mean(axis=1) if blocks else net
    lim_d = target[: blocks * m].reshape(blocks, m).mean(axis=1) if blocks else target
    out["demand_peak_kw"] = float(np.max(net_d))
    if objective == "cap":
        out["over_cap_demand_pct"] = float(
            100.0 * np.max((net_d - lim_d) / np.maximum(np.abs(lim_d), 1e-9))
        )
        out["cap_kw"] = float(np.max(target))
        out["excess_kwh"] = float(np.sum(np.maximum(dev, 0.0)) * hours)
        out["excess_corrected_kwh"] = float(np.sum(np.maximum(dev + c, 0.0)) * hours)
        out["over_cap_max_kw"] = float(np.max(dev))
        out["over_cap_max_pct"] = float(100.0 * np.max(dev / np.maximum(np.abs(target), 1e-9)))
    elif objective == "floor":
        out["under_floor_demand_pct"] = float(
            100.0 * np.max((lim_d - net_d) / np.maximum(np.abs(lim_d), 1e-9))
        )
        out["floor_kw"] = float(np.min(target))
        out["deficit_kwh"] = float(np.sum(np.maximum(-dev, 0.0)) * hours)
        out["deficit_corrected_kwh"] = float(np.sum(np.maximum(-dev - c, 0.0)) * hours)
        out["under_floor_max_kw"] = float(np.max(-dev))
        out["under_floor_max_pct"] = float(100.0 * np.max(-dev / np.maximum(np.abs(target), 1e-9)))
    out["score"] = out[SCORE_KEY[objective]]
    out["score_tolerance"] = score_tolerance(objective, target)
    if sc is not None and has_der(sc):  # issue 17: PV and EV figures
        out.update(der_metrics(result, sc))
    return out


@dataclass(frozen=True)
class Check:
    """One acceptance line: ``passed`` is ``None`` when it does not apply."""

    scenario: str
    line: str
    passed: bool | None
    detail: str


def acceptance(summary: dict[str, Any]) -> list[Check]:
    """Issue-14 acceptance lines for a summary with ``optimal``, ``mpc`` and ``greedy`` runs.

    MPC ≤ 1.10 × the optimum on the energy-corrected score; MPC better than greedy (or
    both within the score tolerance); MPC without SOC or comfort violations; with ``cap``
    (``floor``), MPC's net within 1 % of the limit whenever the optimum's is — per step
    (1 min) and on control-interval (15-min) means, each line on its own.
    """
    name = str(summary["scenario"])
    per: dict[str, dict[str, float]] = summary["controllers"]
    objective = str(summary.get("objective", "track"))
    mpc, opt, greedy = per["mpc"], per["optimal"], per.get("greedy")
    tol = mpc["score_tolerance"]
    unit = SCORE_UNIT[objective]
    out = [
        Check(
            name,
            "MPC ≤ 1.10 × optimum (energy-corrected score)",
            bool(mpc["ratio_to_optimal"] <= 1.10),
            f"{mpc['score']:.2f} vs {opt['score']:.2f} {unit} (× {mpc['ratio_to_optimal']:.3f})",
        )
    ]
    if greedy is not None:
        better = mpc["score"] < greedy["score"] or max(mpc["score"], greedy["score"]) <= tol
        out.append(
            Check(
                name,
                "MPC better than greedy",
                bool(better),
                f"{mpc['score']:.2f} vs {greedy['score']:.2f} {unit}",
            )
        )
    viol = mpc["soc_violations"] + mpc["comfort_violations"]
    out.append(
        Check(
            name,
            "MPC: zero SOC and comfort violations",
            bool(viol == 0),
            f"SOC {mpc['soc_violations']:.0f}, comfort {mpc['comfort_violations']:.0f}",
        )
    )
    pct = 100.0 * LIMIT_TOLERANCE
    for obj, key, word in (
        ("cap", "over_cap_max_pct", "peak ≤ cap + 1 %"),
        ("cap", "over_cap_demand_pct", "15-min demand ≤ cap + 1 %"),
        ("floor", "under_floor_max_pct", "min ≥ floor − 1 %"),
        ("floor", "under_floor_demand_pct", "15-min demand ≥ floor − 1 %"),
    ):
        if objective != obj:
            continue
        can = opt[key] <= pct
        out.append(
            Check(
                name,
                f"{word} where the optimum keeps it",
                bool(mpc[key] <= pct) if can else None,
                f"MPC {mpc[key]:+.2f} %, optimum {opt[key]:+.2f} % of the limit",
            )
        )
    return out


def _write_csv(path: Path, results: list[SimResult]) -> None:
    first = results[0].series
    cols = ["time_s", "base_kw", "target_kw"]
    per = [c for c in SERIES if c not in ("base_kw", "target_kw")]
    per += [c for c in first if c not in SERIES]  # PV / EV series when present
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
        m = metrics(r, sc)
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
    per = {r.controller: metrics(r, sc) for r in results}
    if "optimal" in per:
        ref = per["optimal"]
        for m in per.values():
            tol = max(m["score_tolerance"], 1e-12)
            m["ratio_to_optimal"] = max(m["score"], tol) / max(ref["score"], tol)
            r_ref = ref["rmse_kw"]
            m["rmse_ratio_to_optimal"] = m["rmse_kw"] / r_ref if r_ref > 0 else float("nan")
    summary: dict[str, Any] = {
        "scenario": sc.name,
        "objective": sc.objective,
        "end_energy": sc.end_energy,
        "steps": len(results[0].series["net_kw"]) if results else sc.steps,
        "dt_s": sc.dt_s,
        "seed": sc.seed,
        "batteries": sc.n_batteries,
        "water_heaters": sc.n_heaters,
        "comfort_min_c": sc.comfort_min_c,
        "controllers": per,
    }
    if has_der(sc):
        summary["pv_systems"] = sc.n_pv
        summary["evs"] = sc.ev.count if sc.ev is not None else 0
        summary["export_limit_kw"] = sc.export_limit_kw
    _write_csv(out / "timeseries.csv", results)
    summary["files"] = ["summary.json", "timeseries.csv"]
    if plots:
        summary["files"] += _plots(out, sc, results)
        if has_der(sc):
            summary["files"] += der_plots(out, sc, results)
    with open(out / "summary.json", "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2, sort_keys=False)
    return summary

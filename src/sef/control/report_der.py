"""Report figures and plots for PV and EVs (issue 17); only for scenarios that have them.

Metrics per run (kW, kWh, h, min; added to :func:`sef.control.report.metrics`):

* feeder: ``minutes_over_cap`` (steps with the net above the import cap, in minutes; cap
  objective), ``export_limit_kw``, ``min_net_kw``, ``minutes_below_export`` (net below
  −export limit) and ``below_export_max_kw``;
* PV: ``pv_available_kwh``, ``pv_delivered_kwh``, ``pv_curtailed_kwh``,
  ``pv_curtailed_pct`` (of the available energy) and ``pv_curtailed_headroom_kwh``: PV
  curtailed in steps whose net stayed more than ``HEADROOM_KW`` above the export limit
  (what a last-resort curtailment should never do);
* EVs: ``ev_departures`` (sessions leaving within the run that wanted energy in it),
  ``ev_missed`` (of those, leaving more than ``MISS_TOLERANCE_KWH`` short),
  ``ev_missed_kwh``, ``ev_margin_kwh_min`` / ``_median`` (energy at departure − the
  driver's target, battery side: 0 = met, < 0 = short), ``ev_finish_margin_h_min`` /
  ``_median`` (departure − the time the need was met), ``ev_delivered_kwh``,
  ``ev_end_plugged`` and ``ev_end_laxity_min_h`` (EVs still plugged at the end: time in
  hand, negative = their departure energy is already out of reach);
* solver: ``lp_solve_ms_mean`` (per re-plan), ``lp_solve_ms_max``, ``decide_ms_per_step``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sef.control.scenario import Scenario
from sef.control.simulator import SimResult

__all__ = ["der_metrics", "der_plots", "has_der"]

#: an EV leaving this much short of its target (battery side, kWh) has missed it
MISS_TOLERANCE_KWH = 0.01
#: curtailment with the net this far above the export limit (kW) had headroom
HEADROOM_KW = 15.0


def has_der(sc: Scenario) -> bool:
    """True if the scenario has PV, EVs or an export limit."""
    return sc.pv is not None or sc.ev is not None or sc.export_limit_kw is not None


def der_metrics(result: SimResult, sc: Scenario) -> dict[str, float]:
    """The module docstring's figures for one run."""
    s, h = result.series, result.dt_s / 3600.0
    net = s["net_kw"]
    out: dict[str, float] = {}
    if sc.objective == "cap":
        out["minutes_over_cap"] = float(np.sum(net > s["target_kw"] + 1e-6) * result.dt_s / 60.0)
    if sc.export_limit_kw is not None:
        low = -sc.export_limit_kw
        out["export_limit_kw"] = sc.export_limit_kw
        out["min_net_kw"] = float(np.min(net))
        out["minutes_below_export"] = float(np.sum(net < low - 1e-6) * result.dt_s / 60.0)
        out["below_export_max_kw"] = float(max(0.0, low - np.min(net)))
    if "pv_avail_kw" in s:
        avail, curt = float(np.sum(s["pv_avail_kw"]) * h), float(np.sum(s["pv_curtailed_kw"]) * h)
        out["pv_available_kwh"] = avail
        out["pv_delivered_kwh"] = float(np.sum(s["pv_kw"]) * h)
        out["pv_curtailed_kwh"] = curt
        out["pv_curtailed_pct"] = 100.0 * curt / avail if avail > 0 else 0.0
        if sc.export_limit_kw is not None:
            room = net > -sc.export_limit_kw + HEADROOM_KW
            out["pv_curtailed_headroom_kwh"] = float(np.sum(s["pv_curtailed_kw"][room]) * h)
    e = result.ev_sessions
    if e:
        left = np.isfinite(e["missed_kwh"]) & (e["need_kwh"] > 1e-6)
        missed = e["missed_kwh"][left]
        out["ev_departures"] = float(left.sum())
        out["ev_missed"] = float(np.sum(missed > MISS_TOLERANCE_KWH))
        out["ev_missed_kwh"] = float(np.sum(missed))
        if missed.size:
            out["ev_margin_kwh_min"] = float(np.min(-missed))
            out["ev_margin_kwh_median"] = float(np.median(-missed))
            fin = e["finish_margin_h"][left]
            out["ev_finish_margin_h_min"] = float(np.nanmin(fin)) if np.isfinite(fin).any() else 0.0
            out["ev_finish_margin_h_median"] = (
                float(np.nanmedian(fin)) if np.isfinite(fin).any() else 0.0
            )
        out["ev_delivered_kwh"] = float(np.sum(e["delivered_kwh"]))
        stay = np.isfinite(e["end_laxity_h"]) & (e["arrival_s"] < len(net) * result.dt_s)
        out["ev_end_plugged"] = float(stay.sum())
        if stay.any():
            out["ev_end_laxity_min_h"] = float(np.min(e["end_laxity_h"][stay]))
    n_solves = result.extra.get("lp_solves", 0.0)
    if n_solves:
        out["lp_solve_ms_mean"] = 1000.0 * result.extra["lp_solve_s"] / n_solves
    if "lp_solve_max_s" in result.extra:
        out["lp_solve_ms_max"] = 1000.0 * result.extra["lp_solve_max_s"]
    out["decide_ms_per_step"] = 1000.0 * result.decide_s / max(len(net), 1)
    return out


def der_plots(out: Path, sc: Scenario, results: list[SimResult]) -> list[str]:
    """``der.png`` (net vs cap and export limit, PV available vs delivered, EV power and
    plugged EVs) and ``ev_departures.png`` (energy vs need per departing EV)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results[0].series["net_kw"])
    t_h = np.arange(n) * sc.dt_s / 3600.0
    fig, axes = plt.subplots(3, 1, figsize=(11, 10), sharex=True)
    axes[0].plot(t_h, sc.base_kw[:n], color="0.6", lw=0.8, label="base load")
    axes[0].plot(t_h, sc.target_kw[:n], "k--", lw=1.3, label=f"{sc.objective} limit")
    if sc.export_limit_kw is not None:
        axes[0].axhline(-sc.export_limit_kw, color="r", ls="--", lw=1.3, label="export limit")
    for r in results:
        s = r.series
        axes[0].plot(t_h, s["net_kw"], lw=0.8, label=f"net, {r.controller}")
        if "pv_kw" in s:
            axes[1].plot(t_h, s["pv_kw"], lw=0.9, label=f"PV delivered, {r.controller}")
        if "ev_kw" in s:
            axes[2].plot(t_h, s["ev_kw"], lw=0.9, label=f"EV charging, {r.controller}")
    if results and "pv_avail_kw" in results[0].series:
        axes[1].plot(
            t_h, results[0].series["pv_avail_kw"], "k", lw=1.2, alpha=0.6, label="PV available"
        )
    if results and "ev_plugged" in results[0].series:
        ax2 = axes[2].twinx()
        ax2.step(t_h, results[0].series["ev_plugged"], color="0.5", lw=0.8, where="post")
        ax2.set_ylabel("EVs plugged in")
    axes[0].set(ylabel="kW", title=f"{sc.name}: feeder, PV and EVs")
    axes[1].set(ylabel="PV kW")
    axes[2].set(ylabel="EV kW", xlabel="time (h)")
    for a in axes:
        a.legend(fontsize=7, loc="upper left")
        a.grid(alpha=0.3)
    files = ["der.png"]
    fig.savefig(out / files[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)
    if results and results[0].ev_sessions:
        fig, ax = plt.subplots(figsize=(11, 5))
        e0 = results[0].ev_sessions
        left = np.isfinite(e0["missed_kwh"]) & (e0["need_kwh"] > 1e-6)
        order = np.argsort(e0["departure_s"][left])
        x = np.arange(order.size)
        dep_h = e0["departure_s"][left][order] / 3600.0
        ax.bar(
            x, e0["need_kwh"][left][order], color="0.85", label="need at plug-in / 00:00 (AC kWh)"
        )
        for i, r in enumerate(results):
            e = r.ev_sessions
            ax.plot(
                x,
                e["delivered_kwh"][left][order],
                "o_^sv"[i % 5],
                ms=4,
                label=f"delivered, {r.controller}",
            )
        ax.set_xticks(x[:: max(1, x.size // 20)])
        ax.set_xticklabels([f"{d:.1f}" for d in dep_h[:: max(1, x.size // 20)]], fontsize=7)
        ax.set(
            xlabel="departure (h)",
            ylabel="kWh",
            title=f"{sc.name}: EV energy vs need per departure",
        )
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        files.append("ev_departures.png")
        fig.savefig(out / files[-1], dpi=110, bbox_inches="tight")
        plt.close(fig)
    return files


def der_rows(summary: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """``(controller, cells)`` for the CLI's DER table (columns: :data:`DER_HEADS`)."""
    rows = []
    for name, m in summary["controllers"].items():
        if "decide_ms_per_step" not in m:
            continue
        cells = []
        for key, _, digits in DER_HEADS:
            v = float(m.get(key, float("nan")))
            cells.append("-" if v != v else f"{v:.{digits}f}")
        rows.append((name, cells))
    return rows


#: (metric key, column head, decimals) of the CLI's DER table
DER_HEADS = (
    ("peak_kw", "peak kW", 1),
    ("minutes_over_cap", "min > cap", 0),
    ("min_net_kw", "min net kW", 1),
    ("minutes_below_export", "min < export", 0),
    ("pv_curtailed_kwh", "PV curt. kWh", 1),
    ("pv_curtailed_pct", "PV curt. %", 2),
    ("ev_departures", "EV dep.", 0),
    ("ev_missed", "EV missed", 0),
    ("ev_margin_kwh_min", "EV margin min kWh", 2),
    ("ev_finish_margin_h_min", "EV done min h", 2),
    ("ev_finish_margin_h_median", "EV done med. h", 2),
    ("lp_solve_ms_mean", "LP ms", 0),
    ("lp_solve_ms_max", "LP max ms", 0),
    ("decide_ms_per_step", "ms/step", 1),
)

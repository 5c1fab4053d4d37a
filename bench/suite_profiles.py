"""Writes the profile CSVs of the control scenario suite (issue 14) into
``src/sef/control/scenarios/`` — rerun after changing a formula below, then commit the CSVs.

    .venv/bin/python bench/suite_profiles.py

* ``duck_feeder_kw.csv`` (15-min means, kW, 250 homes): the BDEW H0 winter-workday
  profile of ``bdew_h0_2023-01-17.csv`` × 1000 (250 homes × 4 MWh/yr) minus rooftop PV
  ``P_pv(t) = 110 kW · sin(π (t − 7 h) / 10 h)^1.5`` between 07:00 and 17:00 (0 outside):
  a midday dip to ~10 kW (5 % of the 189 kW peak) and a steep evening ramp (the duck curve).
* ``infeasible_window_target.csv`` (15-min means, kW): the 6-h centred moving average of
  the expected net load of ``infeasible_window.toml`` (made with a 6-h smooth target;
  base profile + expected heater demand as :mod:`sef.control.scenario` computes it when
  this script runs), times 0.4 from 17:00 to 20:00 — a request to take 60 % off the
  evening peak, more energy than the fleet holds, so that window is infeasible and the
  rest of the day is not.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np

from sef.control import profiles
from sef.control.scenario import scenario_from_dict

SCEN = Path(__file__).resolve().parents[1] / "src" / "sef" / "control" / "scenarios"
STEP_S = 900.0


def pv_kw(t_s: np.ndarray, peak_kw: float = 110.0) -> np.ndarray:
    """Rooftop PV (kW) at interval starts ``t_s``: see the module docstring."""
    x = (t_s / 3600.0 + STEP_S / 7200.0 - 7.0) / 10.0  # interval midpoints
    return np.where((x > 0) & (x < 1), peak_kw * np.sin(np.pi * np.clip(x, 0, 1)) ** 1.5, 0.0)


def write_csv(path: Path, t_s: np.ndarray, kw: np.ndarray, comment: str) -> None:
    """``time_s,kw`` with a ``#`` comment header."""
    lines = [f"# {ln}" for ln in comment.splitlines()] + ["time_s,kw"]
    lines += [f"{t:.0f},{v:.3f}" for t, v in zip(t_s, kw, strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {path} ({len(t_s)} rows, {kw.min():.1f}..{kw.max():.1f} kW)")


def duck() -> None:
    t, v = profiles.load_series_csv(SCEN / "bdew_h0_2023-01-17.csv")
    net = 1000.0 * v - pv_kw(t)
    write_csv(
        SCEN / "duck_feeder_kw.csv",
        t,
        net,
        "Duck-curve feeder (bench/suite_profiles.py): 250 homes BDEW H0 (2023-01-17)\n"
        "minus PV 110 kW * sin(pi (t - 7 h) / 10 h)^1.5, 07:00-17:00; 15-min means, kW.",
    )


def infeasible_target() -> None:
    path = SCEN / "infeasible_window.toml"
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    raw["target"] = {"kind": "smooth", "window_h": 6.0}
    sc = scenario_from_dict(raw, SCEN)
    m = round(STEP_S / sc.dt_s)
    smooth = sc.target_kw.reshape(-1, m).mean(axis=1)
    t = np.arange(smooth.shape[0]) * STEP_S
    window = (t >= 17 * 3600) & (t < 20 * 3600)
    target = np.where(window, 0.4 * smooth, smooth)
    write_csv(
        SCEN / "infeasible_window_target.csv",
        t,
        target,
        "Target of infeasible_window.toml (bench/suite_profiles.py): 6-h smooth expected\n"
        "net load, x 0.4 from 17:00 to 20:00 (infeasible there); 15-min means, kW.",
    )


if __name__ == "__main__":
    duck()
    infeasible_target()

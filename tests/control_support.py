"""Small scenarios and observations for the control tests (imported, not collected)."""

from __future__ import annotations

from typing import Any

import numpy as np

from sef.control.controllers._lp import LPInput, LPPlan, solve_plan
from sef.control.controllers.base import Observation
from sef.control.scenario import Scenario, scenario_from_dict
from sef.control.scenarios import __file__ as _scen_init

SCENARIO_DIR = __import__("pathlib").Path(_scen_init).parent


def small_raw(n_b: int = 2, n_w: int = 0, hours: float = 2.0, **target: Any) -> dict[str, Any]:
    return {
        "name": "small",
        "dt_s": 60,
        "duration_h": hours,
        "seed": 1,
        "base_load": {"source": "csv", "csv": "bdew_h0_2023-01-17.csv", "scale": 100.0},
        "target": target or {"kind": "flat", "value_kw": 10.0},
        "batteries": {
            "count": n_b,
            "initial_soc": 0.5,
            "params": {"rated_power_kw": 5.0, "capacity_kwh": 13.5},
        },
        "water_heaters": {"count": n_w, "shift_std_min": 30.0},
    }


def small_scenario(n_b: int = 2, n_w: int = 0, hours: float = 2.0, **target: Any) -> Scenario:
    return scenario_from_dict(small_raw(n_b, n_w, hours, **target), SCENARIO_DIR)


def obs(
    step: int,
    net_kw: float,
    b_energy: list[float],
    b_power: list[float],
    w_power: list[float] | None = None,
    w_energy: list[float] | None = None,
    w_mode: list[int] | None = None,
) -> Observation:
    w_power = w_power or []
    return Observation(
        step=step,
        t_s=60.0 * step,
        dt_s=60.0,
        net_kw=net_kw,
        battery_energy_kwh=np.array(b_energy, dtype=float),
        battery_power_kw=np.array(b_power, dtype=float),
        wh_power_kw=np.array(w_power, dtype=float),
        wh_energy_kwh=np.array(w_energy or [0.0] * len(w_power), dtype=float),
        wh_mode=np.array(w_mode or [0] * len(w_power), dtype=np.int64),
    )


def battery_lp(base: list[float], limit: float, e0: float, **kw: Any) -> LPPlan:
    """An LP plan on a one-hour grid with a lossless 30 kW / 100 kWh battery fleet and no
    heaters; ``kw`` overrides or adds :class:`LPInput` fields (objective, der...)."""
    n = len(base)
    args: dict[str, Any] = {
        "h": 1.0,
        "base_kw": np.array(base, dtype=float),
        "target_kw": np.full(n, limit),
        "draw_kw": np.zeros(n),
        "b_p_max": 30.0,
        "b_e0": e0,
        "b_e_min": 0.0,
        "b_e_max": 100.0,
        "b_eta_c": 1.0,
        "b_eta_d": 1.0,
        "b_standby_kw": 0.0,
        "w_p_max": 0.0,
        "w_e0": 0.0,
        "w_e_min": 0.0,
        "w_e_max": 0.0,
        "w_loss_kw": 0.0,
        "seg_kw": 0.5,
        "segments": 80,
    }
    args.update(kw)
    return solve_plan(LPInput(**args))

"""The series a live run records per step (the simulator's ``SERIES``)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from sef.control.controllers.base import Observation
from sef.control.scenario import Scenario

__all__ = ["record_step"]

FloatArray = npt.NDArray[np.float64]


def record_step(
    series: dict[str, FloatArray],
    k: int,
    sc: Scenario,
    end_obs: Observation,
    base_kw: float,
    soc: FloatArray,
    soc_window: tuple[FloatArray, FloatArray],
    top_c: FloatArray,
) -> tuple[int, int, float]:
    """Fill step ``k`` of ``series`` from the measurements at its end.

    Args:
        series: the run's series (arrays of the scenario's length).
        k: the step.
        sc: the scenario in use (target, comfort limit, step length).
        end_obs: the observation at the end of step ``k``.
        base_kw: the step's base load (kW): metered, or the scenario's.
        soc: each battery's SOC (fraction).
        soc_window: each battery's SOC limits (fractions): lowest, highest.
        top_c: each heater's tank-top temperature (°C), measured or estimated.

    Returns:
        SOC violations (batteries outside their window ± 0.1 %), comfort violations
        (heaters below ``sc.comfort_min_c``) and battery throughput (kWh) of the step.
    """
    s = series
    s["battery_kw"][k] = end_obs.battery_power_kw.sum()
    s["wh_kw"][k] = end_obs.wh_power_kw.sum()
    s["base_kw"][k] = base_kw
    s["target_kw"][k] = sc.target_kw[k]
    s["net_kw"][k] = end_obs.net_kw
    for name, values in (("soc", soc), ("top_c", top_c)):
        if values.size:
            p10, p90 = np.percentile(values, [10, 90])
            s[f"{name}_mean"][k], s[f"{name}_min"][k] = values.mean(), values.min()
            s[f"{name}_max"][k], s[f"{name}_p10"][k], s[f"{name}_p90"][k] = values.max(), p10, p90
    s["events"][k] = float(np.sum(end_obs.wh_mode != 0))
    s["n_shed"][k] = float(np.sum(end_obs.wh_mode == 1))
    s["n_load_up"][k] = float(np.sum(end_obs.wh_mode == 2))
    lo, hi = soc_window
    soc_bad = int(np.sum((soc < lo - 1e-3) | (soc > hi + 1e-3)))
    comfort_bad = int(np.sum(top_c < sc.comfort_min_c))
    return soc_bad, comfort_bad, float(np.abs(end_obs.battery_power_kw).sum()) * sc.dt_s / 3600

"""Micro-benchmark: vectorized water-heater stepping vs a per-device Python loop.

Steps n = 10 000 heaters (random 150–190 L, UA 1.3–2.2 W/K, setpoints 48–55 °C,
DOE medium draws shifted by a random 0–6 h per heater) for one day at 1-min
steps, then the same model one device at a time on a 100-device sample, and
prints device-steps per second and the speed-up::

    PYTHONPATH=src .venv/bin/python bench/waterheater_step.py [--nodes 2] [--n 10000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sef.models.draws import doe_medium_draw_profile
from sef.models.waterheater import WaterHeaterModel, WaterHeaterParams

STEPS = 1440


def _params(n: int, nodes: int, rng: np.random.Generator) -> WaterHeaterParams:
    return WaterHeaterParams(
        volume_l=rng.uniform(150, 190, n),
        ua_w_per_k=rng.uniform(1.3, 2.2, n),
        setpoint_c=rng.uniform(48, 55, n),
        inlet_c=rng.uniform(7, 15, n),
        ambient_c=rng.uniform(15, 22, n),
        initial_c=rng.uniform(45, 52, n),
        nodes=nodes,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--sample", type=int, default=100)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    base = doe_medium_draw_profile(60.0)
    shifts = rng.integers(0, 360, args.n)
    # draws[t, i] = base[(t - shift_i) mod 1440]
    draws = base[(np.arange(STEPS)[:, None] - shifts[None, :]) % STEPS]

    model = WaterHeaterModel(_params(args.n, args.nodes, rng))
    t0 = time.perf_counter()
    model.simulate(60.0, draws)
    t_vec = time.perf_counter() - t0
    rate_vec = args.n * STEPS / t_vec

    k = args.sample
    singles = [
        WaterHeaterModel(
            WaterHeaterParams(
                volume_l=model.volume_l[i],
                ua_w_per_k=model.ua_w_per_k[i],
                setpoint_c=model.setpoint_c[i],
                inlet_c=model.inlet_c[i],
                ambient_c=model.ambient_c[i],
                nodes=args.nodes,
            )
        )
        for i in range(k)
    ]
    t0 = time.perf_counter()
    for s in range(STEPS):
        for i, m in enumerate(singles):
            m.step(60.0, draws[s, i])
    t_loop = time.perf_counter() - t0
    rate_loop = k * STEPS / t_loop

    print(f"nodes={args.nodes}  one day at 1-min steps ({STEPS} steps)")
    print(f"vectorized  n={args.n:6d}: {t_vec:7.2f} s  {rate_vec:12,.0f} device-steps/s")
    print(f"python loop n={k:6d}: {t_loop:7.2f} s  {rate_loop:12,.0f} device-steps/s")
    print(f"speed-up (vectorized / loop): {rate_vec / rate_loop:,.0f}x")
    print(
        f"mean daily energy {model.electric_kwh.mean():.2f} kWh/heater, "
        f"max |balance error| {np.abs(model.balance_error_kwh).max():.2e} kWh"
    )


if __name__ == "__main__":
    main()

"""Benchmark: vectorized PV fleet vs a per-system loop, and the curtailment path's latency.

1. Model: ``PVFleet.available_kw`` for n systems (random 3–10 kWp, tilt 10–40°, azimuth
   120–240°, seeded clouds) over one day at 1-min steps, vectorized; then the same
   systems one at a time (a one-system fleet each) on a sample; prints system-steps per
   second and the speed-up.
2. Curtailment (with ``--latency``): a ``shed`` sent by an EMS through a Mosquitto broker
   to the inverter agent until the emulator's 701 ``W`` shows it, vs the same 704 write
   made directly with SEF's SunSpec client (the baseline); median and p95 over the runs.

    PYTHONPATH=src .venv/bin/python bench/pv_fleet.py [--n 1000] [--sample 20] [--latency]

Writes ``docs/img/pv_day.png`` (clear vs cloudy fleet output, one system's curtailment)
with ``--figure``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

import numpy as np

from sef.models.pv import PVFleet, day_times
from sef.models.pv_irradiance import ClearSky, Cloudiness, Site

SITE = Site(40.0, -105.0, 1600.0)
DAY = "2026-06-21"


def _fleet(n: int, rng: np.random.Generator, seed: int | None) -> PVFleet:
    clouds = None if seed is None else Cloudiness(seed=seed)
    return PVFleet(
        dc_kwp=rng.uniform(3, 10, n),
        tilt_deg=rng.uniform(10, 40, n),
        azimuth_deg=rng.uniform(120, 240, n),
        source=ClearSky(SITE, cloudiness=clouds),
    )


def bench_model(n: int, sample: int) -> None:
    times = day_times(DAY, 60.0)
    fleet = _fleet(n, np.random.default_rng(1), seed=7)
    t0 = time.perf_counter()
    avail = fleet.available_kw(times)
    t_vec = time.perf_counter() - t0
    rate_vec = n * len(times) / t_vec
    t0 = time.perf_counter()
    for i in range(sample):
        one = PVFleet(
            dc_kwp=fleet.dc_kwp[i], tilt_deg=fleet.tilt_deg[i],
            azimuth_deg=fleet.azimuth_deg[i], source=ClearSky(SITE, cloudiness=Cloudiness(seed=i)),
        )  # fmt: skip
        one.available_kw(times)
    t_loop = time.perf_counter() - t0
    rate_loop = sample * len(times) / t_loop
    print(f"vectorized: {n} systems x {len(times)} steps in {t_vec:.2f} s "
          f"= {rate_vec:,.0f} system-steps/s; energy {avail.sum() / 60:,.0f} kWh")  # fmt: skip
    print(f"per-system loop (baseline): {sample} systems in {t_loop:.2f} s "
          f"= {rate_loop:,.0f} system-steps/s")  # fmt: skip
    print(f"speed-up: {rate_vec / rate_loop:.1f}x")


async def bench_latency(runs: int) -> None:
    from sef.agents.inverter import InverterAgent
    from sef.broker import Mosquitto
    from sef.clock import ScaledClock
    from sef.ems import EMS
    from sef.emulators.inverter import InverterEmulator
    from sef.interface import DEMO_INTERFACE
    from sef.protocols.sunspec import SunSpecClient

    noon = ScaledClock(speed=1.0, sim_start=1782068400.0, real_anchor=time.time())
    broker = Mosquitto()
    broker.start()
    emulator = InverterEmulator(port=0, clock=noon, tick_s=0.5)
    _, port = await emulator.start()
    agent = InverterAgent(
        "pv-bench", broker.url, modbus_host="127.0.0.1", modbus_port=port, poll_s=1.0, clock=noon
    )
    ems = EMS(broker.url, "ems-bench", clock=noon)
    await ems.start()
    await agent.start()
    direct = SunSpecClient("127.0.0.1", port)
    await direct.connect()
    await direct.scan()

    async def until_watts(target: float) -> None:
        while abs(float(emulator.image.get(701, "W") or 0) - target) > 1:
            await asyncio.sleep(0.0005)

    try:
        while agent.device.wmax_w <= 0:
            await asyncio.sleep(0.05)
        via_bus, via_modbus = [], []
        for k in range(runs):
            rate = 1 + k % 4
            t0 = time.perf_counter()
            await ems.call("pv-bench", DEMO_INTERFACE, "EnergyMethod", [[["shed", rate, 0]]])
            await until_watts(rate * 1000.0)
            via_bus.append(time.perf_counter() - t0)
            await ems.call("pv-bench", DEMO_INTERFACE, "EnergyMethod", [[["endshed", 0, 0]]])
            await until_watts(5000.0)
        await agent.stop()  # the baseline without the agent re-asserting its limit
        for k in range(runs):
            pct = 20.0 * (1 + k % 4)
            t0 = time.perf_counter()
            await direct.write_points(704, {"WMaxLimPctEna": 1, "WMaxLimPct": pct})
            await until_watts(pct * 50.0)
            via_modbus.append(time.perf_counter() - t0)
            await direct.write_points(704, {"WMaxLimPctEna": 0})
            await until_watts(5000.0)
    finally:
        direct.close()
        await ems.stop()
        await emulator.stop()
        broker.stop()

    def show(name: str, xs: list[float]) -> float:
        med = statistics.median(xs) * 1000
        p95 = sorted(xs)[int(0.95 * (len(xs) - 1))] * 1000
        print(f"{name}: median {med:.2f} ms, p95 {p95:.2f} ms over {len(xs)} runs")
        return med

    bus = show("shed via EMS -> Mosquitto -> agent -> Modbus -> 701 W", via_bus)
    base = show("baseline: direct Modbus 704 write -> 701 W", via_modbus)
    print(f"ratio bus/direct: {bus / base:.1f}x")


def figure(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sef.models.pv import apply_limits

    times = day_times(DAY, 60.0)
    rng = np.random.default_rng(1)
    clear = _fleet(100, rng, None).available_kw(times).sum(axis=1)
    rng = np.random.default_rng(1)
    cloudy_fleet = _fleet(100, rng, seed=7)
    cloudy_all = cloudy_fleet.available_kw(times)
    one = cloudy_all[:, 0]
    p, _ = apply_limits(one, cloudy_fleet.kva[0], np.where(times.hour.isin([18, 19]), 1.5, np.nan))
    hours = (times - times[0]).total_seconds() / 3600.0
    fig, (a, b) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    a.plot(hours, clear, label="clear sky (Ineichen)")
    a.plot(hours, cloudy_all.sum(axis=1), label="seeded clouds", lw=0.8)
    a.set_ylabel("fleet AC power, kW")
    a.set_title("100 PV systems (3-10 kWp), 40°N 105°W, 21 June 2026")
    a.legend()
    b.plot(hours, one, label="available", lw=0.8)
    b.plot(hours, p, label="delivered (shed 1.5 kW 18:00-20:00 UTC)")
    b.set_xlabel("hour of day, UTC")
    b.set_ylabel("system 0, kW")
    b.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--sample", type=int, default=20)
    ap.add_argument("--latency", action="store_true")
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--figure", type=Path, default=None)
    args = ap.parse_args()
    bench_model(args.n, args.sample)
    if args.latency:
        asyncio.run(bench_latency(args.runs))
    if args.figure is not None:
        figure(args.figure)


if __name__ == "__main__":
    main()

"""One EV evening through the whole stack, against the model alone.

EMS → Mosquitto → ``sef evse`` agent → OCPP (wss + Basic auth) → the charge-point
emulator (OCPP 1.6J or 2.0.1) on a scaled clock, with the sequence
``charge:7:1800, idle:0:900, charge:3:1800`` (then the agent releases the charger: full
rate until the EV is full or leaves). Baseline: the same sequence applied to
:class:`sef.models.ev.EVFleet` directly (no protocol, exact event times). Prints the
energy per phase both ways and their ratio, the command-to-charger latency (real ms),
and plots power and energy (``--out DIR/evse_session.png``).

    python bench/evse_session.py --version ocpp2.0.1 --speed 120 --out /tmp/evse
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from evse_rig import CP_ID, PASSWORD, agent_rig, make_tls
from sef.broker import Mosquitto
from sef.clock import ScaledClock
from sef.emulators.evse import EVSEEmulator, default_session
from sef.models.ev import EVFleet

SEQUENCE = [("charge", 7, 1800), ("idle", 0, 900), ("charge", 3, 1800)]
TAIL_S = 1800.0  # simulated seconds watched after the sequence (released: full rate)


def baseline(need_kwh: float) -> list[float]:
    """Energy per phase (kWh) of the model alone under the sequence, then 11 kW."""
    fleet = EVFleet(default_session(0.0, need_kwh=need_kwh, battery_kwh=75.0), t0_s=0.0)
    out = []
    for _, rate, duration in SEQUENCE:
        before = float(fleet.delivered_kwh[0])
        fleet.step(float(duration), float(rate))
        out.append(float(fleet.delivered_kwh[0]) - before)
    before = float(fleet.delivered_kwh[0])
    fleet.step(TAIL_S, 11.0)
    return [*out, float(fleet.delivered_kwh[0]) - before]


async def run(version: str, speed: float, need_kwh: float, out: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="evse-bench-"))
    os.chmod(work, 0o755)
    (work / "mq").mkdir(mode=0o777)
    os.chmod(work / "mq", 0o777)
    with Mosquitto(workdir=work / "mq") as broker:
        clock = ScaledClock(speed=speed)
        tls = make_tls(work)
        async with agent_rig(broker.url, clock, tls=tls) as rig:
            emulator = EVSEEmulator(
                f"wss://127.0.0.1:{rig.port}/{CP_ID}",
                version=version,
                clock=clock,
                session=default_session(clock.now(), need_kwh=need_kwh, battery_kwh=75.0),
                password=PASSWORD,
                ssl_context=tls.client,
                meter_interval_s=30.0,
            )
            task = asyncio.create_task(emulator.run())
            while rig.charger.state.transaction_id is None:
                await asyncio.sleep(0.02)
            sent_real = time.monotonic()
            reply = await rig.send(*SEQUENCE)
            assert reply.ok, reply
            while not emulator.profile_log:
                await asyncio.sleep(0.001)
            latency_ms = (time.monotonic() - sent_real) * 1000
            t0 = emulator.profile_log[0][0]
            total = sum(d for _, _, d in SEQUENCE)
            end = t0 + total + TAIL_S
            while emulator.meter_log[-1][0] < end:
                await asyncio.sleep(0.05)
            bounds = [t0]
            for _, _, d in SEQUENCE:
                bounds.append(bounds[-1] + d)
            bounds.append(end)
            stack = [
                (emulator.register_at(b) - emulator.register_at(a)) / 1000
                for a, b in itertools.pairwise(bounds)
            ]
            log = np.array(emulator.meter_log)
            telemetry = [(t["TimeStamp"], t.get("EV_Rate_kW", 0.0)) for t in rig.telemetry]
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    base = baseline(need_kwh)
    print(f"load: {os.getloadavg()[0]:.1f}; {version}, clock {speed:g}x, EV wants {need_kwh} kWh")
    print(f"command to charger: {latency_ms:.1f} ms real")
    names = [f"{c}:{r}:{d}" for c, r, d in SEQUENCE] + ["released"]
    print(f"{'phase':<16}{'stack kWh':>12}{'model kWh':>12}{'ratio':>8}")
    for name, s, b in zip(names, stack, base, strict=True):
        ratio = s / b if b else float("nan")
        print(f"{name:<16}{s:12.4f}{b:12.4f}{ratio:8.4f}")
    print(f"{'total':<16}{sum(stack):12.4f}{sum(base):12.4f}{sum(stack) / sum(base):8.4f}")
    plot(log, telemetry, t0, bounds, out)


def plot(
    log: np.ndarray, telemetry: list[tuple[float, float]], t0: float, bounds: list[float], out: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, e = log[:, 0], log[:, 1]
    keep = t >= t0 - 300
    t, e = t[keep], e[keep]
    power = np.diff(e) / np.diff(t) * 3.6  # Wh/s -> kW
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    ax1.step((t[1:] - t0) / 60, power, where="pre", label="charger (emulator model)")
    if telemetry:
        tt, rate = zip(*telemetry, strict=True)
        ax1.plot((np.array(tt) - t0) / 60, rate, ".", ms=3, label="agent telemetry EV_Rate_kW")
    for b in bounds:
        ax1.axvline((b - t0) / 60, color="grey", lw=0.5)
    ax1.set_ylabel("kW")
    ax1.legend(loc="upper right")
    ax2.plot((t - t0) / 60, (e - e[0]) / 1000)
    ax2.set_ylabel("metered kWh")
    ax2.set_xlabel("minutes after the command reached the charger")
    fig.suptitle("charge:7:1800, idle:0:900, charge:3:1800, then released (11 kW)")
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "evse_session.png", dpi=110)
    print(f"plot: {out / 'evse_session.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--version", default="ocpp2.0.1", choices=["ocpp1.6", "ocpp2.0.1"])
    parser.add_argument("--speed", type=float, default=120.0)
    parser.add_argument("--need", type=float, default=30.0, help="kWh the EV wants")
    parser.add_argument("--out", type=Path, default=Path("/tmp/evse-bench"))
    args = parser.parse_args()
    asyncio.run(run(args.version, args.speed, args.need, args.out))


if __name__ == "__main__":
    main()

"""Shared helpers of the UCM tests (imported by module name; no package)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sef.agents.ucm import UCMAgent
from sef.clock import ScaledClock
from sef.ems import EMS, Event
from sef.emulators.waterheater import SGDEmulator, run_sgd_emulator
from sef.interface import DEMO_INTERFACE
from sef.protocols.cta2045 import LinkTiming
from support import wait_for

#: Link timing of the in-process rigs: every gap shortened in proportion so that, on a clock
#: running ~1000 times faster than real time, a command still reaches the SGD within about a
#: simulated minute (with the CTA-2045 values, 0.3-0.6 s real = 5-10 simulated minutes).
#: The process tests use the real CTA-2045 timing.
FAST = LinkTiming(
    ack_delay_s=0.005,
    ack_timeout_s=0.1,
    response_delay_s=0.01,
    response_timeout_s=1.0,
    inter_message_s=0.01,
    retry_delay_s=0.05,
)


def at(hhmm: str, day: str = "2026-07-01") -> float:
    """Unix time of ``day`` ``hhmm`` UTC."""
    return datetime.fromisoformat(f"{day}T{hhmm}:00+00:00").astimezone(UTC).timestamp()


@dataclass
class Sample:
    t: float  # clock s
    power_w: float
    state: int
    stored_wh: float
    electric_kwh: float


@dataclass
class Rig:
    clock: ScaledClock
    sgd: SGDEmulator
    ucm: UCMAgent
    ems: EMS
    telemetry: list[dict[str, Any]]
    samples: list[Sample] = field(default_factory=list)

    def last(self) -> dict[str, Any]:
        return self.telemetry[-1] if self.telemetry else {}

    async def until(self, clock_s: float) -> None:
        """Wait until the clock reads ``clock_s``."""
        await asyncio.sleep(max(0.0, self.clock.to_real(clock_s - self.clock.now())))

    async def shed_like(self, cmds: list[list[Any]]) -> None:
        replies = await self.ems.call("wh-1", DEMO_INTERFACE, "EnergyMethod", [cmds])
        assert replies and replies[0].ok, replies

    def energy_kwh(self, start: float, end: float) -> float:
        """Element energy between two clock times, from the samples, kWh."""
        before = [s for s in self.samples if s.t <= start]
        after = [s for s in self.samples if s.t >= end]
        assert before and after, "samples do not cover the interval"
        return after[0].electric_kwh - before[-1].electric_kwh


async def _sample(sgd: SGDEmulator, clock: ScaledClock, samples: list[Sample]) -> None:
    while True:
        sgd.advance()
        m = sgd.model
        samples.append(
            Sample(
                clock.now(),
                sgd.power_w,
                sgd.state,
                float(m.present_energy_storage_wh[0]),
                float(m.electric_kwh[0]),
            )
        )
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def rig(
    broker_url: str,
    *,
    speed: float,
    start: float,
    sgd_kwargs: dict[str, Any] | None = None,
    poll_s: float = 0.25,
) -> AsyncIterator[Rig]:
    """SGD emulator (in-process, on a real pty) ⇄ UCM ⇄ Mosquitto ⇄ EMS, one scaled clock."""
    clock = ScaledClock(speed=speed, sim_start=start)
    sgd = SGDEmulator(clock, timing=FAST, **(sgd_kwargs or {}))
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    emulator = asyncio.create_task(
        run_sgd_emulator(pty=True, emulator=sgd, on_ready=ready.set_result)
    )
    path = await asyncio.wait_for(ready, 5.0)
    telemetry: list[dict[str, Any]] = []

    def keep(event: Event) -> None:
        if event.kind == "property" and event.detail == f"{DEMO_INTERFACE}.Telemetry":
            record = ems.registry.get(event.agent_id)
            assert record is not None
            value = record.prop(DEMO_INTERFACE, "Telemetry")
            telemetry.append({k: v[1] for k, v in value.items()})

    ems = EMS(broker_url, "ems-ucm", clock=clock, on_event=keep)
    ucm = UCMAgent(
        "wh-1", broker_url, serial_port=path, poll_s=poll_s, clock=clock, keepalive_s=2, timing=FAST
    )
    r = Rig(clock, sgd, ucm, ems, telemetry)
    sampler = asyncio.create_task(_sample(sgd, clock, r.samples))
    await ems.start()
    await ucm.start()
    try:
        await wait_for(lambda: r.last().get("Link") == "up" and "Power_W" in r.last(), 8.0)
        yield r
    finally:
        await ucm.stop()
        await ems.stop()
        for task in (sampler, emulator):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class EmulatorProcess:
    """``sef emulate waterheater`` as a child process; ``where`` is what it printed."""

    def __init__(self, *args: str, clock: str) -> None:
        env = {**os.environ, "SEF_CLOCK": clock, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sef", "emulate", "waterheater", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert "SGD emulator ready on" in line, line
        self.where = line.split()[-1]

    def kill(self) -> float:
        """SIGKILL; return time.monotonic() of the kill."""
        self.process.kill()
        killed = time.monotonic()
        self.process.wait(5)
        return killed

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

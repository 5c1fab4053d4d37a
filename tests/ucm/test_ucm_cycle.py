"""The UCM's poll cycle and what it sends at each (re)connection, against the SGD emulator
on a real pty.

* ``poll_s`` is the pause *after* a poll cycle, not its period: at ``poll_s`` = 1 with the
  CTA-2045 link timing one cycle (state, commodities, every 4th time the tank temperature,
  every 16th the temperature offset) starts every ~1.4–2.0 s (figures in docs/ucm.md).
* At every (re)connection the UCM re-asserts the running event: End Shed when none runs
  (the demo interface's idle), which ends an event the SGD was still running; the event
  itself, with its remaining duration, when one runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import statistics
import time
from collections.abc import AsyncIterator

from sef.agents.ucm import UCMAgent
from sef.clock import ScaledClock
from sef.emulators.waterheater import SGDEmulator, run_sgd_emulator
from sef.protocols import cta2045 as cta
from support import wait_for
from ucm_helpers import FAST

CURTAILED = {cta.OperationalState.RUNNING_CURTAILED, cta.OperationalState.IDLE_CURTAILED}
NORMAL = {cta.OperationalState.IDLE_NORMAL, cta.OperationalState.RUNNING_NORMAL}


@contextlib.asynccontextmanager
async def emulator(sgd: SGDEmulator) -> AsyncIterator[str]:
    """The in-process SGD emulator on a pty; yields the slave path."""
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_sgd_emulator(pty=True, emulator=sgd, on_ready=ready.set_result))
    try:
        yield await asyncio.wait_for(ready, 5.0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_poll_period_at_poll_s_1_with_cta2045_timing(broker_url: str) -> None:
    clock = ScaledClock(speed=1)
    sgd = SGDEmulator(clock)  # the CTA-2045 link timing on both sides
    async with emulator(sgd) as path:
        ucm = UCMAgent("wh-cycle", broker_url, serial_port=path, poll_s=1.0, clock=clock)
        starts: list[float] = []
        read = ucm.device.read

        async def timed_read() -> None:
            starts.append(time.monotonic())
            await read()

        ucm.device.read = timed_read  # type: ignore[method-assign]
        await ucm.start()
        try:
            await wait_for(lambda: len(starts) >= 9, 20.0)
        finally:
            await ucm.stop()
    periods = [b - a for a, b in itertools.pairwise(starts[1:])]  # the 1st has the heartbeat
    print(
        f"poll_s 1.0: cycle period min {min(periods):.2f} s, mean "
        f"{statistics.mean(periods):.2f} s, max {max(periods):.2f} s over {len(periods)}"
    )
    assert all(p > 1.0 for p in periods)  # the pause comes after the cycle's link time
    assert 1.1 < statistics.mean(periods) < 2.2, periods


async def test_end_shed_at_each_connection_ends_the_sgds_event(broker_url: str) -> None:
    clock = ScaledClock(speed=60)
    sgd = SGDEmulator(clock, timing=FAST)
    sgd.handle(cta.Shed(0))  # an event the SGD still runs (e.g. from before a UCM restart)
    assert sgd.state in CURTAILED
    async with emulator(sgd) as path:
        ucm = UCMAgent(
            "wh-endshed", broker_url, serial_port=path, poll_s=0.2, clock=clock, timing=FAST
        )
        await ucm.start()
        try:
            await wait_for(lambda: ucm.status.healthy, 5.0)
            assert sgd.received.count(cta.EndShed()) == 1  # sent at connection...
            assert sgd.state in NORMAL  # ... it ended the SGD's shed
            await ucm.energy_method([("shed", 0, 3600)])
            await wait_for(lambda: sgd.state in CURTAILED, 2.0)
            ucm.retarget(serial_port=path)  # a reconnection with an event running
            await wait_for(lambda: sgd.received.count(cta.Shed(0x2B)) == 2, 5.0)
            resent = [m for m in sgd.received if isinstance(m, cta.Shed)][-1]
            assert resent == cta.Shed(0x2B)  # the running shed, ~1 h left, no End Shed
            assert sgd.received.count(cta.EndShed()) == 1 and sgd.state in CURTAILED
            await ucm.energy_method([("idle", 0, 0)])
            await wait_for(lambda: sgd.received.count(cta.EndShed()) == 2, 2.0)
            ucm.retarget(serial_port=path)  # a reconnection with nothing running
            await wait_for(lambda: sgd.received.count(cta.EndShed()) == 3, 5.0)
        finally:
            await ucm.stop()

"""Event sequences of ``edu.pdx.powerlab.demo.EnergyMethod`` run in time (their meaning and
rules are :mod:`sef.interface`'s :func:`~sef.interface.parse_events`).

``EnergyMethod(cmds: a(snn))`` carries ``(cmd, rate_kW, duration_s)`` events executed in
order from now; a duration of 0 means "until the next command". A new call replaces the
running sequence. When the last timed event ends, the device goes back to ``idle``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence

from sef.clock import Clock
from sef.interface import IDLE_EVENT, EnergyEvent

__all__ = ["EventSequencer"]

log = logging.getLogger("sef.agent.sequence")


Apply = Callable[[EnergyEvent], Awaitable[None] | None]


class EventSequencer:
    """Runs a list of events on a clock, calling ``apply`` at each event start.

    Args:
        clock: the clock durations are measured on.
        apply: called with each event as it starts, and with ``idle`` when a timed
            sequence runs out.
    """

    def __init__(self, clock: Clock, apply: Apply) -> None:
        self.clock = clock
        self.apply = apply
        self.current: EnergyEvent = IDLE_EVENT
        self.current_started: float | None = None
        self.current_ends: float | None = None
        self.remaining: list[EnergyEvent] = []
        self._task: asyncio.Task[None] | None = None
        self._first_applied: asyncio.Future[None] | None = None

    async def replace(self, events: Sequence[EnergyEvent]) -> None:
        """Stop the running sequence and start ``events`` now; return once the first event
        has been applied (or its application failed)."""
        await self.cancel()
        self.remaining = list(events)
        self._first_applied = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(), name="energy-sequence")
        await asyncio.wait([self._first_applied, self._task], return_when=asyncio.FIRST_COMPLETED)

    async def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _start(self, event: EnergyEvent, at: float) -> None:
        self.current = event
        self.current_started = at
        self.current_ends = at + event.duration_s if event.duration_s > 0 else None
        try:
            result = self.apply(event)
            if inspect.isawaitable(result):
                await result
        except Exception:  # a device error must not end the sequence machinery
            log.exception("applying %s failed", event.as_tuple())
        finally:
            if self._first_applied is not None and not self._first_applied.done():
                self._first_applied.set_result(None)

    async def _run(self) -> None:
        at = self.clock.now()  # event boundaries are absolute, so waits never drift
        while self.remaining:
            event = self.remaining.pop(0)
            await self._start(event, at)
            if event.duration_s == 0:
                return  # open-ended: stays until the next command (a new call)
            at += event.duration_s
            await self.clock.sleep(at - self.clock.now())
        await self._start(IDLE_EVENT, at)

"""The control side of an EMS, run only while its worker is the leader (:mod:`sef.ems._leader`).

:class:`LeaderDuties` holds the activities that act on the fleet on their own (the live
controller, the OpenADR VEN, retention, ...). It starts them when the worker becomes
leader and cancels them (``asyncio`` cancellation, then each service's ``stop``) the
moment it stops being leader; they start again, afresh, at the next term. Ingest, the
API and operator commands are not duties: they run on every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from sef.ems._leader import Leadership

__all__ = ["LeaderDuties"]

log = logging.getLogger("sef.ems.leader")

STOP_TIMEOUT_S = 15.0
"""Longest wait for one duty to stop, s (then it is left behind, logged)."""


@dataclass(slots=True)
class _Duty:
    name: str
    run: Callable[[], Coroutine[Any, Any, Any]] | None = None
    start: Callable[[], Awaitable[Any]] | None = None
    stop: Callable[[Any], Awaitable[None]] | None = None
    task: asyncio.Task[Any] | None = None
    handle: Any = None


class LeaderDuties:
    """Runs the registered duties while ``leadership`` says this worker leads.

    Args:
        leadership: the election (:class:`~sef.ems._leader.LeaderLock`, or
            :class:`~sef.ems._leader.AlwaysLeader` for a single EMS).
        on_change: called with ``True`` once the duties started for a term, ``False`` once
            they stopped (e.g. to print it).
    """

    def __init__(
        self, leadership: Leadership, on_change: Callable[[bool], None] | None = None
    ) -> None:
        self.leadership = leadership
        self.on_change = on_change
        self._duties: list[_Duty] = []
        self.running = False
        """The duties run now (a term began and has not ended)."""
        self.starts = 0
        """Terms the duties were started for."""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        leadership.add_listener(lambda _leader: self._wake.set())

    def add(self, name: str, run: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """A coroutine (made by ``run()`` at each term) run while leader, cancelled when
        the term ends; if it ends on its own it is not restarted within the term."""
        self._duties.append(_Duty(name, run=run))

    def add_service(
        self,
        name: str,
        start: Callable[[], Awaitable[Any]],
        stop: Callable[[Any], Awaitable[None]],
    ) -> None:
        """A service: ``handle = await start()`` at each term, ``await stop(handle)`` at
        its end."""
        self._duties.append(_Duty(name, start=start, stop=stop))

    async def start(self) -> None:
        """Start the duties now if leader, then follow the leadership."""
        await self._reconcile()
        self._task = asyncio.create_task(self._follow(), name="leader duties")

    async def close(self) -> None:
        """Stop following and stop the duties."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._stop_all()

    async def _follow(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._reconcile()
            except Exception:
                log.exception("leader duties: reconcile failed")

    async def _reconcile(self) -> None:
        if self.leadership.is_leader and not self.running:
            await self._start_all()
        elif not self.leadership.is_leader and self.running:
            await self._stop_all()

    async def _start_all(self) -> None:
        self.running = True
        self.starts += 1
        for duty in self._duties:
            if duty.run is not None:
                duty.task = asyncio.create_task(duty.run(), name=duty.name)
                duty.task.add_done_callback(_log_end)
            elif duty.start is not None:
                try:
                    duty.handle = await duty.start()
                except Exception:
                    log.exception("leader duty %s failed to start", duty.name)
        log.info("leader duties started: %s", ", ".join(d.name for d in self._duties) or "none")
        if self.on_change is not None:
            self.on_change(True)

    async def _stop_all(self) -> None:
        if not self.running:
            return
        self.running = False
        for duty in reversed(self._duties):
            task, duty.task = duty.task, None
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(task, STOP_TIMEOUT_S)
            handle, duty.handle = duty.handle, None
            if handle is not None and duty.stop is not None:
                try:
                    await asyncio.wait_for(duty.stop(handle), STOP_TIMEOUT_S)
                except Exception:
                    log.exception("leader duty %s failed to stop", duty.name)
        log.info("leader duties stopped")
        if self.on_change is not None:
            self.on_change(False)


def _log_end(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("leader duty %s failed", task.get_name(), exc_info=exc)

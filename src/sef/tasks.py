"""Background tasks that are never lost silently, and long loops that share the event loop.

``asyncio.create_task`` without a kept reference can be garbage-collected mid-run, and a
task whose exception nobody retrieves fails without a trace. :class:`TaskSet` keeps its
tasks, logs the failure of any of them with its name, and cancels and awaits them all on
:meth:`TaskSet.close` without swallowing its caller's own cancellation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

__all__ = ["SLICE_S", "TaskSet", "TimeSlice"]

log = logging.getLogger("sef.tasks")

RECANCEL_S = 0.5
"""A task still running this long (real s) after its cancellation is cancelled again."""


SLICE_S = 0.02
"""Longest run, real s, a :class:`TimeSlice` loop holds the event loop between yields."""


class TimeSlice:
    """Yield to the event loop once a long synchronous loop has held it ``slice_s``.

    A count ("yield every 100 items") bounds the work between yields, not the time: on a
    loaded machine 100 items took over 1 s, and MQTT keepalives, telemetry and the API
    wait that long. ``await slice.pause()`` in the loop body yields only when ``slice_s``
    real seconds have passed since the last yield, so the cost is one clock read per item.

    Args:
        slice_s: the longest hold, real s.
    """

    def __init__(self, slice_s: float = SLICE_S) -> None:
        self.slice_s = slice_s
        self.yields = 0
        """How many times this slice yielded."""
        self._since = time.monotonic()

    async def pause(self) -> None:
        """Yield (``asyncio.sleep(0)``) if the loop was held ``slice_s`` or longer."""
        if time.monotonic() - self._since >= self.slice_s:
            await asyncio.sleep(0)
            self.yields += 1
            self._since = time.monotonic()


class TaskSet:
    """A set of fire-and-forget tasks that logs failures and cancels them all on close.

    Args:
        owner: name used in log lines (e.g. an agent id).
    """

    def __init__(self, owner: str = "") -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        """Start ``coro`` as a task that this set keeps until it ends."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error(
                "%s: background task %s failed: %s: %s",
                self.owner or "sef",
                task.get_name(),
                type(exc).__name__,
                exc,
                exc_info=exc,
            )

    async def close(self) -> None:
        """Cancel every task and wait for them to end.

        A task's own failure is logged (by :meth:`spawn`'s callback), never raised here;
        a cancellation of the caller itself still propagates.
        """
        pending = set(self._tasks)
        for task in pending:
            task.cancel()
        while pending:
            # a library may swallow a cancellation (pymodbus does, mid-request): cancel again
            _, pending = await asyncio.wait(pending, timeout=RECANCEL_S)
            for task in pending:
                log.debug("%s: task %s ignored its cancellation; cancelling again",
                          self.owner or "sef", task.get_name())  # fmt: skip
                task.cancel()

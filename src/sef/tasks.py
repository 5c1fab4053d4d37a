"""Background tasks that are never lost silently.

``asyncio.create_task`` without a kept reference can be garbage-collected mid-run, and a
task whose exception nobody retrieves fails without a trace. :class:`TaskSet` keeps its
tasks, logs the failure of any of them with its name, and cancels and awaits them all on
:meth:`TaskSet.close` without swallowing its caller's own cancellation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["TaskSet"]

log = logging.getLogger("sef.tasks")

RECANCEL_S = 0.5
"""A task still running this long (real s) after its cancellation is cancelled again."""


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

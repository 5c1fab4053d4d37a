"""TaskSet: failures are logged with the task's name, close cancels, the caller's cancel wins."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sef.tasks import TaskSet


async def test_failure_is_logged_with_the_task_name(caplog: pytest.LogCaptureFixture) -> None:
    tasks = TaskSet("agent-7")

    async def boom() -> None:
        raise RuntimeError("device gone")

    with caplog.at_level(logging.ERROR, logger="sef.tasks"):
        task = tasks.spawn(boom(), name="poll")
        await asyncio.wait([task])
        await asyncio.sleep(0)
    assert len(tasks) == 0
    assert "agent-7: background task poll failed: RuntimeError: device gone" in caplog.text


async def test_close_cancels_running_tasks() -> None:
    tasks = TaskSet()
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    task = tasks.spawn(forever())
    await started.wait()
    await tasks.close()
    assert task.cancelled()
    assert len(tasks) == 0


async def test_close_does_not_swallow_the_callers_cancellation() -> None:
    tasks = TaskSet()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(3600)  # ignores the first cancel for a long time

    tasks.spawn(stubborn())
    await asyncio.sleep(0)
    closer = asyncio.create_task(tasks.close())
    await asyncio.sleep(0.01)
    closer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closer


async def test_close_cancels_again_a_task_that_swallowed_its_cancellation() -> None:
    """A library (pymodbus) swallows a cancellation mid-request; close() must still end."""
    tasks = TaskSet()
    swallowed = 0

    async def swallower() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # the first one is lost, as inside a library

    task = tasks.spawn(swallower())
    await asyncio.sleep(0)
    await asyncio.wait_for(tasks.close(), 3.0)
    assert swallowed == 1 and task.cancelled()

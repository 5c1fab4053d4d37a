"""TaskSet: failures are logged with the task's name, close cancels, the caller's cancel wins;
TimeSlice: a long loop yields by elapsed time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import pytest

from sef.tasks import TaskSet, TimeSlice


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


# -- TimeSlice ---------------------------------------------------------------------------


async def test_time_slice_yields_only_once_its_slice_has_passed() -> None:
    never = TimeSlice(slice_s=3600.0)
    always = TimeSlice(slice_s=0.0)
    for _ in range(50):
        await never.pause()
        await always.pause()
    assert never.yields == 0
    assert always.yields == 50


async def test_a_long_loop_with_a_time_slice_lets_other_tasks_run() -> None:
    """A loop of 30 ms busy items with a 10 ms slice yields after every item: a task
    started beside it runs between items, not after the loop (without pause: ran = 0)."""
    ran = 0
    seen_by_item: list[int] = []

    async def other() -> None:
        nonlocal ran
        while True:
            ran += 1
            await asyncio.sleep(0)

    task = asyncio.ensure_future(other())
    await asyncio.sleep(0)
    pace = TimeSlice(slice_s=0.01)
    for _ in range(5):
        end = time.monotonic() + 0.03
        while time.monotonic() < end:
            pass
        seen_by_item.append(ran)
        await pace.pause()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert pace.yields == 5
    assert seen_by_item == sorted(seen_by_item) and seen_by_item[-1] > seen_by_item[0]

"""The backfill buffer (``sef.agents._backfill``) on its own: bounded and ordered (hypothesis),
updates whose PUBACK never came rejoin it in production order, one warning per outage,
and a flush that is paced and stops (keeping the rest) when it cannot publish."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sef.agents._backfill import FLUSH_BATCH, Backfill, BufferedUpdate
from sef.bus import BusError


def update(n: int) -> BufferedUpdate:
    return BufferedUpdate("t/p", "i", "P", n, float(n))


@given(limit=st.integers(0, 40), count=st.integers(0, 120))
def test_keeps_the_newest_in_order_and_counts_the_rest(limit: int, count: int) -> None:
    buffer = Backfill("a", limit)
    for n in range(count):
        buffer.keep(update(n))
        assert len(buffer) <= limit
    assert [u.value for u in buffer.buffered()] == list(range(max(0, count - limit), count))
    assert buffer.dropped == max(0, count - limit)


@settings(deadline=None)
@given(
    steps=st.lists(st.tuples(st.booleans(), st.sampled_from(["acked", "lost", "pending"]))),
    limit=st.integers(1, 30),
)
def test_lost_updates_rejoin_in_production_order(steps: list[tuple[bool, str]], limit: int) -> None:
    """Each step produces one update, sent (its future acked, failed or still pending when
    the connection ends) or kept offline; after the reconnection the buffer holds exactly
    the not acknowledged ones, in production order, the newest ``limit`` of them."""

    async def run() -> None:
        loop = asyncio.get_running_loop()
        buffer = Backfill("a", limit)
        offline: list[int] = []  # the model: kept offline, trimmed as they come
        lost: list[int] = []
        dropped = 0
        for n, (online, fate) in enumerate(steps):
            u = update(n)
            if not online:
                buffer.keep(u)
                offline.append(n)
                if len(offline) > limit:
                    offline.pop(0)
                    dropped += 1
                continue
            acked: asyncio.Future[None] = loop.create_future()
            buffer.sent(acked, u)
            if fate == "acked":
                acked.set_result(None)
            else:
                lost.append(n)
                if fate == "lost":
                    acked.set_exception(BusError("lost"))
        buffer.reconnected()
        merged = sorted(offline + lost)
        dropped += max(0, len(merged) - limit)
        assert [u.value for u in buffer.buffered()] == merged[-limit:]
        assert buffer.dropped == dropped

    asyncio.run(run())


def test_one_warning_per_outage_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "sef.agent")
    buffer = Backfill("bat-9", limit=3)
    for n in range(10):
        buffer.keep(update(n))
    buffer.reconnected()
    buffer.reconnected()  # the next session without an outage: no second line
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "agent bat-9: 7 property updates dropped while disconnected (backfill buffer full "
        "at 3; the oldest go first)"
    ]
    assert buffer.dropped == 7


def test_flush_is_paced_and_marks_backfill() -> None:
    buffer = Backfill("a", rate_per_s=200.0)
    for n in range(3 * FLUSH_BATCH):
        buffer.keep(update(n))
    published: list[tuple[float, BufferedUpdate]] = []

    def publish(u: BufferedUpdate) -> bool:
        published.append((time.monotonic(), u))
        return True

    started = time.monotonic()
    assert asyncio.run(buffer.flush(publish, lambda: True)) == 3 * FLUSH_BATCH
    # 3 batches of 20 at 200/s: two pauses of 0.1 s between them
    assert time.monotonic() - started >= 2 * FLUSH_BATCH / 200.0 - 0.005
    assert [u.value for _, u in published] == list(range(3 * FLUSH_BATCH))
    assert all(u.backfill for _, u in published)
    assert len(buffer) == 0 and buffer.flushed == 3 * FLUSH_BATCH


def test_flush_stops_at_a_failure_and_keeps_the_rest() -> None:
    buffer = Backfill("a")
    for n in range(10):
        buffer.keep(update(n))
    calls = []

    def publish(u: BufferedUpdate) -> bool:
        calls.append(u.value)
        return len(calls) <= 4  # the connection drops at the fifth

    assert asyncio.run(buffer.flush(publish, lambda: True)) == 4
    assert [u.value for u in buffer.buffered()] == list(range(4, 10))
    assert asyncio.run(buffer.flush(publish, lambda: False)) == 0  # offline: nothing tried
    assert len(calls) == 5


def test_a_publish_error_stops_the_flush_and_keeps_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    buffer = Backfill("bat-e")
    for n in range(3):
        buffer.keep(update(n))

    def publish(u: BufferedUpdate) -> bool:
        raise OverflowError("no packet id left")

    assert asyncio.run(buffer.flush(publish, lambda: True)) == 0
    assert [u.value for u in buffer.buffered()] == [0, 1, 2]
    assert "agent bat-e: backfill stopped" in caplog.text


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        Backfill("a", limit=-1)
    with pytest.raises(ValueError):
        Backfill("a", rate_per_s=0)

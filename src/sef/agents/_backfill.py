"""Property updates an agent keeps while it has no connection, sent again after its next
birth (``docs/protocol.md`` §4.7, "backfill").

An update enters the buffer when it is produced while the agent is disconnected, or when
it was published but the broker's PUBACK had not come when the connection that carried it
ended. After the birth of the next session the agent publishes the buffer, oldest first,
as PropertyUpdates with ``"backfill": true``, their original ``ts``, the new session's
next seq numbers and the retain flag 0, at most :data:`FLUSH_RATE_PER_S` a second.

:class:`Backfill` is the buffer and the bookkeeping of updates in flight; the agent owns
the publishing (seq numbers, seals), see :class:`sef.agents.Agent`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BACKFILL_LIMIT", "FLUSH_BATCH", "FLUSH_RATE_PER_S", "Backfill", "BufferedUpdate"]

log = logging.getLogger("sef.agent")

BACKFILL_LIMIT = 3600
"""Updates an agent keeps by default (about an hour of 1 s telemetry of one property)."""
FLUSH_RATE_PER_S = 200.0
"""Most buffered updates an agent publishes a second after a reconnection."""
FLUSH_BATCH = 20
"""Buffered updates published back to back before the flush pauses (``FLUSH_BATCH /
FLUSH_RATE_PER_S`` s, 0.1 s by default)."""

_order = itertools.count()


@dataclass(slots=True)
class BufferedUpdate:
    """One property update as produced: its topic, property, JSON value and time.

    Attributes:
        topic: the property's topic.
        interface: interface name.
        name: property name.
        value: the JSON mapping of the value (what the payload carries).
        ts: when the update was produced, Unix s (the agent's clock); a backfilled copy
            keeps it.
        backfill: the update was already buffered once (it is sent as a backfill).
        order: production order (increasing), to merge buffered and lost updates.
    """

    topic: str
    interface: str
    name: str
    value: Any
    ts: float
    backfill: bool = False
    order: int = field(default_factory=lambda: next(_order))


def _acknowledged(future: asyncio.Future[None]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


class Backfill:
    """A bounded, ordered buffer of property updates, and the updates in flight.

    Args:
        agent_id: for log lines.
        limit: most updates kept; past it the oldest is dropped and counted.
        rate_per_s: most buffered updates published a second by :meth:`flush`.
    """

    def __init__(
        self, agent_id: str, limit: int = BACKFILL_LIMIT, rate_per_s: float = FLUSH_RATE_PER_S
    ) -> None:
        if limit < 0:
            raise ValueError(f"backfill limit must be 0 or more, got {limit}")
        if rate_per_s <= 0:
            raise ValueError(f"backfill rate must be positive, got {rate_per_s}")
        self.agent_id = agent_id
        self.limit = limit
        self.rate_per_s = rate_per_s
        self.dropped = 0
        """Updates dropped (the oldest, past :attr:`limit`) since the agent started."""
        self.flushed = 0
        """Buffered updates published again since the agent started."""
        self._dropped_in_outage = 0
        self._queue: deque[BufferedUpdate] = deque()
        self._in_flight: deque[tuple[asyncio.Future[None], BufferedUpdate]] = deque()

    def __len__(self) -> int:
        """Updates buffered (not counting those in flight)."""
        return len(self._queue)

    def buffered(self) -> list[BufferedUpdate]:
        """The buffered updates, oldest first (a copy)."""
        return list(self._queue)

    def keep(self, update: BufferedUpdate) -> None:
        """Buffer an update produced while disconnected (the newest)."""
        self._queue.append(update)
        self._trim()

    def sent(self, acked: asyncio.Future[None], update: BufferedUpdate) -> None:
        """Track a published update until ``acked`` (its PUBACK) resolves; one that fails
        is buffered again by :meth:`reconnected`."""
        in_flight = self._in_flight
        while in_flight and _acknowledged(in_flight[0][0]):
            in_flight.popleft()
        in_flight.append((acked, update))

    def reconnected(self) -> None:
        """A new session starts: buffer the updates whose PUBACK never came, in production
        order with those kept meanwhile; log the updates dropped during the outage."""
        lost = [update for acked, update in self._in_flight if not _acknowledged(acked)]
        for acked, _ in self._in_flight:
            if not acked.done():  # the bus fails these before it reconnects
                acked.cancel()
        self._in_flight.clear()
        if lost:
            self._queue = deque(sorted((*lost, *self._queue), key=lambda update: update.order))
            self._trim()
        if self._dropped_in_outage:
            log.warning(
                "agent %s: %d property updates dropped while disconnected (backfill "
                "buffer full at %d; the oldest go first)",
                self.agent_id,
                self._dropped_in_outage,
                self.limit,
            )
            self._dropped_in_outage = 0

    def discard(self) -> None:
        """Forget the updates in flight (the agent stops); the buffer stays."""
        for acked, _ in self._in_flight:
            if acked.done() and not acked.cancelled():
                acked.exception()  # retrieved: a lost publish is no error at shutdown
            else:
                acked.cancel()
        self._in_flight.clear()

    async def flush(
        self, publish: Callable[[BufferedUpdate], bool], connected: Callable[[], bool]
    ) -> int:
        """Publish the buffer oldest first with ``publish`` (which returns whether it could),
        at most :attr:`rate_per_s` a second, while ``connected()``; stop at the first
        failure (or error, logged) and keep the rest. Returns how many were published."""
        pause_s = FLUSH_BATCH / self.rate_per_s
        loop = asyncio.get_running_loop()
        sent = 0
        while self._queue and connected():
            started = loop.time()
            for _ in range(min(FLUSH_BATCH, len(self._queue))):
                if not connected():
                    return sent
                update = self._queue[0]
                update.backfill = True
                try:
                    published = publish(update)
                except Exception:  # keep the rest for the next session
                    log.exception("agent %s: backfill stopped", self.agent_id)
                    return sent
                if not published:
                    return sent
                self._queue.popleft()
                sent += 1
                self.flushed += 1
            if self._queue:
                await asyncio.sleep(max(0.0, started + pause_s - loop.time()))
        return sent

    def _trim(self) -> None:
        excess = len(self._queue) - self.limit
        for _ in range(excess):
            self._queue.popleft()
        if excess > 0:
            self.dropped += excess
            self._dropped_in_outage += excess

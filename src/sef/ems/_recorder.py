"""Batched, acknowledged-after-commit recording of bus traffic into the store.

Each received message adds rows to the open batch and gets the batch's commit future; the
EMS acknowledges the MQTT message (PUBACK) only when that future is done. A crash before
the commit leaves the message unacknowledged in the broker's persistent session, so it
is delivered again after the restart; the store's unique key makes the second write a
no-op. Result: every message is stored exactly once.

While the database is down the recorder retries with backoff and acknowledges nothing;
the broker's in-flight window then fills and it stops sending (back pressure), keeping
messages queued in the session instead of dropping them. A batch still not committed when
the recorder stops has its future failed (:class:`~sef.ems.store.StoreError`): the bus
never acknowledges its messages, so the broker delivers them again to the next session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import orjson

from sef.ems._events import (
    AboutReceived,
    AgentEvent,
    Discovered,
    Gap,
    Offline,
    Online,
    PropertyChanged,
    StaleStatus,
)
from sef.ems._registry import AgentRecord, PropertyValue
from sef.ems.store import AgentRow, Batch, Store, StoreError, TelemetryIn

__all__ = ["Recorder", "agent_record", "agent_row"]

log = logging.getLogger("sef.ems.recorder")


def _to_json(value: object) -> str:
    """Compact JSON text of a decoded payload value (orjson: ~20x faster than json)."""
    return orjson.dumps(value).decode()


class Recorder:
    """Collects writes into batches and commits them in a worker thread.

    Args:
        store: the database.
        max_rows: commit when a batch holds this many rows.
        max_delay_s: commit at the latest this long (real s) after the first row.
    """

    def __init__(self, store: Store, *, max_rows: int = 2000, max_delay_s: float = 0.02) -> None:
        self.store = store
        self.max_rows = max_rows
        self.max_delay_s = max_delay_s
        self.batches = 0
        self.rows_written = 0
        self.duplicates = 0
        self.last_commit_s = 0.0
        self.commit_seconds_total = 0.0
        self.failures = 0
        self._batch = Batch()
        self._done: asyncio.Future[None] | None = None
        """The open batch's commit future."""
        self._committing: asyncio.Future[None] | None = None
        """The commit future of the batch being written."""
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="recorder")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Commit what is pending (waiting at most ``timeout_s``), then stop. The futures
        of rows still not committed fail with :class:`~sef.ems.store.StoreError`."""
        if self._task is None:
            return
        pending = [f for f in (self._committing, self._done) if f is not None]
        if pending:
            self._full.set()
            self._wake.set()
            _, late = await asyncio.wait(pending, timeout=timeout_s)
            if late:
                log.error(
                    "rows not committed within %.1f s at stop (store failures: %d): "
                    "their messages stay unacknowledged and are delivered again",
                    timeout_s,
                    self.failures,
                )
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self._done is not None:
            _fail(
                self._done,
                StoreError(f"{len(self._batch)} rows not committed: the recorder stopped"),
            )
            self._done = None

    # -- from registry events ---------------------------------------------------------
    def record(
        self, event: AgentEvent, record: AgentRecord, now: float
    ) -> asyncio.Future[None] | None:
        """Add what a registry event changed; return the commit future (None: nothing)."""
        if isinstance(event, PropertyChanged):
            entry = record.properties[event.key]
            return self.telemetry(
                TelemetryIn(
                    record.agent_id,
                    event.key,
                    entry.ts if entry.ts is not None else now,
                    entry.seq if entry.seq is not None else -1,
                    now,
                    _to_json(entry.value),
                )
            )
        if isinstance(event, (Online, Offline, StaleStatus, Gap)):
            self.event(record.agent_id, now, event.kind, str(event.detail))
            return self.agent(agent_row(record))
        if isinstance(event, (AboutReceived, Discovered)):
            return self.agent(agent_row(record))
        return None

    # -- adding rows --------------------------------------------------------------------
    def _future(self) -> asyncio.Future[None]:
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
            self._wake.set()
        if len(self._batch) >= self.max_rows:
            self._full.set()
        return self._done

    def telemetry(self, row: TelemetryIn) -> asyncio.Future[None]:
        self._batch.telemetry.append(row)
        return self._future()

    def agent(self, row: AgentRow) -> asyncio.Future[None]:
        self._batch.agents[row.agent_id] = row
        return self._future()

    def event(
        self, agent_id: str, ts: float, kind: str, detail: str | None
    ) -> asyncio.Future[None]:
        self._batch.events.append((agent_id, ts, kind, detail))
        return self._future()

    # -- committing ---------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._done is None:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self.max_delay_s)
            self._full.clear()
            batch, self._batch = self._batch, Batch()
            done, self._done = self._done, None
            self._committing = done
            try:
                await self._commit(batch)
            except BaseException as exc:  # stopped while the store refused the batch
                why = (
                    "the recorder stopped" if isinstance(exc, asyncio.CancelledError) else repr(exc)
                )
                _fail(done, StoreError(f"{len(batch)} rows not committed: {why}"))
                raise
            finally:
                self._committing = None
            if not done.done():
                done.set_result(None)

    async def _commit(self, batch: Batch) -> None:
        delay = 0.1
        while True:
            started = time.perf_counter()
            try:
                inserted = await asyncio.to_thread(self.store.write_batch, batch)
            except Exception as exc:  # database down or refusing: retry, ack nothing
                self.failures += 1
                log.error(
                    "store write of %d rows failed (%s); retrying in %.1f s", len(batch), exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self.last_commit_s = time.perf_counter() - started
            self.commit_seconds_total += self.last_commit_s
            self.batches += 1
            self.rows_written += inserted
            self.duplicates += len(batch.telemetry) - inserted
            return


def _fail(future: asyncio.Future[None], exc: BaseException) -> None:
    """Fail a commit future: what waits on it (the bus's acknowledgements) learns the
    rows were not stored."""
    if not future.done():
        future.set_exception(exc)
        future.add_done_callback(lambda f: f.exception())  # "never retrieved" is no news


def agent_row(record: AgentRecord) -> AgentRow:
    """The store row of a registry record."""
    return AgentRow(
        record.agent_id,
        record.online,
        record.bdseq,
        dict(record.about),
        dict(record.interfaces),
        list(record.groups),
        record.first_seen,
        record.last_seen,
        record.online_since,
        record.offline_since,
        record.offline_reason,
        record.gaps,
    )


def agent_record(
    row: AgentRow, props: dict[str, tuple[object, float | None, float]]
) -> AgentRecord:
    """A registry record rebuilt from the store."""
    return AgentRecord(
        row.agent_id,
        online=row.online,
        bdseq=row.bdseq,
        about=dict(row.about),
        interfaces=dict(row.interfaces),
        groups=list(row.groups),
        properties={k: PropertyValue(v, ts, rx) for k, (v, ts, rx) in props.items()},
        first_seen=row.first_seen,
        last_seen=row.last_seen,
        online_since=row.online_since,
        offline_since=row.offline_since,
        offline_reason=row.offline_reason,
        keepalive_s=None,
        gaps=row.gaps,
    )

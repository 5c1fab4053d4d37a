"""Batched, acknowledged-after-commit recording of bus traffic into the store.

Each received message adds rows to the open batch and gets the batch's commit future; the
EMS acknowledges the MQTT message (PUBACK) only when that future is done. A crash before
the commit leaves the message unacknowledged in the broker's persistent session, so it
is delivered again after the restart; the store's unique key (agent, property, sender
time) makes the second write a no-op. Result: every message is stored exactly once.
Backfilled samples (:class:`~sef.ems._events.PropertyBackfilled`, ``docs/protocol.md``
§4.7) are stored as history only, never as the property's last value.

While the database is down the recorder retries with backoff and acknowledges nothing;
the broker's in-flight window then fills and it stops sending (back pressure), keeping
messages queued in the session instead of dropping them. A batch still not committed when
the recorder stops has its future failed (:class:`~sef.ems.store.StoreError`): the bus
never acknowledges its messages, so the broker delivers them again to the next session.

Poison never blocks storage. Every row is checked against its columns before it enters a
batch (:mod:`sef.ems.store._checks`: 64-bit integers, text lengths, finite floats, JSON
size) and telemetry's sender time against a window around the EMS clock
(``max_future_s``, ``max_past_s``); a row that fails is *dead-lettered*: kept with its
reason in the store's ``dead_letters`` table, in the same transaction, and counted. Should
a batch still fail with a data error (:func:`~sef.ems.store.is_data_error`, not a
connection error), it is bisected: the halves are written separately until the rows the
database refuses are found and dead-lettered, and the rest is committed. Only connection
and server errors are retried.

:meth:`Recorder.health` says whether the store is advancing: not while a write is failing,
nor while rows have waited longer than ``stall_after_s``. When a write succeeds after
failures the recorder logs ``store recovered after N s, M rows written``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from sef.ems._events import (
    AboutReceived,
    AgentEvent,
    Discovered,
    Gap,
    Offline,
    Online,
    PropertyBackfilled,
    PropertyChanged,
    StaleStatus,
)
from sef.ems._records import AgentRecord, PropertyValue
from sef.ems.store import (
    AgentRow,
    Batch,
    DeadLetter,
    Rejected,
    Store,
    StoreError,
    TelemetryIn,
    is_data_error,
)
from sef.ems.store._checks import check_agent, check_event, check_telemetry, dead_letter

__all__ = ["MAX_FUTURE_S", "Recorder", "StoreHealth", "agent_record", "agent_row"]

log = logging.getLogger("sef.ems.recorder")


MAX_FUTURE_S = 300.0
"""Default: telemetry dated more than this after the EMS clock is refused, s. Five minutes
cover clocks that drift between NTP syncs; a later time is a wrong clock (or a forgery),
and would also pin the property's last value (a newer one never replaces it)."""

MAX_RETRY_DELAY_S = 2.0
"""Longest wait between two attempts to write a batch the database refused, real s."""


def _to_json(value: object) -> str:
    """Compact JSON text of a decoded payload value (orjson: ~20x faster than json)."""
    return orjson.dumps(value).decode()


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """Whether the store is advancing (see :meth:`Recorder.health`).

    ``oldest_pending_s``: age of the oldest row not yet committed, i.e. of the oldest
    message not yet acknowledged, real s (0 when none); ``failing_for_s``: how long
    writes have been failing, real s (``None`` when the last write succeeded).
    """

    ok: bool
    reason: str | None
    oldest_pending_s: float
    failing_for_s: float | None
    last_error: str | None


class Recorder:
    """Collects writes into batches and commits them in a worker thread.

    Args:
        store: the database.
        max_rows: commit when a batch holds this many rows.
        max_delay_s: commit at the latest this long (real s) after the first row.
        max_future_s: refuse (dead-letter) telemetry whose sender time is more than this
            after the EMS clock, s (``None``: no bound).
        max_past_s: refuse telemetry whose sender time is more than this before the EMS
            clock, s (``None``, the default: no bound; old rows do no harm, retention
            removes them).
        stall_after_s: :meth:`health` is degraded when a row has waited this long, real s.
    """

    def __init__(
        self,
        store: Store,
        *,
        max_rows: int = 2000,
        max_delay_s: float = 0.02,
        max_future_s: float | None = MAX_FUTURE_S,
        max_past_s: float | None = None,
        stall_after_s: float = 5.0,
    ) -> None:
        self.store = store
        self.max_rows = max_rows
        self.max_delay_s = max_delay_s
        self.max_future_s = max_future_s
        self.max_past_s = max_past_s
        self.stall_after_s = stall_after_s
        self.batches = 0
        self.rows_written = 0
        self.duplicates = 0
        self.last_commit_s = 0.0
        self.commit_seconds_total = 0.0
        self.failures = 0
        """Failed write attempts (each is retried; a refused row is dead-lettered)."""
        self.dead_letters: Counter[str] = Counter()
        """Rows refused and kept as dead letters, by category (out_of_range, future...)."""
        self.last_error: str | None = None
        self._failing_since: float | None = None
        """Monotonic time of the first failure of the current outage; None when writing."""
        self._open_since: float | None = None
        """Monotonic time the open batch got its first row."""
        self._committing_since: float | None = None
        """Monotonic time the batch being written got its first row."""
        self._batch = Batch()
        self._done: asyncio.Future[None] | None = None
        """The open batch's commit future."""
        self._committing: asyncio.Future[None] | None = None
        """The commit future of the batch being written."""
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start committing batches (a task of the running loop)."""
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

    # -- health -----------------------------------------------------------------------
    def oldest_pending_s(self, now: float | None = None) -> float:
        """Age of the oldest row not committed yet (its message is not acknowledged),
        real s; 0 when nothing waits."""
        now = time.monotonic() if now is None else now
        since = [t for t in (self._committing_since, self._open_since) if t is not None]
        return max(0.0, now - min(since)) if since else 0.0

    def health(self) -> StoreHealth:
        """Whether the store is advancing: degraded while writes fail, or while a row has
        waited more than ``stall_after_s`` for its commit."""
        now = time.monotonic()
        oldest = self.oldest_pending_s(now)
        failing_for = None if self._failing_since is None else now - self._failing_since
        reason = None
        if failing_for is not None:
            reason = (
                f"store writes failing for {failing_for:.1f} s "
                f"({self.failures} failures; last: {self.last_error})"
            )
        elif oldest > self.stall_after_s:
            reason = f"store not advancing: the oldest pending row waits for {oldest:.1f} s"
        return StoreHealth(reason is None, reason, oldest, failing_for, self.last_error)

    # -- from registry events ---------------------------------------------------------
    def record(
        self, event: AgentEvent, record: AgentRecord, now: float
    ) -> asyncio.Future[None] | None:
        """Add what a registry event changed; return the commit future (None: nothing).

        A :class:`PropertyChanged` adds a telemetry row that is also the property's last
        value; a :class:`PropertyBackfilled` a telemetry row only (history, ``backfill``)."""
        if isinstance(event, PropertyChanged):
            entry = record.properties[event.key]
            ts = entry.ts if entry.ts is not None else now
            seq = entry.seq if entry.seq is not None else -1
            return self._sample(record.agent_id, event.key, entry.value, ts, seq, now, False)
        if isinstance(event, PropertyBackfilled):
            seq = event.seq if event.seq is not None else -1
            return self._sample(record.agent_id, event.key, event.value, event.ts, seq, now, True)
        if isinstance(event, (Online, Offline, StaleStatus, Gap)):
            self.event(record.agent_id, now, event.kind, str(event.detail))
            return self.agent(agent_row(record))
        if isinstance(event, (AboutReceived, Discovered)):
            return self.agent(agent_row(record))
        return None

    def _sample(
        self,
        agent_id: str,
        key: str,
        value: object,
        ts: float,
        seq: int,
        now: float,
        backfill: bool,
    ) -> asyncio.Future[None]:
        """Add one telemetry sample (sender time ``ts`` and EMS time ``now``, Unix s)."""
        try:
            value_json = _to_json(value)
        except (TypeError, ValueError) as exc:  # orjson: lone surrogates, huge ints
            return self.refuse(
                dead_letter(
                    now,
                    "telemetry",
                    agent_id,
                    key,
                    "bad_json",
                    f"value: not storable as JSON ({exc})",
                    {"ts": repr(ts), "seq": repr(seq), "value": repr(value)},
                )
            )
        return self.telemetry(TelemetryIn(agent_id, key, ts, seq, now, value_json, backfill))

    # -- adding rows --------------------------------------------------------------------
    def _future(self) -> asyncio.Future[None]:
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
            self._open_since = time.monotonic()
            self._wake.set()
        if len(self._batch) >= self.max_rows:
            self._full.set()
        return self._done

    def telemetry(self, row: TelemetryIn) -> asyncio.Future[None]:
        """Add a telemetry row (checked first: a refused row is dead-lettered)."""
        try:
            check_telemetry(
                row.agent_id,
                row.key,
                row.ts,
                row.seq,
                row.received,
                row.value_json,
                max_future_s=self.max_future_s,
                max_past_s=self.max_past_s,
            )
        except Rejected as exc:
            return self.refuse(
                dead_letter(
                    row.received,
                    "telemetry",
                    row.agent_id,
                    row.key,
                    exc.category,
                    exc.reason,
                    _telemetry_payload(row),
                )
            )
        self._batch.telemetry.append(row)
        return self._future()

    def agent(self, row: AgentRow) -> asyncio.Future[None]:
        """Add (or replace, in the open batch) an agent's row, checked first."""
        values = row.values()
        try:
            check_agent(values)
        except Rejected as exc:
            return self.refuse(
                dead_letter(
                    row.last_seen if isinstance(row.last_seen, float) else 0.0,
                    "agent",
                    row.agent_id,
                    None,
                    exc.category,
                    exc.reason,
                    {k: repr(v) if isinstance(v, (int, float)) else v for k, v in values.items()},
                )
            )
        self._batch.agents[row.agent_id] = row
        return self._future()

    def event(
        self, agent_id: str, ts: float, kind: str, detail: str | None
    ) -> asyncio.Future[None]:
        """Add an agent event (online, offline, gap...), checked first."""
        try:
            check_event(agent_id, ts, kind, detail)
        except Rejected as exc:
            return self.refuse(
                dead_letter(
                    ts,
                    "event",
                    agent_id,
                    None,
                    exc.category,
                    exc.reason,
                    {"ts": repr(ts), "kind": kind, "detail": detail},
                )
            )
        self._batch.events.append((agent_id, ts, kind, detail))
        return self._future()

    def refuse(self, letter: DeadLetter) -> asyncio.Future[None]:
        """Keep a row that cannot be stored as a dead letter (committed with the batch, so
        its message is acknowledged once the letter is durable); count and log it."""
        self.dead_letters[letter.category] += 1
        log.warning(
            "dead letter (%s) from agent %s: %s", letter.category, letter.agent_id, letter.reason
        )
        self._batch.dead_letters.append(letter)
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
            self._committing_since, self._open_since = self._open_since, None
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
                self._committing_since = None
            if not done.done():
                done.set_result(None)

    async def _commit(self, batch: Batch) -> None:
        """Write ``batch``: retry connection errors (ack nothing meanwhile), bisect data
        errors down to the refused rows, which are dead-lettered."""
        delay = 0.1
        pieces = [batch]
        while pieces:
            piece = pieces[0]
            started = time.perf_counter()
            try:
                inserted = await asyncio.to_thread(self.store.write_batch, piece)
            except Exception as exc:
                if is_data_error(exc):  # poison: find it; retrying would fail forever
                    pieces[:1] = self._bisect(piece, exc)
                    continue
                # database down or refusing: retry, ack nothing
                self.failures += 1
                self.last_error = _first_line(exc)
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                log.error(
                    "store write of %d rows failed (%s); retrying in %.1f s",
                    len(piece),
                    self.last_error,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY_S)
                continue
            pieces.pop(0)
            self.last_commit_s = time.perf_counter() - started
            self.commit_seconds_total += self.last_commit_s
            self.batches += 1
            self.rows_written += inserted
            self.duplicates += len(piece.telemetry) - inserted
            if self._failing_since is not None:
                log.warning(
                    "store recovered after %.1f s, %d rows written (%d failed attempts so far)",
                    time.monotonic() - self._failing_since,
                    len(piece),
                    self.failures,
                )
                self._failing_since = None

    def _bisect(self, piece: Batch, exc: Exception) -> list[Batch]:
        """What to write instead of ``piece``, which the database refused for its data:
        its two halves, or, for a single row, that row as a dead letter."""
        if len(piece) > 1:
            first, second = piece.halves()
            return [first, second]
        reason = f"refused by the database: {_first_line(exc)}"
        if piece.dead_letters:  # cannot happen: dead letters are made storable
            log.error("dropped a dead letter the database refused (%s): %s", reason, piece)
            return []
        (item,) = piece.items()
        if isinstance(item, TelemetryIn):
            letter = dead_letter(
                item.received,
                "telemetry",
                item.agent_id,
                item.key,
                "db_rejected",
                reason,
                _telemetry_payload(item),
            )
        elif isinstance(item, AgentRow):
            letter = dead_letter(
                0.0, "agent", item.agent_id, None, "db_rejected", reason, repr(item.values())
            )
        else:
            agent_id, ts, kind, detail = item  # type: ignore[misc]
            letter = dead_letter(
                ts,
                "event",
                agent_id,
                None,
                "db_rejected",
                reason,
                {"ts": repr(ts), "kind": kind, "detail": detail},
            )
        self.dead_letters[letter.category] += 1
        log.warning(
            "dead letter (%s) from agent %s: %s", letter.category, letter.agent_id, letter.reason
        )
        return [Batch(dead_letters=[letter])]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def _telemetry_payload(row: TelemetryIn) -> dict[str, object]:
    """A refused telemetry row as JSON-able values (numbers as text: they may not fit)."""
    return {"ts": repr(row.ts), "seq": repr(row.seq), "value": row.value_json}


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
    row: AgentRow, props: Iterable[tuple[str, str, float | None, float]] = ()
) -> AgentRecord:
    """A registry record rebuilt from the store: ``row`` and the agent's last values as
    :meth:`Store.load_property_texts` gives them (key, JSON text, sender ts, received).

    As compact as a live record: About packed by :class:`AgentRecord`, each value decoded
    once and kept the way a received one is (:meth:`PropertyValue.from_payload`: a variant
    mapping packed, another object or array as its payload bytes, a scalar decoded). A
    value that does not decode is left out with a logged reason."""
    values: dict[str, PropertyValue] = {}
    for key, text, ts, received in props:
        try:
            value = _decode(text)
        except ValueError as exc:
            log.warning("agent %s: stored value of %s not decodable: %s", row.agent_id, key, exc)
            continue
        kind = type(value)
        payload = b'{"value":' + text.encode() + b"}" if kind is list or kind is dict else b""
        values[key] = PropertyValue.from_payload(payload, value, ts, received, None)
    return AgentRecord(
        row.agent_id,
        online=row.online,
        bdseq=row.bdseq,
        about=row.about,
        interfaces=row.interfaces,
        groups=row.groups,
        properties=values,
        first_seen=row.first_seen,
        last_seen=row.last_seen,
        online_since=row.online_since,
        offline_since=row.offline_since,
        offline_reason=row.offline_reason,
        keepalive_s=None,
        gaps=row.gaps,
    )


def _decode(text: str) -> Any:
    """A stored JSON text decoded: orjson, or :mod:`json` for what orjson refuses (an
    integer beyond 64 bits)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)

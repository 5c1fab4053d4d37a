"""The operator's side of the demand-response bridge: what the EMS API, the dashboard and
``sef openadr`` need from it (:class:`DrOperator`), and :class:`OperatorBoard`, which serves
that to the API as the EMS layer's :class:`~sef.ems._dr_board.DrBoard` and keeps the event
history in the EMS store (table ``dr_events``) so that it outlives the process.

Wiring, beside a running EMS::

    board = install_operator(ems, bridge)   # bridge: a DrOperator (sef.openadr.DrBridge)
    board.start()                           # writes changed records every flush_s
    ...
    await board.stop()                      # a last write, then off the EMS

The board finds changed records itself (it compares each record's fields with what it
wrote last), so the bridge only changes its :class:`DrHistory`; an API read writes pending
changes first, so the API never shows an older state than the bridge holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy.exc import SQLAlchemyError

from sef.clock import Clock
from sef.ems import EMS
from sef.ems._dr_board import OPTS, set_dr_board
from sef.ems.store import DrEventStore, Store
from sef.ems.store._dr_events import MAX_DR_EVENTS
from sef.openadr._adapter import AdapterStatus
from sef.openadr._history import DrHistory, EventRecord
from sef.openadr._model import EventKey, Opt

__all__ = ["DrOperator", "OperatorBoard", "install_operator"]

log = logging.getLogger("sef.openadr")

_FIELDS = tuple(f.name for f in dataclasses.fields(EventRecord) if f.name != "raw")


class DrOperator(Protocol):
    """What operators see of and ask of the bridge (``sef.openadr.DrBridge``)."""

    history: DrHistory

    def statuses(self) -> list[AdapterStatus]:
        """Every adapter's health, now."""
        ...

    def policy_json(self) -> dict[str, Any]:
        """The automatic opt-out policy, JSON-able (``OptPolicy.as_json``)."""
        ...

    def set_policy_json(self, data: dict[str, Any]) -> None:
        """Replace the policy (``OptPolicy.from_json``); it applies to the next events.

        Raises:
            ValueError: not a valid policy (the message says why); the policy is unchanged.
        """
        ...

    async def set_opt(self, source: str, event_id: str, opt: Opt, reason: str) -> EventRecord:
        """An operator's override of the newest version of an event: answer the VTN with
        ``opt``, stop (``optOut``) or start (``optIn``) what is sent for it, record it.

        Raises:
            KeyError: no such event.
            ValueError: the override cannot apply (an event that is over).
        """
        ...


def _fingerprint(record: EventRecord) -> tuple[Any, ...]:
    """What decides whether a record changed since it was written (``raw`` by identity)."""
    values = [getattr(record, name) for name in _FIELDS]
    clean = ["nan" if isinstance(v, float) and math.isnan(v) else v for v in values]
    return (*clean, id(record.raw), len(record.raw))


def _matches(
    record: EventRecord, source: str | None, status: Sequence[str] | None, program: str | None
) -> bool:
    return (
        (source is None or record.source == source)
        and (not status or record.status in status)
        and (program is None or record.program == program)
    )


def _newest_first(records: list[EventRecord]) -> list[EventRecord]:
    return sorted(records, key=lambda r: (r.received_s, r.modification), reverse=True)


class OperatorBoard:
    """Serves a :class:`DrOperator` to the EMS API (it is a :class:`sef.ems._dr_board.DrBoard`)
    and writes its history to ``store`` (none: the history lives in memory only).

    Args:
        operator: the bridge.
        store: the EMS store, or ``None``.
        clock: the EMS clock (``updated_s`` of the stored rows).
        flush_s: seconds between writes of changed records when started (real time).
    """

    def __init__(
        self, operator: DrOperator, *, store: Store | None, clock: Clock, flush_s: float = 1.0
    ) -> None:
        self.operator = operator
        self.events_store = DrEventStore(store) if store is not None else None
        self.clock = clock
        self.flush_s = flush_s
        self.written: dict[EventKey, tuple[Any, ...]] = {}
        self.refused: set[EventKey] = set()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    # -- persistence -------------------------------------------------------------------
    async def flush(self) -> int:
        """Write the records that changed since their last write; how many were written.
        A record the store cannot take is logged once and skipped; a store that is down is
        logged and retried at the next flush."""
        if self.events_store is None:
            return 0
        async with self._lock:
            changed: list[tuple[EventKey, tuple[Any, ...], dict[str, Any]]] = []
            for record in self.operator.history.records():
                mark = _fingerprint(record)
                if self.written.get(record.key) != mark:
                    changed.append((record.key, mark, record.as_json()))
            if not changed:
                return 0
            store, now = self.events_store, self.clock.now()
            try:
                try:
                    await asyncio.to_thread(store.upsert, [row for _, _, row in changed], now=now)
                except ValueError:  # one bad record: write the others one by one
                    for key, _, row in changed:
                        try:
                            await asyncio.to_thread(store.upsert, [row], now=now)
                        except ValueError as exc:
                            if key not in self.refused:
                                self.refused.add(key)
                                log.warning("event %s/%s not stored: %s", key[0], key[1], exc)
            except SQLAlchemyError as exc:
                log.warning("event history not stored (retried): %s", str(exc).splitlines()[0])
                return 0
            for key, mark, _ in changed:
                self.written[key] = mark
            return len(changed)

    async def restore(self, limit: int = MAX_DR_EVENTS) -> int:
        """Put the newest ``limit`` stored event versions that the history lacks into it
        (after a restart); how many. They count as written."""
        if self.events_store is None:
            return 0
        rows = await asyncio.to_thread(self.events_store.events, limit=limit)
        added = 0
        history = self.operator.history
        for row in reversed(rows):  # oldest first: the history keeps the newest last
            fields = {name: row[name] for name in (*_FIELDS, "raw")}
            if fields["start_s"] is None:  # stored as null: not a finite time
                fields["start_s"] = math.nan
            if fields["end_s"] is None:
                fields["end_s"] = math.inf  # an event of unknown length
            record = EventRecord(**fields)
            if history.get(record.key) is None:
                history.add(record)
                self.written[record.key] = _fingerprint(record)
                added += 1
        return added

    def start(self) -> None:
        """Write changed records every :attr:`flush_s` until :meth:`stop`."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="openadr-history")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            try:
                await self.flush()
            except Exception:  # never let the writer die: the next flush tries again
                log.exception("event history flush failed")

    async def stop(self) -> None:
        """Stop the periodic writes, after a last one."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    # -- the DrBoard protocol of the EMS API --------------------------------------------
    def status(self) -> dict[str, Any]:
        """Adapters and policy, JSON-able."""
        return {
            "adapters": [dataclasses.asdict(s) for s in self.operator.statuses()],
            "policy": self.operator.policy_json(),
        }

    async def events(
        self,
        *,
        source: str | None = None,
        status: Sequence[str] | None = None,
        program: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Event versions newest first, from the store when there is one (the history
        across restarts), else from memory."""
        limit = max(0, min(limit, MAX_DR_EVENTS))
        if self.events_store is not None:
            await self.flush()
            return await asyncio.to_thread(
                self.events_store.events,
                source=source,
                status=status,
                program=program,
                limit=limit,
            )
        found = [r for r in self.operator.history.records() if _matches(r, source, status, program)]
        return [r.as_json() for r in _newest_first(found)[:limit]]

    async def versions(self, source: str, event_id: str) -> list[dict[str, Any]]:
        """Every version of one event, newest first."""
        if self.events_store is not None:
            await self.flush()
            return await asyncio.to_thread(
                self.events_store.events, source=source, event_id=event_id, limit=MAX_DR_EVENTS
            )
        found = [
            r
            for r in self.operator.history.records()
            if r.source == source and r.event_id == event_id
        ]
        return [r.as_json() for r in _newest_first(found)]

    async def set_policy(self, data: dict[str, Any], by: str) -> dict[str, Any]:
        """Replace the policy; the policy now."""
        self.operator.set_policy_json(data)
        log.info("opt-out policy replaced by %s", by)
        return self.operator.policy_json()

    async def set_opt(
        self, source: str, event_id: str, opt: str, reason: str, by: str
    ) -> dict[str, Any]:
        """The operator's override; the event version after it (written to the store)."""
        if opt not in OPTS:
            raise ValueError(f"opt must be one of {', '.join(OPTS)}, got {opt!r}")
        words = f"{by}: {reason}" if reason else by  # the bridge adds "operator: "
        record = await self.operator.set_opt(source, event_id, Opt(opt), words)
        await self.flush()
        return record.as_json()


def install_operator(ems: EMS, operator: DrOperator, *, flush_s: float = 1.0) -> OperatorBoard:
    """Serve ``operator`` on ``ems``'s API (``/openadr/...``), its history kept in
    ``ems.store`` if it has one. Call :meth:`OperatorBoard.start` for the periodic writes
    and :meth:`OperatorBoard.stop` when the bridge stops (then
    ``sef.ems._dr_board.set_dr_board(ems, None)`` takes it off the API)."""
    board = OperatorBoard(operator, store=ems.store, clock=ems.clock, flush_s=flush_s)
    set_dr_board(ems, board)
    return board

"""The demand-response event history in the EMS store (table ``dr_events``, issue 15).

One row per event version (source, event id, modification) with its opt, status and
outcome, in the shape of :class:`sef.openadr.EventRecord` (``EventRecord.as_json()``): the
store knows only these JSON-able dicts, so the EMS layer does not import ``sef.openadr``.
A version written again replaces its row (an upsert), so the bridge can write a record at
every change. Times are Unix s on the EMS clock, powers kW.

Values are made storable before they are written: a non-finite float of a nullable column
(``start_s`` of an event with no end, a ``NaN`` delivered power) becomes ``null``, text
columns are cut to their length, and ``raw`` (the protocol's event) has its non-finite
numbers replaced by ``null`` and is replaced by a short note when its JSON exceeds
:data:`MAX_RAW_BYTES`. What cannot be stored (no event id, an id longer than 255
characters, a receive time that is not a finite number) raises :class:`ValueError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import sqlalchemy as sa

from sef.ems.store._schema import dr_events
from sef.ems.store._store import Store

__all__ = [
    "DR_EVENT_FIELDS",
    "MAX_DR_EVENTS",
    "MAX_RAW_BYTES",
    "DrEventStore",
    "json_safe",
]

DR_EVENT_FIELDS = (
    "source",
    "event_id",
    "modification",
    "program",
    "signal",
    "status",
    "opt",
    "reason",
    "received_s",
    "start_s",
    "end_s",
    "offset_s",
    "requested_kw",
    "delivered_kw",
    "dispatched",
    "agents",
    "raw",
)
"""The fields of a row, as :class:`sef.openadr.EventRecord` names them."""
MAX_DR_EVENTS = 1000
"""Most rows one :meth:`DrEventStore.events` call returns."""
MAX_RAW_BYTES = 256 * 1024
"""Largest ``raw`` event kept, bytes of JSON; a larger one is replaced by a note."""
_ID_CHARS = 255
_TEXT_CHARS = {"source": 32, "program": 255, "signal": 64, "status": 16, "opt": 8}
_NULLABLE_FLOATS = ("start_s", "end_s", "requested_kw", "delivered_kw")
_INT32 = 2**31 - 1
_INT64 = 2**63 - 1


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as strict JSON data: non-finite floats become ``None``, tuples lists,
    keys strings, other objects their ``str``; nesting deeper than 32 levels is cut
    (``"…"``)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= 32:
        return "…"
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, depth + 1) for v in value]
    return str(value)


def _float(value: Any, name: str, *, nullable: bool) -> float | None:
    number = None if value is None else float(value)
    if number is None or not math.isfinite(number):
        if nullable:
            return None
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


def _int(value: Any, name: str, bound: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > bound:
        raise ValueError(f"{name} must be an integer within ±{bound}, got {value!r}"[:200])
    return value


def storable(record: Mapping[str, Any], now: float) -> dict[str, Any]:
    """The row of ``record`` (an ``EventRecord.as_json()``) as the table takes it.

    Raises:
        ValueError: no event id or one longer than 255 characters, a receive time that is
            not finite, a count that is not an integer in range.
    """
    event_id = str(record.get("event_id") or "")
    if not event_id or len(event_id) > _ID_CHARS:
        raise ValueError(f"event id must be 1-{_ID_CHARS} characters, got {len(event_id)}")
    row: dict[str, Any] = {"event_id": event_id}
    for name, limit in _TEXT_CHARS.items():
        row[name] = str(record.get(name) or "")[:limit]
    row["reason"] = str(record.get("reason") or "")[:4000]
    row["modification"] = _int(record.get("modification", 0), "modification", _INT64)
    row["received_s"] = _float(record.get("received_s"), "received_s", nullable=False)
    row["offset_s"] = _float(record.get("offset_s", 0.0), "offset_s", nullable=True) or 0.0
    for name in _NULLABLE_FLOATS:
        row[name] = _float(record.get(name), name, nullable=True)
    row["dispatched"] = _int(record.get("dispatched", 0), "dispatched", _INT32)
    row["agents"] = _int(record.get("agents", 0), "agents", _INT32)
    raw = json_safe(record.get("raw") or {})
    size = len(orjson.dumps(raw))
    row["raw"] = raw if size <= MAX_RAW_BYTES else {"truncated": True, "bytes": size}
    row["updated_s"] = now
    return row


class DrEventStore:
    """The ``dr_events`` table of one :class:`~sef.ems.store.Store` (SQLite or
    PostgreSQL). Methods are synchronous: run them in a worker thread."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def upsert(self, records: Sequence[Mapping[str, Any]], *, now: float) -> int:
        """Write these event versions in one transaction, each replacing the stored row of
        its (source, event id, modification); ``now`` (EMS clock, Unix s) is their
        ``updated_s``. Returns how many rows were written (a version given twice counts
        once: the last one wins).

        Raises:
            ValueError: a record that cannot be stored (see :func:`storable`); nothing is
                written then.
        """
        rows: dict[tuple[str, str, int], dict[str, Any]] = {}
        for record in records:
            row = storable(record, now)
            rows[(row["source"], row["event_id"], row["modification"])] = row
        if not rows:
            return 0
        stmt = self.store._insert(dr_events)  # the dialect's INSERT (ON CONFLICT)
        keys = ["source", "event_id", "modification"]
        changed = [c.name for c in dr_events.columns if c.name not in (*keys, "id")]
        stmt = stmt.on_conflict_do_update(
            index_elements=keys, set_={name: getattr(stmt.excluded, name) for name in changed}
        )
        with self.store.engine.begin() as connection:
            connection.execute(stmt, list(rows.values()))
        return len(rows)

    def events(
        self,
        *,
        source: str | None = None,
        event_id: str | None = None,
        status: Sequence[str] | None = None,
        program: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Stored event versions, newest first (receive time, then modification), at most
        ``limit`` (capped at :data:`MAX_DR_EVENTS`); filters: ``source``, ``event_id``,
        ``status`` (any of these), ``program``, ``since`` (received at or after, Unix s).
        Each row has the fields of :data:`DR_EVENT_FIELDS` plus ``updated_s``."""
        query = sa.select(dr_events).order_by(
            dr_events.c.received_s.desc(), dr_events.c.modification.desc(), dr_events.c.id.desc()
        )
        if source is not None:
            query = query.where(dr_events.c.source == source)
        if event_id is not None:
            query = query.where(dr_events.c.event_id == event_id)
        if status:
            query = query.where(dr_events.c.status.in_(list(status)))
        if program is not None:
            query = query.where(dr_events.c.program == program)
        if since is not None:
            query = query.where(dr_events.c.received_s >= since)
        limit = max(0, min(int(limit), MAX_DR_EVENTS))
        with self.store.engine.connect() as connection:
            rows = connection.execute(query.limit(limit)).mappings().all()
        return [{k: v for k, v in row.items() if k != "id"} for row in rows]

    def count(self) -> int:
        """How many event versions are stored."""
        with self.store.engine.connect() as connection:
            query = sa.select(sa.func.count()).select_from(dr_events)
            return int(connection.execute(query).scalar_one())

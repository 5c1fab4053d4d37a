"""The event history: every event version the VEN received, its opt and its outcome, for
the API (``GET /openadr/events``), the dashboard and the CLI."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sef.openadr._model import EventKey

__all__ = ["DrHistory", "EventRecord"]

_KEY_FIELDS = frozenset({"source", "event_id", "modification"})


@dataclass
class EventRecord:
    """One event version and what became of it.

    Attributes:
        source: the adapter (``"oadr2b"``, ``"oadr3"``).
        event_id: the VTN's id.
        modification: its modification number.
        program: program / market context.
        signal: the signal the plan was made from (``""`` when none was usable).
        status: ``received``, ``scheduled``, ``active``, ``completed``, ``cancelled``,
            ``opted_out`` or ``failed``.
        opt: ``optIn`` / ``optOut``.
        reason: why (the mapping's or the policy's words, or a failure).
        received_s: when the EMS got it, Unix s on the EMS clock.
        start_s: scheduled start, Unix s.
        end_s: scheduled end, Unix s.
        offset_s: the random start offset drawn for it, s.
        requested_kw: the change of load asked for, kW (negative: reduction), or ``None``.
        delivered_kw: the change measured while it was active, kW, or ``None``.
        dispatched: ``EnergyMethod`` calls sent for it.
        agents: agents commanded.
        raw: the protocol's event, JSON-able.
    """

    source: str
    event_id: str
    modification: int
    program: str
    signal: str
    status: str
    opt: str
    reason: str
    received_s: float
    start_s: float
    end_s: float
    offset_s: float = 0.0
    requested_kw: float | None = None
    delivered_kw: float | None = None
    dispatched: int = 0
    agents: int = 0
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> EventKey:
        """``(source, event_id, modification)``."""
        return (self.source, self.event_id, self.modification)

    def as_json(self) -> dict[str, Any]:
        """A JSON-able dict (the API's and CLI's shape)."""
        return asdict(self)


class DrHistory:
    """The history in memory, newest last, at most ``limit`` records (the oldest go first).

    The bridge adds and updates records; the API and dashboard read them. Records are also
    indexed by ``(source, event_id)``, so :meth:`latest` and :meth:`versions` cost the
    number of versions of that event, not the size of the history (thousands of events
    cancelled at once must not stall the EMS loop).
    """

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._records: dict[EventKey, EventRecord] = {}
        self._by_event: dict[tuple[str, str], dict[int, EventRecord]] = {}

    def add(self, record: EventRecord) -> None:
        """Add a record, or replace the one with the same key."""
        self._forget(record.key)
        self._records[record.key] = record
        self._by_event.setdefault((record.source, record.event_id), {})[record.modification] = (
            record
        )
        while len(self._records) > self.limit:
            self._forget(next(iter(self._records)))

    def _forget(self, key: EventKey) -> None:
        """Drop one record (if there) from the list and the index."""
        if self._records.pop(key, None) is None:
            return
        versions = self._by_event.get((key[0], key[1]))
        if versions is not None:
            versions.pop(key[2], None)
            if not versions:
                del self._by_event[(key[0], key[1])]

    def get(self, key: EventKey) -> EventRecord | None:
        """The record of one event version."""
        return self._records.get(key)

    def update(self, key: EventKey, **changes: Any) -> EventRecord | None:
        """Change fields of a record; ``None`` if there is none for ``key``."""
        record = self._records.get(key)
        if record is None:
            return None
        for name, value in changes.items():
            if not hasattr(record, name):
                raise AttributeError(f"EventRecord has no field {name!r}")
            if name in _KEY_FIELDS:
                raise AttributeError(f"{name!r} is part of the record's key: add a new record")
            setattr(record, name, value)
        return record

    def latest(self, source: str, event_id: str) -> EventRecord | None:
        """The newest modification of an event."""
        versions = self._by_event.get((source, event_id))
        return versions[max(versions)] if versions else None

    def versions(self, source: str, event_id: str) -> list[EventRecord]:
        """Every recorded modification of an event, lowest modification first."""
        versions = self._by_event.get((source, event_id), {})
        return [versions[m] for m in sorted(versions)]

    def records(self) -> list[EventRecord]:
        """All records, oldest first."""
        return list(self._records.values())

"""The event history: every event version the VEN received, its opt and its outcome, for
the API (``GET /openadr/events``), the dashboard and the CLI."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sef.openadr._model import EventKey

__all__ = ["DrHistory", "EventRecord"]


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

    The bridge adds and updates records; the API and dashboard read them.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._records: dict[EventKey, EventRecord] = {}

    def add(self, record: EventRecord) -> None:
        """Add a record, or replace the one with the same key."""
        self._records.pop(record.key, None)
        self._records[record.key] = record
        while len(self._records) > self.limit:
            del self._records[next(iter(self._records))]

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
            setattr(record, name, value)
        return record

    def latest(self, source: str, event_id: str) -> EventRecord | None:
        """The newest modification of an event."""
        found = [r for k, r in self._records.items() if k[0] == source and k[1] == event_id]
        return max(found, key=lambda r: r.modification) if found else None

    def records(self) -> list[EventRecord]:
        """All records, oldest first."""
        return list(self._records.values())

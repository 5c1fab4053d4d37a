"""The rows the EMS store writes and reads, and its errors (:mod:`sef.ems.store`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa

from sef.ems.store._checks import DeadLetter

__all__ = [
    "AgentRow",
    "Batch",
    "EventRow",
    "StoreError",
    "TelemetryIn",
    "is_data_error",
    "normalize_url",
]


def _json(text: str) -> Any:
    """Decode a stored JSON text: orjson, or :mod:`json` for what orjson refuses (an
    integer beyond 64 bits, NaN in a row written by an older EMS)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


class StoreError(RuntimeError):
    """The database cannot be opened or used."""


def normalize_url(url: str) -> str:
    """SQLAlchemy URL for ``sqlite:///path`` or ``postgresql://...`` (psycopg 3 driver)."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith(("sqlite://", "postgresql+psycopg://")):
        return url
    raise StoreError(f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://...")


@dataclass(frozen=True, slots=True)
class TelemetryIn:
    """One property update to store; ``value_json`` is the JSON text of the value, ``ts``
    the sender time and ``received`` the EMS time (Unix s). ``backfill``: a sample the agent
    buffered while disconnected (history: never the property's last value)."""

    agent_id: str
    key: str
    ts: float
    seq: int
    received: float
    value_json: str
    backfill: bool = False


@dataclass(slots=True)
class AgentRow:
    """The stored state of one agent (see :class:`sef.ems.AgentRecord`)."""

    agent_id: str
    online: bool | None
    bdseq: int | None
    about: dict[str, Any]
    interfaces: dict[str, str]
    groups: list[str]
    first_seen: float
    last_seen: float
    online_since: float | None
    offline_since: float | None
    offline_reason: str | None
    gaps: int

    def values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


EventRow = tuple[str, float, str, str | None]
"""An agent event: agent id, EMS time (Unix s), kind, detail."""


@dataclass
class Batch:
    """Writes that go to the database in one transaction."""

    telemetry: list[TelemetryIn] = field(default_factory=list)
    agents: dict[str, AgentRow] = field(default_factory=dict)
    events: list[EventRow] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.telemetry) + len(self.agents) + len(self.events) + len(self.dead_letters)

    def items(self) -> list[TelemetryIn | AgentRow | EventRow | DeadLetter]:
        """Every row of the batch, in table order."""
        return [*self.telemetry, *self.agents.values(), *self.events, *self.dead_letters]

    @classmethod
    def of(cls, items: Sequence[TelemetryIn | AgentRow | EventRow | DeadLetter]) -> Batch:
        """A batch of these rows (as :meth:`items` lists them)."""
        batch = cls()
        for item in items:
            if isinstance(item, TelemetryIn):
                batch.telemetry.append(item)
            elif isinstance(item, AgentRow):
                batch.agents[item.agent_id] = item
            elif isinstance(item, DeadLetter):
                batch.dead_letters.append(item)
            else:
                batch.events.append(item)
        return batch

    def halves(self) -> tuple[Batch, Batch]:
        """The batch split in two (to find the row a database refuses by bisection)."""
        items = self.items()
        middle = len(items) // 2
        return Batch.of(items[:middle]), Batch.of(items[middle:])


def is_data_error(exc: BaseException) -> bool:
    """Whether a failed write was refused for its *data* (a value out of range, too long,
    not encodable...), so that writing the same rows again would fail again; not for the
    connection or the server (down, restarting, disk full, locked), which a retry cures."""
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return False
        return isinstance(exc, (sa.exc.DataError, sa.exc.IntegrityError))
    if isinstance(exc, sa.exc.StatementError):  # raised by the driver while binding values
        return exc.orig is not None and is_data_error(exc.orig)
    if isinstance(exc, (ConnectionError, OSError)):
        return False
    return isinstance(exc, (OverflowError, ValueError, TypeError, UnicodeError))

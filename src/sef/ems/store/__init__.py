"""The EMS store: SQLite (embedded, WAL) or PostgreSQL, chosen by the database URL."""

from sef.ems.store._checks import DeadLetter, Rejected
from sef.ems.store._store import (
    AgentRow,
    Batch,
    Store,
    StoreError,
    TelemetryIn,
    is_data_error,
    normalize_url,
)

__all__ = [
    "AgentRow",
    "Batch",
    "DeadLetter",
    "Rejected",
    "Store",
    "StoreError",
    "TelemetryIn",
    "is_data_error",
    "normalize_url",
]

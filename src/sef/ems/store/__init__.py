"""The EMS store: SQLite (embedded, WAL) or PostgreSQL, chosen by the database URL."""

from sef.ems.store._checks import DeadLetter, Rejected
from sef.ems.store._dr_events import DrEventStore
from sef.ems.store._store import (
    AgentRow,
    Batch,
    Store,
    StoreError,
    TelemetryIn,
    is_data_error,
    normalize_url,
)
from sef.ems.store._tokens import ROLES, ApiRole, TokenError, TokenRow, TokenStore, hash_token

__all__ = [
    "ROLES",
    "AgentRow",
    "ApiRole",
    "Batch",
    "DeadLetter",
    "DrEventStore",
    "Rejected",
    "Store",
    "StoreError",
    "TelemetryIn",
    "TokenError",
    "TokenRow",
    "TokenStore",
    "hash_token",
    "is_data_error",
    "normalize_url",
]

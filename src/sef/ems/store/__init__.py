"""The EMS store: SQLite (embedded, WAL) or PostgreSQL, chosen by the database URL."""

from sef.ems.store._store import AgentRow, Batch, Store, StoreError, TelemetryIn, normalize_url

__all__ = ["AgentRow", "Batch", "Store", "StoreError", "TelemetryIn", "normalize_url"]

"""EMS workers starting at once on a fresh PostgreSQL database (issue 16 item 5): each
opens the store, which migrates the schema; the migrations take turns (an advisory lock
per transaction) instead of failing on ``CREATE TABLE alembic_version`` (seen with two
``sef ems`` workers started together)."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

from sef.ems.store import Store
from sef.ems.store.pgserver import PostgresServer

WORKERS = 4


def open_store(db: str, barrier: threading.Barrier) -> str | None:
    """A worker's start: open (and migrate) the store, the moment all are ready."""
    barrier.wait()
    store = Store.open(db)
    try:
        return store.schema_version()
    finally:
        store.close()


def test_workers_open_a_fresh_store_at_once(pg_server: PostgresServer) -> None:
    for _ in range(3):  # a fresh database each round: the race is at the first migration
        db = pg_server.create_database(f"t_{uuid.uuid4().hex[:12]}")
        db += "?options=-c%20lock_timeout%3D30000"  # a lock wait fails the test, not hangs it
        barrier = threading.Barrier(WORKERS)
        with ThreadPoolExecutor(WORKERS) as pool:
            versions = list(pool.map(open_store, [db] * WORKERS, [barrier] * WORKERS))
        assert len(set(versions)) == 1 and versions[0] is not None, versions

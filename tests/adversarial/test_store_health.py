"""Defects 18 and 19 of issue 11 on SQLite: commits are synced, and a store that does not
advance shows in ``/health`` and ``/metrics``.

* Durable: the EMS acknowledges a message once its batch is committed, so the commit must
  survive a power loss. In WAL mode SQLite's ``synchronous=NORMAL`` (the store's setting
  before the fix) does not sync the WAL at commit; SQLite documents that such a commit
  "might roll back following a power loss or system crash". The store now runs with
  ``synchronous=FULL`` (``Store(durable=False)`` keeps NORMAL, for benches).
* Not advancing: another process holds the database's write lock, so the EMS's batch
  waits (SQLite's busy timeout) and nothing is committed. ``/health`` said ok; now it
  answers 503 ``degraded`` once a row has waited ``stall_after_s`` (5 s), with the age of
  the oldest unacknowledged message in ``/metrics``, and ok again once the lock is gone.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import sqlalchemy as sa
from store_stack import birth, publisher, start_ems, stored, stored_seqs, telemetry

from sef.ems.store import Store
from support import wait_for


def _pragma(store: Store, name: str) -> object:
    with store.engine.connect() as connection:
        return connection.execute(sa.text(f"PRAGMA {name}")).scalar()


def test_sqlite_commits_are_synced_to_disk(tmp_path: Path) -> None:
    durable = Store.open(f"sqlite:///{tmp_path / 'durable.db'}")
    relaxed = Store.open(f"sqlite:///{tmp_path / 'relaxed.db'}", durable=False)
    try:
        assert _pragma(durable, "journal_mode") == "wal"
        assert _pragma(durable, "synchronous") == 2, "FULL: the WAL is synced at every commit"
        assert _pragma(relaxed, "synchronous") == 1, "NORMAL, asked for"
    finally:
        durable.close()
        relaxed.close()


async def test_a_store_that_does_not_advance_degrades_health(
    broker_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "ems.db"
    store = Store.open(f"sqlite:///{path}")
    stack = await start_ems(broker_url, store)
    recorder = stack.ems.recorder
    assert recorder is not None
    client = await publisher(broker_url, "stall-source")
    locker = sqlite3.connect(path, timeout=1.0, isolation_level=None)
    try:
        birth(client, "slow-1")
        await wait_for(lambda: len(store.load_agents()) == 1, 5.0, step_s=0.05)
        assert (await stack.http.get("/health")).status_code == 200
        locker.execute("BEGIN IMMEDIATE")  # another process takes the write lock
        now = time.time()
        for seq in range(1, 21):
            telemetry(client, "slow-1", seq, now - 20 + seq)
        await asyncio.sleep(recorder.stall_after_s + 0.5)
        answer = await stack.http.get("/health")
        assert answer.status_code == 503, answer.text
        body = answer.json()
        assert body["status"] == "degraded"
        assert "store not advancing" in body["reason"], body
        assert body["store_status"]["oldest_pending_s"] >= recorder.stall_after_s
        metrics = (await stack.http.get("/metrics")).text
        assert "sef_store_ok 0.0" in metrics
        oldest = next(
            line for line in metrics.splitlines() if line.startswith("sef_store_oldest_pending")
        )
        assert float(oldest.split()[-1]) >= recorder.stall_after_s
        locker.execute("ROLLBACK")  # the lock is gone: the batch commits
        await stored(store, 20, 20.0)
        assert stored_seqs(store, "slow-1") == list(range(1, 21))
        await wait_for(lambda: recorder.health().ok, 5.0)
        answer = await stack.http.get("/health")
        assert answer.status_code == 200 and "reason" not in answer.json()
        assert "sef_store_oldest_pending_seconds 0.0" in (await stack.http.get("/metrics")).text
    finally:
        locker.close()
        await stack.stop()
        await client.stop()
        store.close()

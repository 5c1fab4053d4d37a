"""Store: schema migrations keep data; retention deletes and thins old telemetry (both DBs)."""

from __future__ import annotations

from importlib import resources

from alembic.script import ScriptDirectory

from sef.ems.store import Batch, Store, TelemetryIn

KEY = "edu.pdx.powerlab.demo.Telemetry"
DAY = 86400.0
NOW = 1_800_000_000.0
NEWEST = ScriptDirectory(str(resources.files("sef.ems.store") / "migrations")).get_current_head()
"""The newest schema revision (the last migration shipped)."""


def rows(agent: str, start: float, count: int, every_s: float) -> list[TelemetryIn]:
    return [
        TelemetryIn(agent, KEY, start + i * every_s, i, start + i * every_s, f'{{"n":["x",{i}]}}')
        for i in range(count)
    ]


def test_retention_deletes_and_thins_and_reopening_keeps_data(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        assert store.schema_version() == NEWEST
        # 10 days of one value a minute for two agents
        for agent in ("a", "b"):
            data = rows(agent, NOW - 10 * DAY, 10 * 1440, 60.0)
            for start in range(0, len(data), 2000):
                store.write_batch(Batch(telemetry=data[start : start + 2000]))
        assert store.count_telemetry() == 2 * 14_400
        done = store.apply_retention(NOW, keep_s=7 * DAY, raw_s=1 * DAY, every_s=900.0)
        # older than 7 days: gone; 1-7 days: one value per 15 min; last day: all
        assert done["deleted"] == 2 * 3 * 1440
        kept = store.telemetry("a", key=KEY)
        old = [r for r in kept if r["ts"] < NOW - DAY]
        recent = [r for r in kept if r["ts"] >= NOW - DAY]
        assert len(recent) == 1440
        assert len(old) == 6 * 96
        assert min(r["ts"] for r in kept) >= NOW - 7 * DAY
        # the kept value of a bucket is its last one (minute 14 of each quarter hour)
        assert all(round((r["ts"] % 900.0) / 60.0) == 14 for r in old)
        assert done["thinned"] == 2 * (6 * 1440 - 6 * 96)
        again = store.apply_retention(NOW, keep_s=7 * DAY, raw_s=1 * DAY, every_s=900.0)
        assert again == {"deleted": 0, "thinned": 0}, "idempotent"
    finally:
        store.close()
    reopened = Store.open(db_url)  # migrations at open are a no-op on a current schema
    try:
        assert reopened.schema_version() == NEWEST
        assert reopened.count_telemetry("a") == 1440 + 6 * 96
    finally:
        reopened.close()

"""The store keeps each telemetry sample once (issue 19; ``docs/protocol.md`` §4.7): its
identity is (agent, property, sender time), whatever the sequence number; backfilled
samples are history, never the last value; existing stores migrate (duplicates already
stored: the first kept). On SQLite and PostgreSQL (the ``db_url`` fixture)."""

from __future__ import annotations

import inspect
from importlib import resources

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from sef.cli import ems_command
from sef.ems._recorder import MAX_FUTURE_S, Recorder
from sef.ems.store import Batch, Rejected, Store, TelemetryIn
from sef.ems.store._checks import check_telemetry

KEY = "edu.pdx.powerlab.demo.Telemetry"
NOW = 1_800_000_000.0


def sample(
    ts: float, seq: int, value: int, *, backfill: bool = False, agent: str = "a"
) -> TelemetryIn:
    return TelemetryIn(agent, KEY, ts, seq, NOW, f'{{"n":{value}}}', backfill)


def rows(store: Store, agent: str = "a") -> list[tuple[float, int, object]]:
    return [(r["ts"], r["seq"], r["value"]) for r in store.telemetry(agent, key=KEY)]


def test_a_sample_arriving_twice_is_stored_once(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        assert store.schema_version() == "0007"
        assert store.write_batch(Batch([sample(10.0, 1, 1), sample(11.0, 2, 2)])) == 2
        # a late original and its backfilled copy; a rebirth's republication (new seq)
        later = [sample(10.0, 7, 1, backfill=True), sample(11.0, 3, 2), sample(12.0, 4, 3)]
        assert store.write_batch(Batch(later)) == 1
        # twice in one batch too
        assert store.write_batch(Batch([sample(13.0, 5, 4), sample(13.0, 9, 4)])) == 1
        assert rows(store) == [(10.0, 1, {"n": 1}), (11.0, 2, {"n": 2}), (12.0, 4, {"n": 3}),
                               (13.0, 5, {"n": 4})]  # fmt: skip
        assert store.count_telemetry() == 4
    finally:
        store.close()


def test_a_backfilled_sample_is_never_the_last_value(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        store.write_batch(Batch([sample(100.0, 1, 1)]))
        # older and newer backfilled samples (the newer one: a wrong clock; still history)
        store.write_batch(Batch([sample(50.0, 2, 2, backfill=True)]))
        store.write_batch(Batch([sample(200.0, 3, 3, backfill=True)]))
        assert store.load_properties() == {"a": {KEY: ({"n": 1}, 100.0, NOW)}}
        # an agent whose only samples are backfilled has no last value
        store.write_batch(Batch([sample(50.0, 4, 4, backfill=True, agent="b")]))
        assert "b" not in store.load_properties()
        assert [r[0] for r in rows(store)] == [50.0, 100.0, 200.0]
    finally:
        store.close()


def _migrated_to(url: str, revision: str) -> Store:
    store = Store(url)
    config = Config()
    config.set_main_option("script_location", str(resources.files("sef.ems.store") / "migrations"))
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    return store


def test_an_existing_store_migrates_keeping_the_first_copy(db_url: str) -> None:
    old = _migrated_to(db_url, "0005")
    try:
        # under 0005 the key was (agent_id, key, ts, seq): copies with other seqs got in
        stored = [("a", 10.0, 1, "1"), ("a", 10.0, 7, "2"), ("a", 11.0, 2, "3"),
                  ("b", 10.0, 1, "4"), ("a", 10.0, 9, "5"), ("a", 11.0, 8, "6")]  # fmt: skip
        with old.engine.begin() as connection:
            for agent, ts, seq, value in stored:
                connection.execute(
                    sa.text(
                        "INSERT INTO telemetry (agent_id, key, ts, seq, received, value, "
                        "downsampled) VALUES (:a, :k, :t, :s, 0, :v, false)"
                    ),
                    {"a": agent, "k": KEY, "t": ts, "s": seq, "v": value},
                )
        assert old.count_telemetry() == 6
    finally:
        old.close()
    store = Store.open(db_url)
    try:
        assert store.schema_version() == "0007"
        assert rows(store) == [(10.0, 1, 1), (11.0, 2, 3)]
        assert rows(store, "b") == [(10.0, 1, 4)]
        assert store.write_batch(Batch([sample(11.0, 20, 9), sample(12.0, 21, 9)])) == 1
        assert store.count_telemetry() == 4
        assert _range_query_uses_the_index(store)
    finally:
        store.close()


def _range_query_uses_the_index(store: Store) -> bool:
    """Whether a (agent, key, ts range) query is planned on the unique key's index."""
    query = (
        "SELECT ts, value FROM telemetry WHERE agent_id = 'a' AND key = 'k' AND ts >= 1 AND ts <= 2"
    )
    with store.engine.connect() as connection:
        if store.dialect == "postgresql":
            connection.exec_driver_sql("SET enable_seqscan = off")
            plan = " ".join(str(r[0]) for r in connection.exec_driver_sql(f"EXPLAIN {query}"))
            return "uq_telemetry_sample" in plan
        plan = " ".join(
            str(r[-1]) for r in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}")
        )
        return "USING INDEX" in plan and "ts>? AND ts<?" in plan


def test_the_defaults_let_an_hour_old_backfilled_sample_in() -> None:
    """Backfill may be hours old: neither the recorder's nor ``sef ems``'s default bounds
    the past (``--max-past-s`` unset); a bound set by an operator does."""
    recorder_default = inspect.signature(Recorder).parameters["max_past_s"].default
    option = inspect.signature(ems_command.ems).parameters["max_past_s"].default
    assert recorder_default is None and option.default is None
    an_hour_ago = NOW - 3600.0
    window = {"max_future_s": MAX_FUTURE_S}
    check_telemetry("a", KEY, an_hour_ago, 5, NOW, '{"n":1}', max_past_s=None, **window)
    with pytest.raises(Rejected) as refused:
        check_telemetry("a", KEY, an_hour_ago, 5, NOW, '{"n":1}', max_past_s=1800.0, **window)
    assert refused.value.category == "past"

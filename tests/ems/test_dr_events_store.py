"""The demand-response event history in the store (``dr_events``, issue 15): one row per
event version, upserted by (source, event id, modification); listed newest first with
filters and a bounded limit; values that cannot be stored as they are (NaN, infinity, a
huge raw event) are made storable, rows that cannot be stored at all are refused whole.
On SQLite and PostgreSQL (the ``db_url`` fixture)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from api_stack import ManualClock
from dr_operator_standin import StandInOperator, event
from sef.ems.store import DrEventStore, Store
from sef.ems.store._dr_events import MAX_DR_EVENTS, MAX_RAW_BYTES
from sef.openadr import EventRecord, OperatorBoard

T = 1_800_000_000.0


def record(event_id: str, modification: int = 0, **changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "source": "oadr2b",
        "event_id": event_id,
        "modification": modification,
        "program": "peak",
        "signal": "SIMPLE",
        "status": "scheduled",
        "opt": "optIn",
        "reason": "mapped",
        "received_s": T + modification,
        "start_s": T + 600,
        "end_s": T + 4200,
        "requested_kw": -12.5,
        "raw": {"eventID": event_id, "signals": [{"level": 2}]},
    }
    fields.update(changes)
    return EventRecord(**fields).as_json()


def test_versions_are_upserted_and_listed_newest_first(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        assert store.schema_version() == "0007"
        events = DrEventStore(store)
        assert events.upsert([record("e1"), record("e1", 1), record("e2", received_s=T + 5)],
                             now=T) == 3  # fmt: skip
        # the bridge writes a version again as it changes: the row is replaced, not added
        done = record("e1", 1, status="completed", delivered_kw=-11.0, dispatched=4, agents=2)
        assert events.upsert([done], now=T + 10) == 1
        assert events.count() == 3
        rows = events.events()
        assert [(r["event_id"], r["modification"]) for r in rows] == [
            ("e2", 0), ("e1", 1), ("e1", 0)
        ]  # fmt: skip
        assert rows[1]["status"] == "completed" and rows[1]["delivered_kw"] == -11.0
        assert rows[1]["dispatched"] == 4 and rows[1]["agents"] == 2
        assert rows[1]["updated_s"] == T + 10 and rows[2]["updated_s"] == T
        assert rows[2]["raw"] == {"eventID": "e1", "signals": [{"level": 2}]}
        assert set(rows[0]) == {*EventRecord.__dataclass_fields__, "updated_s"}
    finally:
        store.close()


def test_filters_and_the_bounded_limit(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        events = DrEventStore(store)
        batch = [
            record(f"e{i}", received_s=T + i, program="peak" if i % 2 else "eco",
                   status=("active", "opted_out", "completed")[i % 3])
            for i in range(12)
        ]  # fmt: skip
        batch.append(record("e0", source="oadr3", program="cap", received_s=T + 100))
        events.upsert(batch, now=T)
        assert [r["event_id"] for r in events.events(limit=3)] == ["e0", "e11", "e10"]
        assert {r["program"] for r in events.events(program="peak")} == {"peak"}
        assert len(events.events(program="peak")) == 6
        assert [r["source"] for r in events.events(event_id="e0")] == ["oadr3", "oadr2b"]
        assert [r["event_id"] for r in events.events(source="oadr3")] == ["e0"]
        active = events.events(status=["active", "opted_out"], source="oadr2b")
        assert len(active) == 8 and {r["status"] for r in active} == {"active", "opted_out"}
        assert [r["event_id"] for r in events.events(since=T + 10)] == ["e0", "e11", "e10"]
        assert events.events(program="none") == []
        assert len(events.events(limit=10**9)) == 13  # capped at MAX_DR_EVENTS, not refused
        assert MAX_DR_EVENTS == 1000 and events.events(limit=-5) == []
    finally:
        store.close()


def test_odd_values_are_made_storable(db_url: str) -> None:
    store = Store.open(db_url)
    try:
        events = DrEventStore(store)
        odd = record(
            "e%_*'; DROP TABLE dr_events; --",
            end_s=math.inf,
            requested_kw=math.nan,
            delivered_kw=-math.inf,
            program="p" * 1000,
            raw={"a": math.nan, "b": [math.inf, 1.5], (1, 2): ("x",)},
        )
        events.upsert([odd], now=T)
        (row,) = events.events()
        assert row["event_id"] == "e%_*'; DROP TABLE dr_events; --"
        assert row["end_s"] is None and row["requested_kw"] is None
        assert row["delivered_kw"] is None and row["start_s"] == T + 600
        assert row["program"] == "p" * 255
        assert row["raw"] == {"a": None, "b": [None, 1.5], "(1, 2)": ["x"]}
        # a wildcard is a plain string to the filters
        assert events.events(event_id="e%") == [] and events.events(program="p%") == []
        huge = record("e-huge", raw={"blob": "x" * (MAX_RAW_BYTES + 1)})
        events.upsert([huge], now=T)
        (stored,) = events.events(event_id="e-huge")
        assert stored["raw"]["truncated"] is True and stored["raw"]["bytes"] > MAX_RAW_BYTES
    finally:
        store.close()


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"event_id": ""}, "event id must be 1-255"),
        ({"event_id": "x" * 256}, "event id must be 1-255"),
        ({"received_s": math.nan}, "received_s must be a finite number"),
        ({"modification": 2**64}, "modification must be an integer"),
        ({"dispatched": 2**40}, "dispatched must be an integer"),
    ],
)
def test_a_row_that_cannot_be_stored_refuses_the_batch(
    db_url: str, changes: dict[str, Any], words: str
) -> None:
    store = Store.open(db_url)
    try:
        events = DrEventStore(store)
        with pytest.raises(ValueError, match=words):
            events.upsert([record("fine"), {**record("bad"), **changes}], now=T)
        assert events.count() == 0  # nothing written
    finally:
        store.close()


async def test_the_board_writes_changed_records_only_and_skips_unstorable_ones(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """sef.openadr.OperatorBoard over the store: a flush writes the records that changed
    since the last one; a record the store refuses is logged once and the others are
    written; the history comes back from the store after a restart."""
    store = Store.open(db_url)
    try:
        operator = StandInOperator(T)
        board = OperatorBoard(operator, store=store, clock=ManualClock(T))
        operator.history.add(event("a", T, start_in_s=60))
        operator.history.add(event("b", T, start_in_s=120, received_s=T + 1))
        assert await board.flush() == 2
        assert await board.flush() == 0  # nothing changed
        operator.history.update(("oadr2b", "a", 0), delivered_kw=math.nan)
        assert await board.flush() == 1 and await board.flush() == 0  # NaN is not "changed"
        operator.history.add(event("x" * 300, T, start_in_s=60, received_s=T + 2))
        operator.history.update(("oadr2b", "b", 0), status="active")
        assert await board.flush() == 2  # both handled: b written, the long id refused
        assert await board.flush() == 0
        refusals = [r for r in caplog.records if "not stored" in r.getMessage()]
        assert len(refusals) == 1 and "event id must be 1-255" in refusals[0].getMessage()
        rows = DrEventStore(store).events()
        assert [(r["event_id"], r["status"]) for r in rows] == [
            ("b", "active"), ("a", "scheduled")
        ]  # fmt: skip
        assert rows[1]["delivered_kw"] is None
        fresh = StandInOperator(T)
        again = OperatorBoard(fresh, store=store, clock=ManualClock(T))
        assert await again.restore() == 2
        assert [r.event_id for r in fresh.history.records()] == ["a", "b"]  # oldest first
        assert await again.flush() == 0
    finally:
        store.close()

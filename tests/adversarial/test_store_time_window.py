"""Defect 2 of issue 11: telemetry dated 2096 was stored as is.

A sender time in the far future would never be removed by retention and would pin the
property's last known value (a newer value never replaces it). Now telemetry whose sender
time lies more than ``max_future_s`` (default 300 s) after the EMS clock, or, when
configured, more than ``max_past_s`` before it, is refused with a reason: dead-lettered,
counted, and acknowledged. Real Mosquitto, real EMS, SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import time

from store_stack import KEY, birth, publisher, start_ems, stored, stored_seqs, telemetry

from sef.ems._recorder import MAX_FUTURE_S, Recorder
from sef.ems.store import Store, TelemetryIn

YEAR_2096 = 3_976_214_400.0
"""2096-01-01T00:00:00Z, Unix s."""


async def test_telemetry_from_2096_is_refused_with_a_reason(broker_url: str, db_url: str) -> None:
    store = Store.open(db_url)
    stack = await start_ems(broker_url, store)
    client = await publisher(broker_url, "future-source")
    now = time.time()
    try:
        birth(client, "clock-1")
        telemetry(client, "clock-1", 1, now - 10)
        telemetry(client, "clock-1", 2, YEAR_2096)
        telemetry(client, "clock-1", 3, now + MAX_FUTURE_S + 60)  # just beyond the window
        telemetry(client, "clock-1", 4, now + MAX_FUTURE_S - 60)  # a fast clock: accepted
        telemetry(client, "clock-1", 5, now)
        await stored(store, 3, 10.0)
        assert stored_seqs(store, "clock-1") == [1, 4, 5]
        # the 2096 value did not become the last known value either
        last = store.load_properties()["clock-1"][KEY]
        assert last[1] == now + MAX_FUTURE_S - 60
        letters = (await stack.http.get("/deadletters", params={"agent": "clock-1"})).json()
        assert sorted(d["category"] for d in letters) == ["future", "future"]
        assert all("ahead of the EMS clock" in d["reason"] for d in letters), letters
        assert any("3976214400" in d["payload"] for d in letters)
        metrics = (await stack.http.get("/metrics")).text
        assert 'sef_store_dead_letters_total{category="future"} 2.0' in metrics
    finally:
        await stack.stop()
        await client.stop()
        store.close()


async def test_the_window_is_configurable(db_url: str) -> None:
    store = Store.open(db_url)
    recorder = Recorder(store, max_delay_s=0.01, max_future_s=10.0, max_past_s=3600.0)
    recorder.start()
    now = time.time()
    try:
        rows = [
            TelemetryIn("w", KEY, now - 7200, 1, now, "1"),  # two hours old: refused
            TelemetryIn("w", KEY, now - 1800, 2, now, "2"),
            TelemetryIn("w", KEY, now + 5, 3, now, "3"),
            TelemetryIn("w", KEY, now + 20, 4, now, "4"),  # 20 s ahead: refused
        ]
        await asyncio.wait_for(asyncio.gather(*(recorder.telemetry(r) for r in rows)), 10.0)
    finally:
        await recorder.stop()
    assert stored_seqs(store, "w") == [2, 3]
    assert recorder.dead_letters == {"past": 1, "future": 1}
    reasons = {d["category"]: d["reason"] for d in store.dead_letters()}
    assert "7200 s behind the EMS clock (at most 3600 s)" in reasons["past"]
    assert "20 s ahead of the EMS clock (at most 10 s)" in reasons["future"]
    store.close()

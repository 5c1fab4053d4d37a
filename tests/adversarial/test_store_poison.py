"""Defect 1 of issue 11 (store side): one row that does not fit its column must not stop
telemetry storage.

Before the fix, one status message with ``bdseq`` >= 2**63 (or an offline reason longer
than the 32-character column) made every batch insert fail, forever: the EMS retried the
batch, acknowledged nothing, got the message again after every restart, and ``/health``
said ok. Now every row is checked against its column before it enters a batch; a row
that cannot be stored is dead-lettered (kept with its reason, counted in ``/metrics``,
listed by ``GET /deadletters``) and its message acknowledged; a batch the database still
refuses for its data is bisected down to the refused rows. Real Mosquitto, real EMS, real
SQLite and PostgreSQL (``db_url``).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from store_stack import (
    IFACE,
    KEY,
    TOPICS,
    birth,
    publisher,
    start_ems,
    stored,
    stored_seqs,
    telemetry,
)

from sef.bus import Status
from sef.ems._recorder import Recorder, agent_row
from sef.ems._records import AgentRecord
from sef.ems.store import Store, TelemetryIn

PER_AGENT = 50


async def test_a_poison_status_is_dead_lettered_and_storage_goes_on(
    broker_url: str, db_url: str
) -> None:
    store = Store.open(db_url)
    stack = await start_ems(broker_url, store)
    client = await publisher(broker_url, "poison-source")
    now = time.time()
    try:
        birth(client, "good-1")
        # a bdseq beyond BIGINT (the registry may refuse it first; either way it must not
        # block the store)
        client.publish(
            TOPICS.status("evil-1"), Status(True, 2**63, now, 10, 0).to_payload(), retain=False
        )
        # a legitimate session that goes offline with a reason longer than its column
        birth(client, "evil-2", bdseq=5)
        await asyncio.sleep(0.2)
        client.publish(
            TOPICS.status("evil-2"),
            Status(False, 5, now, reason="r" * 100).to_payload(),
            retain=False,  # (retained, every new subscription gets it again, by design)
        )
        for seq in range(1, PER_AGENT + 1):
            telemetry(client, "good-1", seq, now - PER_AGENT + seq)
        await stored(store, PER_AGENT, 15.0)
        assert stored_seqs(store, "good-1") == list(range(1, PER_AGENT + 1))

        letters = (await stack.http.get("/deadletters")).json()
        reasons = {(d["agent_id"], d["kind"], d["category"]): d["reason"] for d in letters}
        assert ("evil-2", "agent", "too_long") in reasons, letters
        assert "offline_reason" in reasons[("evil-2", "agent", "too_long")]
        registry = stack.ems.registry
        if registry.get("evil-1") is not None:  # the registry took it: the store refuses it
            assert ("evil-1", "agent", "out_of_range") in reasons, letters
            assert "bdseq" in reasons[("evil-1", "agent", "out_of_range")]
        only_evil_2 = (await stack.http.get("/deadletters", params={"agent": "evil-2"})).json()
        assert {d["agent_id"] for d in only_evil_2} == {"evil-2"}
        metrics = (await stack.http.get("/metrics")).text
        assert 'sef_store_dead_letters_total{category="too_long"}' in metrics
        health = await stack.http.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert stack.ems.recorder is not None and stack.ems.recorder.failures == 0
        kept = store.count_dead_letters()
    finally:
        await stack.stop()
        await client.stop()
    # the poison was acknowledged: a new session of the EMS is not sent it again
    stack = await start_ems(broker_url, store)
    try:
        await stack.ems.settle(quiet_s=0.5)
        assert stack.ems.recorder is not None
        assert stack.ems.recorder.failures == 0
        assert store.count_dead_letters() == kept
        assert stored_seqs(store, "good-1") == list(range(1, PER_AGENT + 1))
    finally:
        await stack.stop()
        store.close()


def _record(agent_id: str, bdseq: int) -> AgentRecord:
    now = time.time()
    return AgentRecord(agent_id, online=True, bdseq=bdseq, first_seen=now, last_seen=now)


@pytest.mark.parametrize(
    ("row", "category", "field"),
    [
        (TelemetryIn("a", KEY, 1.0e9, 2**63, 1.0e9, "1"), "out_of_range", "seq"),
        (TelemetryIn("a", KEY, 1.0e9, -(2**63) - 1, 1.0e9, "1"), "out_of_range", "seq"),
        (TelemetryIn("a" * 65, KEY, 1.0e9, 1, 1.0e9, "1"), "too_long", "agent_id"),
        (TelemetryIn("a", "k" * 301, 1.0e9, 1, 1.0e9, "1"), "too_long", "key"),
        (TelemetryIn("a", KEY, float("nan"), 1, 1.0e9, "1"), "not_finite", "ts"),
        (TelemetryIn("a", KEY, 1.0e9, 1, float("inf"), "1"), "not_finite", "received"),
        (TelemetryIn("a\x00b", KEY, 1.0e9, 1, 1.0e9, "1"), "bad_text", "agent_id"),
        (TelemetryIn("a", KEY, 1.0e9, 1, 1.0e9, '"\ud800"'), "bad_text", "value"),
        (TelemetryIn("a", KEY, 1.0e9, 1, 1.0e9, "1" * (1 << 20 | 1)), "too_long", "value"),
    ],
)
async def test_every_telemetry_column_is_range_checked(
    db_url: str, row: TelemetryIn, category: str, field: str
) -> None:
    store = Store.open(db_url)
    recorder = Recorder(store, max_delay_s=0.01, max_future_s=None)
    recorder.start()
    try:
        bad = recorder.telemetry(row)
        good = recorder.telemetry(TelemetryIn("a", KEY, 1.0e9, 7, 1.0e9, "2"))
        await asyncio.wait_for(asyncio.gather(bad, good), 10.0)
    finally:
        await recorder.stop()
    assert recorder.failures == 0
    assert [r["seq"] for r in store.telemetry("a", key=KEY)] == [7]
    (letter,) = store.dead_letters()
    assert (letter["kind"], letter["category"]) == ("telemetry", category)
    assert letter["reason"].startswith(field), letter
    assert recorder.dead_letters == {category: 1}
    store.close()


async def test_agent_rows_and_events_are_range_checked(db_url: str) -> None:
    store = Store.open(db_url)
    recorder = Recorder(store, max_delay_s=0.01)
    recorder.start()
    try:
        futures = [
            recorder.agent(agent_row(_record("big", 2**63))),
            recorder.agent(agent_row(_record("fine", 2**63 - 1))),
            recorder.event("fine", time.time(), "online", "x" * 5000),
            recorder.event("fine", time.time(), "online", "1"),
        ]
        await asyncio.wait_for(asyncio.gather(*futures), 10.0)
    finally:
        await recorder.stop()
    assert recorder.failures == 0
    assert [(r.agent_id, r.bdseq) for r in store.load_agents()] == [("fine", 2**63 - 1)]
    assert [e["detail"] for e in store.agent_events("fine")] == ["1"]
    letters = {(d["agent_id"], d["kind"], d["category"]) for d in store.dead_letters()}
    assert letters == {("big", "agent", "out_of_range"), ("fine", "event", "too_long")}
    store.close()


async def test_a_batch_the_database_refuses_is_bisected_not_retried_forever(
    db_url: str,
) -> None:
    """Rows that slip past the checks (here put straight into the batch) and that the
    database refuses for their data: the batch is bisected, the refused rows are
    dead-lettered with the database's reason, every other row is committed, and the
    commit future completes (so the messages are acknowledged)."""
    store = Store.open(db_url)
    recorder = Recorder(store, max_rows=10_000, max_delay_s=0.05)
    recorder.start()
    now = time.time()
    try:
        futures = [
            recorder.telemetry(TelemetryIn("a", KEY, now + i, i, now, "1")) for i in range(200)
        ]
        for seq in (2**63, 2**64 + 5):  # BIGINT overflow: refused by the database itself
            recorder._batch.telemetry.append(TelemetryIn("a", KEY, now, seq, now, "1"))
        await asyncio.wait_for(asyncio.gather(*futures), 20.0)
    finally:
        await recorder.stop()
    assert recorder.failures == 0, "a data error is no reason to retry"
    assert stored_seqs(store, "a") == list(range(200))
    letters = store.dead_letters()
    assert len(letters) == 2
    assert {d["category"] for d in letters} == {"db_rejected"}
    assert all("refused by the database" in d["reason"] for d in letters)
    assert recorder.dead_letters == {"db_rejected": 2}
    store.close()


async def test_the_dead_letter_route(broker_url: str, db_url: str) -> None:
    store = Store.open(db_url)
    stack = await start_ems(broker_url, store)
    try:
        assert stack.ems.recorder is not None
        await asyncio.wait_for(
            stack.ems.recorder.telemetry(
                TelemetryIn("x", f"{IFACE}.Telemetry", 1.0e9, 2**63, time.time(), "1")
            ),
            10.0,
        )
        body = (await stack.http.get("/deadletters", params={"since": "1h"})).json()
        assert [(d["agent_id"], d["category"]) for d in body] == [("x", "out_of_range")]
        assert set(body[0]) == {
            "id",
            "received",
            "agent_id",
            "kind",
            "key",
            "category",
            "reason",
            "payload",
        }
        assert "9223372036854775808" in body[0]["payload"]
        assert (await stack.http.get("/deadletters", params={"since": "soon"})).status_code == 400
        assert (await stack.http.get("/deadletters", params={"agent": "nobody"})).json() == []
    finally:
        await stack.stop()
        store.close()

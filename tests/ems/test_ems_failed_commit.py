"""A batch that failed to commit is never acknowledged: its messages come back.

The EMS's store refuses the writes (``FlakyStore``, a real SQLite or PostgreSQL store
whose ``write_batch`` raises while ``failing`` is set); a real Mosquitto holds the EMS's
persistent session. The recorder's commit future fails when the recorder stops with
rows it could not store, and nothing is acknowledged before it is committed: neither the
messages nor the copies the broker delivers again after a reconnect. Once the store
works, every message is stored exactly once and nothing is left unacknowledged.
"""

from __future__ import annotations

import asyncio

import pytest

from sef.bus import BusClient, PropertyUpdate, Status, Topics
from sef.ems import EMS
from sef.ems._recorder import Recorder
from sef.ems.store import Batch, Store, StoreError, TelemetryIn
from support import wait_for

TOPICS = Topics()
AGENTS = 4
PER_AGENT = 50
KEY = "edu.pdx.powerlab.demo.Telemetry"
BASE = 1_767_225_600.0
HOST = "ems-flaky"


class FlakyStore(Store):
    """A store whose batch writes fail while ``failing`` is set (the database is down)."""

    def __init__(self, url: str, *, echo: bool = False, durable: bool = True) -> None:
        super().__init__(url, echo=echo, durable=durable)
        self.failing = False
        self.refused = 0

    @classmethod
    def open(cls, url: str, *, durable: bool = True) -> FlakyStore:
        store = cls(url, durable=durable)
        store.migrate()
        return store

    def write_batch(self, batch: Batch) -> int:
        if self.failing:
            self.refused += 1
            raise ConnectionError("database down (test)")
        return super().write_batch(batch)


async def publish(broker_url: str, *, births: bool = False, telemetry: bool = False) -> None:
    """The agents' births (retained; their sequence starts at 0) and/or ``PER_AGENT``
    telemetry messages per agent (seq 1, 2, ...)."""
    publisher = BusClient(broker_url, "flaky-source")
    await publisher.start()
    for a in range(AGENTS if births else 0):
        publisher.publish(
            TOPICS.status(f"fl-{a}"), Status(True, 1, BASE, 10, 0).to_payload(), retain=True
        )
    for i in range(AGENTS * PER_AGENT if telemetry else 0):
        agent, seq = i % AGENTS, 1 + i // AGENTS
        update = PropertyUpdate({"TimeStamp": ["u", int(BASE) + seq]}, BASE + seq, seq)
        publisher.publish(
            TOPICS.prop(f"fl-{agent}", "edu.pdx.powerlab.demo", "Telemetry"), update.to_payload()
        )
    await asyncio.sleep(0.2)
    await publisher.stop()


async def born(ems: EMS, store: Store) -> None:
    """The births reached the EMS and are committed (so acknowledged)."""
    await wait_for(
        lambda: all(
            (r := ems.registry.get(f"fl-{a}")) is not None and r.expected_seq == 1
            for a in range(AGENTS)
        ),
        5.0,
    )
    await wait_for(lambda: len(store.load_agents()) == AGENTS, 5.0, step_s=0.05)
    await asyncio.sleep(0.1)


def received_all(ems: EMS, last_seq: int) -> bool:
    records = [ems.registry.get(f"fl-{a}") for a in range(AGENTS)]
    return all(r is not None and r.expected_seq == last_seq + 1 for r in records)


def assert_stored_once(store: Store, seqs: range) -> None:
    for a in range(AGENTS):
        stored = sorted(row["seq"] for row in store.telemetry(f"fl-{a}", key=KEY))
        assert stored == list(seqs), f"fl-{a}: missing or duplicate rows"


async def nothing_redelivered(broker_url: str, store: Store) -> None:
    """A new connection of the EMS session gets no telemetry again: all was acknowledged."""
    ems = EMS(broker_url, HOST, store=store, keepalive_s=2)
    await ems.start()
    await ems.settle(quiet_s=0.5)
    assert ems.recorder is not None
    assert (ems.recorder.rows_written, ems.recorder.duplicates) == (0, 0)
    await ems.stop()


async def test_a_failed_commit_is_not_acknowledged_and_is_stored_by_the_next_session(
    broker_url: str, db_url: str
) -> None:
    store = FlakyStore.open(db_url)
    ems = EMS(broker_url, HOST, store=store, keepalive_s=2)
    await ems.start()
    assert ems.recorder is not None
    await publish(broker_url, births=True)
    await born(ems, store)
    store.failing = True  # the database goes down
    await publish(broker_url, telemetry=True)
    await wait_for(lambda: received_all(ems, PER_AGENT) and store.refused >= 2, 10.0)
    # the connection drops (as on a network failure): the broker delivers the telemetry
    # again; these copies too must wait for the commit
    seen = ems.registry.messages
    ems.bus._lost.set()
    await wait_for(
        lambda: ems.bus.connections == 2 and ems.registry.messages >= seen + AGENTS * PER_AGENT,
        10.0,
    )
    # stopped while the store still refuses: the batch's future fails, nothing is acked
    await ems.bus.stop()
    await ems.recorder.stop(timeout_s=0.5)
    await ems.stop()
    assert store.count_telemetry() == 0
    # the database is back: the next session gets every message again and stores it once
    store.failing = False
    ems = EMS(broker_url, HOST, store=store, keepalive_s=2)
    await ems.start()
    try:
        await wait_for(lambda: store.count_telemetry() >= AGENTS * PER_AGENT, 15.0, step_s=0.1)
        await ems.settle(quiet_s=0.3)
    finally:
        await ems.stop()
    assert_stored_once(store, range(1, PER_AGENT + 1))
    await nothing_redelivered(broker_url, store)
    store.close()


async def test_rows_are_stored_and_acknowledged_once_the_store_works_again(
    broker_url: str, db_url: str
) -> None:
    store = FlakyStore.open(db_url)
    store.failing = True
    ems = EMS(broker_url, HOST, store=store, keepalive_s=2)
    await ems.start()
    try:
        await publish(broker_url, births=True, telemetry=True)
        await wait_for(lambda: received_all(ems, PER_AGENT) and store.refused >= 2, 10.0)
        assert store.count_telemetry() == 0
        store.failing = False  # the recorder retries with backoff (at most 5 s)
        await wait_for(lambda: store.count_telemetry() >= AGENTS * PER_AGENT, 15.0, step_s=0.1)
        await asyncio.sleep(0.2)  # the PUBACKs follow the commit
    finally:
        await ems.stop()
    assert_stored_once(store, range(1, PER_AGENT + 1))
    await nothing_redelivered(broker_url, store)
    store.close()


async def test_the_commit_future_carries_the_failure(db_url: str) -> None:
    """What the bus's acknowledgement waits for: it fails when the rows were not stored."""
    store = FlakyStore.open(db_url)
    store.failing = True
    recorder = Recorder(store, max_delay_s=0.01)
    recorder.start()
    refused = recorder.telemetry(TelemetryIn("fl-0", KEY, BASE + 1, 1, BASE + 1, "1"))
    await wait_for(lambda: store.refused >= 1, 5.0)
    # a second batch opens behind the one the store refuses
    waiting = recorder.telemetry(TelemetryIn("fl-0", KEY, BASE + 2, 2, BASE + 2, "2"))
    assert waiting is not refused
    await recorder.stop(timeout_s=0.3)
    for future in (refused, waiting):
        assert future.done()
        with pytest.raises(StoreError, match="not committed"):
            future.result()
    assert store.count_telemetry() == 0
    store.failing = False
    recorder = Recorder(store, max_delay_s=0.01)
    recorder.start()
    await asyncio.wait_for(
        recorder.telemetry(TelemetryIn("fl-0", KEY, BASE + 1, 1, BASE + 1, "1")), 5.0
    )
    await recorder.stop()
    assert store.count_telemetry() == 1
    store.close()


async def test_the_batch_committed_at_stop_is_acknowledged(broker_url: str, db_url: str) -> None:
    """Stopping commits the open batch while the connection is still up, so its PUBACKs
    reach the broker and the next session is not sent those messages again."""
    store = FlakyStore.open(db_url)
    ems = EMS(broker_url, HOST, store=store, keepalive_s=2)
    await ems.start()
    assert ems.recorder is not None
    ems.recorder.max_delay_s = 5.0  # the last batch is still open when the stop begins
    await publish(broker_url, births=True, telemetry=True)
    await wait_for(lambda: received_all(ems, PER_AGENT), 10.0)
    assert store.count_telemetry() < AGENTS * PER_AGENT
    await ems.stop()
    assert_stored_once(store, range(1, PER_AGENT + 1))
    await nothing_redelivered(broker_url, store)
    store.close()

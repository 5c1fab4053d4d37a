"""End to end (issue 19): a real Mosquitto, a real EMS with a store (SQLite and
PostgreSQL, the ``db_url`` fixture), raw MQTT messages as a home's bridge and a returning
agent send them. Replayed copies of retained state and re-sent in-flight telemetry make no
gap, no rebirth request and no second row; backfilled samples are stored under their own
time (an hour old included), never as the last value; a sample that arrives again as a
backfilled copy is stored once. Rows in the telemetry table are counted exactly."""

from __future__ import annotations

import asyncio
import hashlib
import time

from prometheus_client import generate_latest

from sef.bus import About, BusClient, InterfaceRef, PropertyUpdate, Status, Topics
from sef.ems import EMS
from sef.ems.api._commands import CommandStats
from sef.ems.api._events import EventHub
from sef.ems.api._metrics import metrics_registry
from sef.ems.api._models import AgentOut
from sef.ems.store import Store
from sef.interface import builtin_xml
from support import wait_for

T = Topics()
AGENT = "home-1-bat"
DEMO = "edu.pdx.powerlab.demo"
KEY = f"{DEMO}.Telemetry"
ABOUT = {
    "AppId": "0b8e",
    "DeviceId": "dev-1",
    "AppName": "virtual-battery",
    "Manufacturer": "PSU",
    "ModelNumber": "VB-1",
    "DefaultLanguage": "en",
    "DeviceName": "Battery 1",
    "SoftwareVersion": "1.0",
}


def update(n: int, ts: float, seq: int, *, backfill: bool = False) -> bytes:
    return PropertyUpdate({"n": ["x", n]}, ts, seq, backfill).to_payload()


async def test_replays_and_backfill_are_stored_exactly_once(broker_url: str, db_url: str) -> None:
    store = Store.open(db_url)
    ems = EMS(broker_url, "ems-replays", store=store, keepalive_s=2)
    await ems.start()
    home = BusClient(broker_url, "home-1-bridge")
    await home.start()
    published = 0

    def send(topic: str, payload: bytes, *, retain: bool = False) -> None:
        nonlocal published
        home.publish(topic, payload, retain=retain)
        published += 1

    async def settled() -> None:
        """Every message published so far has been handled and committed."""
        await wait_for(lambda: ems.registry.messages >= published, 15.0)
        assert ems.recorder is not None
        recorder = ems.recorder
        await wait_for(lambda: recorder.oldest_pending_s() == 0.0, 15.0)

    try:
        t0 = time.time() - 600.0
        b1 = int(t0 * 1000)
        # session 1: birth, About, 10 telemetry samples (retained, as agents publish)
        birth1 = Status(True, b1, t0, 10, 0).to_payload()
        sha = hashlib.sha256(builtin_xml(DEMO).encode()).hexdigest()
        about = About(ABOUT, [InterfaceRef(DEMO, sha)], [], b1, t0, 1).to_payload()
        send(T.status(AGENT), birth1, retain=True)
        send(T.about(AGENT), about, retain=True)
        for seq in range(2, 12):
            send(T.prop(AGENT, DEMO, "Telemetry"), update(seq, t0 + seq, seq), retain=True)
        await settled()
        assert store.count_telemetry(AGENT) == 10

        # the uplink comes back: the bridge flushes the retained state with the retain
        # flag cleared, and re-sends in-flight telemetry 8..11
        send(T.status(AGENT), birth1)
        send(T.about(AGENT), about)
        send(T.prop(AGENT, DEMO, "Telemetry"), update(11, t0 + 11, 11))
        for seq in range(8, 12):
            send(T.prop(AGENT, DEMO, "Telemetry"), update(seq, t0 + seq, seq))
        await settled()
        record = ems.registry.get(AGENT)
        assert record is not None
        assert (record.gaps, record.duplicates, ems.rebirths_requested) == (0, 7, 0)
        assert store.count_telemetry(AGENT) == 10

        # session 2: the agent reconnects; current value, then its buffer: 5 samples it
        # made while cut off, one it had sent whose PUBACK was lost (stored already: the
        # same sample again), and one an hour old
        t1 = time.time()
        b2 = int(t1 * 1000)
        send(T.status(AGENT), Status(True, b2, t1, 10, 0).to_payload(), retain=True)
        send(T.about(AGENT), About(ABOUT, [InterfaceRef(DEMO, sha)], [], b2, t1, 1).to_payload())
        send(T.prop(AGENT, DEMO, "Telemetry"), update(99, t1, 2), retain=True)
        buffered = [(12 + i, t0 + 12 + i) for i in range(5)] + [(11, t0 + 11), (0, t1 - 3600)]
        for i, (n, ts) in enumerate(buffered):
            send(T.prop(AGENT, DEMO, "Telemetry"), update(n, ts, 3 + i, backfill=True))
        await settled()
        assert (record.gaps, record.duplicates, record.backfilled) == (0, 7, 7)
        assert ems.rebirths_requested == 0
        assert store.count_telemetry(AGENT) == 10 + 1 + 5 + 1
        rows = store.telemetry(AGENT, key=KEY)
        assert [r["ts"] for r in rows] == sorted(
            [t1 - 3600] + [t0 + s for s in range(2, 17)] + [t1]
        )
        by_ts = {r["ts"]: r for r in rows}
        assert by_ts[t0 + 11]["seq"] == 11  # the first copy stays
        assert by_ts[t0 + 14]["value"] == {"n": ["x", 14]}
        # the last value is the birth's current one, in the registry and in the store
        assert record.prop(DEMO, "Telemetry") == {"n": ["x", 99]}
        assert store.load_properties()[AGENT][KEY][:2] == ({"n": ["x", 99]}, t1)
        assert not store.dead_letters(agent_id=AGENT)
        await asyncio.sleep(0.3)  # nothing else lands
        assert store.count_telemetry(AGENT) == 17
        # what an operator sees: the agent's counters in the API and the Prometheus totals
        shown = AgentOut.model_validate(record.summary())
        assert (shown.gaps, shown.duplicates, shown.backfilled) == (0, 7, 7)
        metrics = generate_latest(metrics_registry(ems, CommandStats(), EventHub(ems))).decode()
        assert "sef_duplicates_total 7.0" in metrics
        assert "sef_backfilled_total 7.0" in metrics
        assert "sef_sequence_gaps_total 0.0" in metrics
    finally:
        await home.stop()
        await ems.stop()
        store.close()

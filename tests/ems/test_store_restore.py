"""The EMS's restore from its store (issue 16): what the recorder stored comes back equal
(About, groups, interfaces, properties, bdseq, times), as compact as a live record, on
SQLite and PostgreSQL; a stored value that does not decode is left out, not a crash."""

from __future__ import annotations

import json
import logging

import pytest

from sef.ems._births import BirthTracker
from sef.ems._recorder import agent_record, agent_row
from sef.ems._records import AgentRecord, PropertyValue
from sef.ems._registry import Registry
from sef.ems.store import Store
from sef.ems.store._store import Batch, TelemetryIn

T0 = 1_767_225_600.0
DEMO = "edu.pdx.powerlab.demo"
TELEMETRY = {
    "TimeStamp": ["u", 1767225600],
    "Event": ["s", "idle"],
    "Event_Rate_kW": ["n", -3],
    "Setpoint_kW": ["d", 0.5],
    "Clipped": ["b", False],
    "Sys_SOC": ["d", 61.25],
    "State": ["s", "CONNECTED"],
    "Alarms": ["u", 18446744073709551615],
    "Big": ["t", 2**70],  # beyond 64 bits: orjson refuses it, json decodes it
}


def _record(i: int) -> AgentRecord:
    """A record as the registry holds a virtual battery's after its birth."""
    agent = f"bat-{i}"
    ts = T0 + i
    about = {
        "DeviceName": agent,
        "DeviceId": agent,
        "Manufacturer": "SEF",
        "SupportedLanguages": ["en", "fr"],
        "Extra": {"nested": [1, 2.5, None, "ü"]},
        "HardwareVersion": "",
    }
    return AgentRecord(
        agent,
        online=bool(i % 2),
        bdseq=int(ts * 1000),
        about=about,
        interfaces={DEMO: "ab" * 32, "sef.Agent": "cd" * 32},
        groups=["feeder-1", f"street-{i % 3}"] if i % 4 else [],
        first_seen=ts,
        last_seen=ts + 30.5,
        online_since=ts if i % 2 else None,
        offline_since=None if i % 2 else ts + 1,
        offline_reason=None if i % 2 else "will",
        gaps=i % 5,
    )


def _values(i: int) -> dict[str, object]:
    return {
        f"{DEMO}.Telemetry": dict(TELEMETRY, Sys_SOC=["d", 20.0 + i]),
        f"{DEMO}.AssetName": f"asset {i}",
        f"{DEMO}.Schedule": [[0, 1.5], [3600, -2.0]],
        f"{DEMO}.Small": {"a": 1},
        f"{DEMO}.Count": i,
        f"{DEMO}.Flag": None,
    }


def _fill(store: Store, n: int) -> dict[str, AgentRecord]:
    """Store ``n`` agents the way the recorder does; return what the registry held."""
    batch = Batch()
    expected = {}
    for i in range(n):
        record = _record(i)
        for seq, (key, value) in enumerate(_values(i).items(), start=2):
            ts = T0 + i + seq
            batch.telemetry.append(
                TelemetryIn(record.agent_id, key, ts, seq, ts + 0.25, json.dumps(value))
            )
            record.set_property(key, PropertyValue(value, ts, ts + 0.25))
        batch.agents[record.agent_id] = agent_row(record)
        expected[record.agent_id] = record
    store.write_batch(batch)
    return expected


def _restore(store: Store) -> Registry:
    """What ``EMS.start`` does with the store."""
    registry = Registry(freeze_every=None)
    births = BirthTracker(registry)
    props = store.load_property_texts()
    for row in store.load_agents():
        record = agent_record(row, props.get(row.agent_id, ()))
        registry.restore(record)
        births.restored(record)
    return registry


def test_a_stored_fleet_comes_back_equal(db_url: str) -> None:
    store = Store.open(db_url, durable=False)
    try:
        expected = _fill(store, 12)
        registry = _restore(store)
    finally:
        store.close()
    assert registry.sorted_ids() == sorted(expected)
    for agent_id, want in expected.items():
        got = registry.agents[agent_id]
        assert got.about == want.about
        assert got.groups == want.groups
        assert dict(got.interfaces) == dict(want.interfaces)
        assert got.bdseq == want.bdseq
        assert (got.first_seen, got.last_seen, got.gaps) == (
            want.first_seen,
            want.last_seen,
            want.gaps,
        )
        assert (got.online_since, got.offline_since, got.offline_reason) == (
            want.online_since,
            want.offline_since,
            want.offline_reason,
        )
        assert got.online is (None if want.online else False)  # unknown until the broker says
        assert dict(got.properties) == dict(want.properties)
        assert got.prop(DEMO, "Telemetry")["Big"] == ["t", 2**70]
    for group in ("feeder-1", "street-0", "street-1", "street-2"):
        want_ids = sorted(a for a, r in expected.items() if group in r.groups)
        assert sorted(r.agent_id for r in registry.group_members(group)) == want_ids


def test_a_restored_record_is_as_compact_as_a_live_one(tmp_path: object) -> None:
    store = Store.open(f"sqlite:///{tmp_path}/ems.db", durable=False)
    try:
        _fill(store, 8)
        registry = _restore(store)
    finally:
        store.close()
    one, two = registry.agents["bat-1"], registry.agents["bat-2"]
    # the same interfaces, group lists and About keys are shared, not copied per agent
    assert one.interfaces is two.interfaces
    assert one._about is not None and two._about is not None
    assert one._about[0] is two._about[0]
    assert registry.agents["bat-7"].groups is one.groups  # ("feeder-1", "street-1")
    data = {k: v._data for k, v in one.properties.items()}
    assert type(data[f"{DEMO}.Telemetry"]) is bytes  # kept as a payload, like a live one
    assert type(data[f"{DEMO}.Schedule"]) is bytes  # the payload, decoded on read
    assert type(data[f"{DEMO}.Small"]) is bytes
    assert data[f"{DEMO}.AssetName"] == "asset 1"


def test_an_undecodable_stored_value_is_left_out_with_a_reason(
    tmp_path: object, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store.open(f"sqlite:///{tmp_path}/ems.db", durable=False)
    try:
        _fill(store, 1)
        with store.engine.begin() as connection:
            connection.exec_driver_sql(
                "UPDATE properties SET value = '{not json' WHERE key = ?", (f"{DEMO}.Count",)
            )
        with caplog.at_level(logging.WARNING, "sef.ems"):
            registry = _restore(store)
    finally:
        store.close()
    got = registry.agents["bat-0"]
    assert f"{DEMO}.Count" not in got.properties
    assert got.prop(DEMO, "AssetName") == "asset 0"
    assert any("not decodable" in r.getMessage() for r in caplog.records)

"""The compact registry of issue 16: shared (interned) About keys, interface sets and
groups; About and object-valued properties decoded on read; no empty dicts per agent;
the group -> members index and the sorted ids kept right as Abouts change; topic parsing
without a per-topic cache (more distinct topics than the old 65 536-entry cache held)."""

from __future__ import annotations

import gc
import hashlib
import logging
import random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sef.bus import About, InterfaceRef, Message, PropertyUpdate, Status, Topics, decode_object
from sef.ems._admission import Admission
from sef.ems._records import AgentRecord, PropertyValue
from sef.ems._registry import Registry
from sef.ems._topic_parse import AgentTopicParser
from sef.interface import builtin_xml

DEMO = "edu.pdx.powerlab.demo"
DEMO_SHA = hashlib.sha256(builtin_xml(DEMO).encode()).hexdigest()
T = Topics()
NOW = 1_767_225_600.0


def fields(agent: str, version: str = "1.0") -> dict[str, Any]:
    return {
        "AppId": hashlib.md5(agent.encode()).hexdigest(),
        "DeviceId": agent,
        "AppName": "virtual-battery",
        "Manufacturer": "PSU",
        "ModelNumber": "VB-1",
        "DefaultLanguage": "en",
        "DeviceName": agent,
        "SoftwareVersion": version,
        "SupportedLanguages": ["en", "de"],
        "Extra": {"rated_kw": 8.0},
    }


def about(agent: str, groups: list[str], seq: int = 1, version: str = "1.0") -> Message:
    payload = About(
        fields(agent, version), [InterfaceRef(DEMO, DEMO_SHA)], groups, 7, NOW, seq
    ).to_payload()
    return Message(T.about(agent), payload, 1, True)


def birth(agent: str) -> Message:
    return Message(T.status(agent), Status(True, 7, NOW, 30, 0).to_payload(), 1, True)


def telemetry(agent: str, value: Any, seq: int = 2) -> Message:
    payload = PropertyUpdate(value, NOW, seq).to_payload()
    return Message(T.prop(agent, DEMO, "Telemetry"), payload, 1, True)


def registry() -> Registry:
    return Registry(admission=Admission.open())


def test_agents_with_the_same_about_share_keys_interfaces_and_groups() -> None:
    reg = registry()
    for agent in ("bat-1", "bat-2"):
        reg.handle(birth(agent), NOW)
        reg.handle(about(agent, ["east", "fleet"]), NOW)
    one, two = reg.get("bat-1"), reg.get("bat-2")
    assert one is not None and two is not None
    assert one.groups is two.groups and one.groups == ("east", "fleet")
    assert one.interfaces is two.interfaces and dict(one.interfaces) == {DEMO: DEMO_SHA}
    assert one._about is not None and two._about is not None
    assert one._about[0] is two._about[0]  # the key tuple
    reg.handle(about("bat-2", ["west"], seq=2), NOW)
    assert two.groups == ("west",) and one.groups == ("east", "fleet")


def test_about_is_decoded_on_read_and_a_copy() -> None:
    reg = registry()
    reg.handle(birth("bat-1"), NOW)
    reg.handle(about("bat-1", ["fleet"]), NOW)
    record = reg.get("bat-1")
    assert record is not None
    assert record.about == fields("bat-1")
    first = record.about
    first["DeviceName"] = "changed"
    first["SupportedLanguages"].append("fr")
    assert record.about == fields("bat-1")  # the record is not changed through a read
    assert record.about_field("SupportedLanguages") == ["en", "de"]
    assert record.about_field("Missing") is None
    assert record.summary()["device_name"] == "bat-1"


def test_variant_mapping_kept_as_its_payload() -> None:
    reg = registry()
    value = {"Sys_SOC": ["d", 55.5], "Zero": ["d", -0.0], "On": ["b", True], "N": ["u", 7]}
    value.update({f"K{i}": ["d", 0.0] for i in range(5)})
    value["Big"] = ["t", 2**64 - 1]
    for agent in ("bat-1", "bat-2"):
        reg.handle(birth(agent), NOW)
        reg.handle(telemetry(agent, value), NOW)
    one = reg.agents["bat-1"].properties[f"{DEMO}.Telemetry"]
    assert type(one._data) is bytes  # the payload: no Python per update (issue 16)
    assert one.value == value and one.value is not one.value
    assert str(one.value["Zero"][1]) == "-0.0" and type(one.value["N"][1]) is int
    assert type(one.value["Big"][1]) is int


def test_integers_beyond_64_bits_stay_exact() -> None:
    """An integer beyond 64 bits stays exact (orjson would make it a float: json's path)."""
    reg = registry()
    reg.handle(birth("bat-1"), NOW)
    value = {"Huge": ["t", 2**70], "Neg": ["x", -(2**64)]}
    reg.handle(telemetry("bat-1", value), NOW)
    assert reg.agents["bat-1"].prop(DEMO, "Telemetry") == value
    assert decode_object(b'{"v":1,"value":123456789012345678901234567890}')["value"] == (
        123456789012345678901234567890
    )


def test_object_property_kept_as_payload_scalar_kept_decoded() -> None:
    reg = registry()
    reg.handle(birth("bat-1"), NOW)
    value = {"Sys_SOC": ["d", 55.5], "Nested": {"a": [1, 2]}}
    reg.handle(telemetry("bat-1", value), NOW)
    record = reg.get("bat-1")
    assert record is not None
    entry = record.properties[f"{DEMO}.Telemetry"]
    assert type(entry._data) is bytes  # the payload, not a decoded dict
    assert entry.value == value and entry.value is not entry.value  # decoded at each read
    assert (entry.ts, entry.received, entry.seq) == (NOW, NOW, 2)
    assert record.prop(DEMO, "Telemetry") == value
    scalar = PropertyValue.from_payload(b'{"v":1,"value":3.5}', 3.5, NOW, NOW, 1)
    assert scalar._data == 3.5


def test_a_bad_stored_payload_reads_as_none_with_a_logged_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    entry = PropertyValue.from_payload(b'{"value": [1, 2', [1, 2], NOW, NOW, None)
    with caplog.at_level(logging.WARNING, logger="sef.ems.registry"):
        assert entry.value is None
    assert "not decodable" in caplog.text
    record = AgentRecord("bat-9", properties={f"{DEMO}.Telemetry": entry})
    assert record.summary()["properties"][f"{DEMO}.Telemetry"]["value"] is None


def test_no_empty_dicts_per_agent_until_written() -> None:
    record = AgentRecord("bat-1")
    assert record._properties is None and record._rejected is None
    assert dict(record.properties) == {} and record.rejected_interfaces == {}
    assert record.rejected_interfaces.pop(DEMO, None) is None
    assert record._rejected is None  # reading made nothing
    record.rejected_interfaces[DEMO] = "why"
    assert record._rejected == {DEMO: "why"} and dict(record.rejected_interfaces) == {DEMO: "why"}
    record.properties["a.b"] = PropertyValue(1, None, NOW)
    assert record.prop("a", "b") == 1


def test_a_record_restored_from_decoded_values_is_kept_as_payloads() -> None:
    value = {f"K{i}": ["d", i / 2] for i in range(10)}
    listed = [1, 2, 3]
    record = AgentRecord(
        "bat-1",
        about=fields("bat-1"),
        interfaces={DEMO: DEMO_SHA},
        groups=["fleet"],
        properties={
            f"{DEMO}.Telemetry": PropertyValue(value, NOW, NOW),
            f"{DEMO}.List": PropertyValue(listed, NOW, NOW),
        },
    )
    reg = registry()
    reg.restore(record)
    entry = record.properties[f"{DEMO}.Telemetry"]
    assert type(entry._data) is bytes and entry.value == value
    entry = record.properties[f"{DEMO}.List"]
    assert type(entry._data) is bytes and entry.value == listed
    assert [r.agent_id for r in reg.group_members("fleet")] == ["bat-1"]
    assert record.about == fields("bat-1")


_GROUPS = st.lists(st.sampled_from(["g1", "g2", "g3", "g4"]), max_size=3)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 7), _GROUPS, st.booleans()),
        min_size=1,
        max_size=40,
    )
)
def test_group_index_equals_a_scan_under_about_changes(
    steps: list[tuple[int, list[str], bool]],
) -> None:
    """Random Abouts (and restores) with random groups: the index is a brute-force scan."""
    reg = registry()
    seqs: dict[str, int] = {}
    for index, groups, restore in steps:
        agent = f"bat-{index}"
        if restore:
            reg.restore(AgentRecord(agent, groups=groups))
            seqs.pop(agent, None)
            continue
        seqs[agent] = seqs.get(agent, 0) + 1
        reg.handle(about(agent, groups, seq=seqs[agent]), NOW)
    for group in ("g1", "g2", "g3", "g4", "g5"):
        indexed = [r.agent_id for r in reg.group_members(group)]
        scanned = {a for a, r in reg.agents.items() if group in r.groups}
        assert sorted(indexed) == sorted(scanned)
        assert len(indexed) == len(set(indexed))


def test_sorted_ids_merge_new_agents_in() -> None:
    reg = registry()
    ids = [f"agent-{i:05d}" for i in range(3000)]
    random.Random(16).shuffle(ids)
    for n, agent in enumerate(ids, 1):
        reg.handle(birth(agent), NOW)
        if n % 700 == 0:
            assert reg.sorted_ids() == sorted(reg.agents)
    assert reg.sorted_ids() == sorted(ids)
    page, total, more = reg.page(after="agent-01000", limit=3)
    assert [r.agent_id for r in page] == ["agent-01001", "agent-01002", "agent-01003"]
    assert total == 3000 and more


def _topics() -> Iterator[str]:
    for i in range(70_000):  # more distinct topics than the old 65 536-entry cache
        yield f"sef/agents/bat-{i:06d}/props/{DEMO}/Telemetry"


def test_parse_without_a_cache_beyond_65536_topics() -> None:
    known: set[str] = set()
    parser = AgentTopicParser(T, known)
    for n, topic in enumerate(_topics()):
        parsed = parser.parse(topic)
        assert parsed == T.parse(topic)
        if n % 2:
            assert parsed is not None
            known.add(parsed.owner)
    assert len(parser._pairs) == 1 and len(parser._interfaces) == 1  # memo per pair only


def test_a_registry_takes_70000_agents_telemetry() -> None:
    reg = Registry(admission=Admission.open(), freeze_every=None)
    value = {"Sys_SOC": ["d", 50.0]}
    for topic in _topics():
        reg.handle(Message(topic, PropertyUpdate(value, NOW, 1).to_payload(), 1, True), NOW)
    assert len(reg.agents) == 70_000 and reg.bad_messages == 0
    assert reg.agents["bat-069999"].prop(DEMO, "Telemetry") == value


_SEGMENT = st.sampled_from(
    ["sef", "agents", "bat-1", "props", "signals", "call", "status", "about", "seal",
     "interfaces", DEMO, "Telemetry", "", "a.b", "x y", ".bad", "-bad", "1a", "a" * 65,
     "groups", "hosts", "clients", "reply", "gateways", "stats", "A_b.c", "_x", "+", "#"]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(_SEGMENT, min_size=1, max_size=6), st.booleans())
def test_fast_parse_equals_topics_parse(segments: list[str], known: bool) -> None:
    topic = "/".join(segments)
    owner = segments[2] if len(segments) > 2 else ""
    parser = AgentTopicParser(T, {owner} if known and T.parse(topic) else set())
    assert parser.parse(topic) == T.parse(topic)


def test_freeze_moves_the_fleet_out_of_the_collector() -> None:
    reg = Registry(admission=Admission.open(), freeze_every=None)
    for i in range(100):
        reg.handle(birth(f"bat-{i}"), NOW)
    try:
        assert gc.get_freeze_count() == 0
        assert reg.freeze() > 0 and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_the_registry_freezes_by_itself_every_n_agents() -> None:
    reg = Registry(admission=Admission.open(), freeze_every=40)
    try:
        for i in range(39):
            reg.handle(birth(f"bat-{i}"), NOW)
        assert gc.get_freeze_count() == 0
        reg.handle(birth("bat-39"), NOW)
        assert gc.get_freeze_count() > 0
        gc.unfreeze()
        for i in range(39):  # restored agents count too; a known one does not
            reg.restore(AgentRecord(f"old-{i}"))
        reg.restore(AgentRecord("old-0"))
        assert gc.get_freeze_count() == 0
        reg.restore(AgentRecord("old-39"))
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()

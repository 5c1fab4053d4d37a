"""Unit tests for the EMS registry, message by message (OpenEMS controller-test style).

Each test feeds bus messages one at a time and checks the registry state and the events
after each one.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from sef.bus import About, InterfaceRef, Message, PropertyUpdate, Status, Topics
from sef.ems._registry import Event, Registry
from sef.interface import Interface, builtin_xml

DEMO = "edu.pdx.powerlab.demo"
DEMO_XML = builtin_xml(DEMO).encode()
DEMO_SHA = hashlib.sha256(DEMO_XML).hexdigest()
T = Topics()


def about_fields(name: str = "Battery 1", version: str = "1.0") -> dict[str, Any]:
    return {
        "AppId": "0b8e",
        "DeviceId": "dev-1",
        "AppName": "virtual-battery",
        "Manufacturer": "PSU",
        "ModelNumber": "VB-1",
        "DefaultLanguage": "en",
        "DeviceName": name,
        "SoftwareVersion": version,
    }


def birth(
    agent: str, bdseq: int, *, seq: int | None = 0, retain: bool = False, ts: float | None = 1000.0
) -> Message:
    return Message(T.status(agent), Status(True, bdseq, ts, 30, seq).to_payload(), 1, retain)


def death(agent: str, bdseq: int, *, reason: str | None = None, retain: bool = False) -> Message:
    return Message(T.status(agent), Status(False, bdseq, reason=reason).to_payload(), 1, retain)


def about(
    agent: str,
    bdseq: int,
    *,
    seq: int | None = 1,
    retain: bool = False,
    name: str = "Battery 1",
    groups: list[str] | None = None,
) -> Message:
    payload = About(
        about_fields(name), [InterfaceRef(DEMO, DEMO_SHA)], groups or ["fleet"], bdseq, 1000.0, seq
    ).to_payload()
    return Message(T.about(agent), payload, 1, retain)


def prop(
    agent: str,
    member: str,
    value: Any,
    *,
    seq: int | None = None,
    retain: bool = False,
    ts: float | None = 1001.0,
) -> Message:
    return Message(
        T.prop(agent, DEMO, member), PropertyUpdate(value, ts, seq).to_payload(), 0, retain
    )


def iface(agent: str, xml: bytes = DEMO_XML, name: str = DEMO, retain: bool = True) -> Message:
    return Message(T.interface_xml(agent, name), xml, 1, retain)


class Feed:
    """A registry and a clock; ``send`` returns the events as (kind, agent, detail) tuples."""

    def __init__(self) -> None:
        self.registry = Registry()
        self.now = 5000.0

    def send(self, message: Message, *, dt: float = 1.0) -> list[tuple[str, str, Any]]:
        self.now += dt
        events = self.registry.handle(message, self.now)
        assert all(isinstance(e, Event) for e in events)
        return [(e.kind, e.agent_id, e.detail) for e in events]

    def kinds(self, message: Message) -> list[str]:
        return [k for k, _, _ in self.send(message)]


@pytest.fixture
def feed() -> Feed:
    return Feed()


# -- discovery ----------------------------------------------------------------------------------


def test_discovery_from_status_about_and_interface(feed: Feed) -> None:
    reg = feed.registry
    assert feed.send(birth("bat-1", 7)) == [("discovered", "bat-1", None), ("online", "bat-1", 7)]
    rec = reg.get("bat-1")
    assert rec is not None
    assert (rec.online, rec.bdseq, rec.keepalive_s) == (True, 7, 30)
    assert rec.online_since == 1000.0  # the birth's own ts
    assert rec.first_seen == feed.now
    assert rec.summary()["status"] == "online"

    assert feed.send(about("bat-1", 7)) == [("about", "bat-1", about_fields())]
    assert rec.about["DeviceName"] == "Battery 1"
    assert rec.interfaces == {DEMO: DEMO_SHA}
    assert list(rec.groups) == ["fleet"]
    assert reg.group_members("fleet") == [rec]
    assert reg.group_members("other") == []
    assert DEMO not in reg.interfaces_by_name  # XML not seen yet: the shipped definition
    assert reg.interface(DEMO) is reg.pinned[DEMO]

    assert feed.send(iface("bat-1")) == [("interface", "bat-1", DEMO)]
    learned = reg.interface(DEMO)
    assert isinstance(learned, Interface)
    assert learned.name == DEMO
    assert reg.interfaces_by_hash == {DEMO_SHA: learned}

    assert feed.send(prop("bat-1", "AssetName", "B1", seq=2)) == [
        ("property", "bat-1", f"{DEMO}.AssetName")
    ]
    assert rec.prop(DEMO, "AssetName") == "B1"
    assert rec.properties[f"{DEMO}.AssetName"].ts == 1001.0
    assert rec.properties[f"{DEMO}.AssetName"].received == feed.now
    assert rec.prop(DEMO, "Telemetry") is None
    assert reg.bad_messages == 0
    assert reg.messages == 4
    assert rec.messages == 4
    assert rec.gaps == 0


def test_first_message_of_any_kind_discovers(feed: Feed) -> None:
    assert feed.kinds(prop("bat-9", "AssetName", "x", retain=True)) == ["discovered", "property"]
    rec = feed.registry.get("bat-9")
    assert rec is not None and rec.online is None
    assert rec.summary()["status"] == "unknown"
    assert feed.kinds(birth("bat-9", 1, retain=True)) == ["online"]


def test_foreign_and_call_topics_ignored(feed: Feed) -> None:
    reg = feed.registry
    assert feed.send(Message("other/agents/a/status", b"junk")) == []
    assert feed.send(Message(T.call("a", DEMO, "EnergyMethod"), b"{}")) == []
    assert feed.send(Message(T.reply("c"), b"{}")) == []
    assert feed.send(Message(T.host_status("h"), b"{}")) == []
    assert reg.agents == {}
    assert reg.messages == 0
    assert reg.bad_messages == 0


# -- presence -----------------------------------------------------------------------------------


def test_online_offline_transitions(feed: Feed) -> None:
    reg = feed.registry
    feed.send(birth("bat-1", 10))
    rec = reg.get("bat-1")
    assert rec is not None
    assert feed.send(birth("bat-1", 10)) == []  # duplicate birth: no event
    assert feed.send(death("bat-1", 10, reason="shutdown")) == [("offline", "bat-1", "shutdown")]
    assert (rec.online, rec.offline_reason, rec.offline_since) == (False, "shutdown", feed.now)
    assert feed.send(death("bat-1", 10)) == []  # already offline
    assert feed.send(birth("bat-1", 11)) == [("online", "bat-1", 11)]
    assert (rec.online, rec.bdseq, rec.offline_reason) == (True, 11, None)
    assert feed.send(death("bat-1", 11)) == [("offline", "bat-1", "will")]  # no reason = will
    assert rec.offline_reason == "will"


def test_stale_death_ignored_agent_stays_online(feed: Feed) -> None:
    reg = feed.registry
    feed.send(birth("bat-1", 100))
    feed.send(about("bat-1", 100))
    feed.send(birth("bat-1", 200))  # restarted; the old session's will arrives late
    rec = reg.get("bat-1")
    assert rec is not None and rec.bdseq == 200
    events = feed.send(death("bat-1", 100))
    assert events == [("stale_death", "bat-1", 100)]
    assert (rec.online, rec.bdseq, rec.offline_since) == (True, 200, None)


def test_stale_birth_ignored(feed: Feed) -> None:
    feed.send(birth("bat-1", 200))
    feed.send(death("bat-1", 200))
    kinds = feed.kinds(birth("bat-1", 100))  # an old retained birth replayed
    assert "online" not in kinds
    rec = feed.registry.get("bat-1")
    assert rec is not None and (rec.online, rec.bdseq) == (False, 200)


def test_death_keeps_last_values_and_rebirth_brings_new_about(feed: Feed) -> None:
    reg = feed.registry
    feed.send(birth("bat-1", 100))
    feed.send(about("bat-1", 100, name="Battery 1"))
    feed.send(prop("bat-1", "Telemetry", {"SoC": 0.5}, seq=2))
    rec = reg.get("bat-1")
    assert rec is not None

    assert feed.send(death("bat-1", 100)) == [("offline", "bat-1", "will")]
    assert rec.online is False
    assert rec.prop(DEMO, "Telemetry") == {"SoC": 0.5}  # kept while offline
    assert rec.about["DeviceName"] == "Battery 1"
    assert rec.summary()["properties"][f"{DEMO}.Telemetry"]["value"] == {"SoC": 0.5}

    assert feed.send(birth("bat-1", 101)) == [("online", "bat-1", 101)]
    assert feed.kinds(about("bat-1", 101, name="Battery 1b", groups=["east"])) == ["about"]
    assert (rec.online, rec.bdseq) == (True, 101)
    assert rec.about["DeviceName"] == "Battery 1b"
    assert list(rec.groups) == ["east"]
    assert reg.group_members("fleet") == []
    assert rec.prop(DEMO, "Telemetry") == {"SoC": 0.5}


def test_retained_death_uses_its_timestamp(feed: Feed) -> None:
    payload = Status(False, 5, ts=1234.0, reason="shutdown").to_payload()
    assert feed.kinds(Message(T.status("bat-1"), payload, 1, True)) == ["discovered", "offline"]
    rec = feed.registry.get("bat-1")
    assert rec is not None and rec.offline_since == 1234.0
    assert rec.last_seen == 0.0  # retained deliveries are not "seen"


# -- sequence numbers ---------------------------------------------------------------------------


def test_gap_detected_on_live_messages(feed: Feed) -> None:
    assert feed.kinds(birth("bat-1", 1, seq=0)) == ["discovered", "online"]
    assert feed.kinds(about("bat-1", 1, seq=1)) == ["about"]
    assert feed.kinds(prop("bat-1", "AssetName", "a", seq=2)) == ["property"]
    events = feed.send(prop("bat-1", "AssetName", "b", seq=5))
    assert events == [("gap", "bat-1", (3, 5)), ("property", "bat-1", f"{DEMO}.AssetName")]
    rec = feed.registry.get("bat-1")
    assert rec is not None and rec.gaps == 1
    assert rec.prop(DEMO, "AssetName") == "b"  # the value is still taken
    assert feed.kinds(prop("bat-1", "AssetName", "c", seq=6)) == ["property"]  # resynced
    assert rec.gaps == 1


def test_seq_wraps_without_gap(feed: Feed) -> None:
    feed.send(birth("bat-1", 1, seq=2**32 - 2))
    assert feed.kinds(prop("bat-1", "AssetName", "a", seq=2**32 - 1)) == ["property"]
    assert feed.kinds(prop("bat-1", "AssetName", "b", seq=0)) == ["property"]
    assert feed.kinds(prop("bat-1", "AssetName", "c", seq=2)) == ["gap", "property"]


def test_no_gap_for_retained_deliveries(feed: Feed) -> None:
    assert feed.kinds(birth("bat-1", 1, seq=0, retain=True)) == ["discovered", "online"]
    assert feed.kinds(about("bat-1", 1, seq=1, retain=True)) == ["about"]
    assert feed.kinds(prop("bat-1", "AssetName", "a", seq=17, retain=True)) == ["property"]
    assert feed.kinds(prop("bat-1", "Telemetry", {}, seq=40, retain=True)) == ["property"]
    rec = feed.registry.get("bat-1")
    assert rec is not None and rec.gaps == 0


def test_no_gap_after_retained_birth_then_live_high_seq(feed: Feed) -> None:
    feed.send(birth("bat-1", 1, seq=0, retain=True))
    feed.send(about("bat-1", 1, seq=1, retain=True))
    assert feed.kinds(prop("bat-1", "Telemetry", {"SoC": 1}, seq=9000)) == ["property"]
    assert feed.kinds(prop("bat-1", "Telemetry", {"SoC": 2}, seq=9001)) == ["property"]
    assert feed.kinds(prop("bat-1", "Telemetry", {"SoC": 3}, seq=9003)) == ["gap", "property"]


def test_new_birth_resets_expected_seq(feed: Feed) -> None:
    feed.send(birth("bat-1", 1, seq=0))
    feed.send(prop("bat-1", "AssetName", "a", seq=50))  # first gap
    feed.send(birth("bat-1", 2, seq=0))
    assert feed.kinds(about("bat-1", 2, seq=1)) == ["about"]
    rec = feed.registry.get("bat-1")
    assert rec is not None and rec.gaps == 1


def test_live_message_updates_last_seen_retained_does_not(feed: Feed) -> None:
    feed.send(birth("bat-1", 1, retain=True))
    rec = feed.registry.get("bat-1")
    assert rec is not None and rec.last_seen == 0.0
    feed.send(prop("bat-1", "AssetName", "a", seq=1))
    assert rec.last_seen == feed.now


# -- bad messages -------------------------------------------------------------------------------


def _seeded(feed: Feed) -> None:
    feed.send(birth("bat-1", 3, seq=0))
    feed.send(about("bat-1", 3, seq=1))
    feed.send(iface("bat-1"))
    feed.send(prop("bat-1", "AssetName", "kept", seq=2))


@pytest.mark.parametrize(
    ("message", "detail_part"),
    [
        (Message(T.prop("bat-1", DEMO, "AssetName"), b"\xff\x00garbage"), "not UTF-8"),
        (Message(T.prop("bat-1", DEMO, "AssetName"), b'{"v":1,"val":"x"}'), "'value'"),
        (Message(T.prop("bat-1", DEMO, "AssetName"), b'{"v":9,"value":"x"}'), "version"),
        (Message(T.prop("bat-1", DEMO, "AssetName"), b'["v",1]'), "JSON object"),
        (Message(T.about("bat-1"), b'{"v":1,"bdseq":3,"about":{}}'), "AppId"),
        (Message(T.about("bat-1"), b"{not json"), "not JSON"),
        (Message(T.status("bat-1"), b'{"v":1,"state":"zombie","bdseq":4}'), "'state'"),
        (Message(T.status("bat-1"), b'{"v":1,"state":"offline","bdseq":"3"}'), "'bdseq'"),
        (
            Message(T.interface_xml("bat-1", DEMO), DEMO_XML[: len(DEMO_XML) // 2], 1, True),
            "does not load",
        ),
        (Message(T.interface_xml("bat-1", DEMO), b"\xff\xfe<node/>", 1, True), "bat-1"),
        (
            Message(T.interface_xml("bat-1", "edu.other.thing"), DEMO_XML, 1, True),
            "does not define it",
        ),
    ],
)
def test_bad_message_counted_and_state_untouched(
    feed: Feed, message: Message, detail_part: str
) -> None:
    _seeded(feed)
    reg = feed.registry
    rec = reg.get("bat-1")
    assert rec is not None
    before = (
        rec.online,
        rec.bdseq,
        dict(rec.about),
        dict(rec.interfaces),
        list(rec.groups),
        {k: v.value for k, v in rec.properties.items()},
        rec.expected_seq,
    )
    hashes = dict(reg.interfaces_by_hash)
    names = dict(reg.interfaces_by_name)
    last_seen = rec.last_seen

    events = feed.send(message)
    assert [k for k, _, _ in events] == ["bad_message"]
    _, agent, detail = events[0]
    assert agent == "bat-1"
    assert message.topic in detail
    assert detail_part in detail
    assert reg.bad_messages == 1
    after = (
        rec.online,
        rec.bdseq,
        dict(rec.about),
        dict(rec.interfaces),
        list(rec.groups),
        {k: v.value for k, v in rec.properties.items()},
        rec.expected_seq,
    )
    assert after == before
    assert rec.prop(DEMO, "AssetName") == "kept"
    assert reg.interfaces_by_hash == hashes
    assert reg.interfaces_by_name == names
    assert reg.interface(DEMO) is names[DEMO]
    assert rec.last_seen == last_seen

    # the registry keeps working afterwards
    assert feed.kinds(prop("bat-1", "AssetName", "new", seq=3)) == ["property"]
    assert rec.prop(DEMO, "AssetName") == "new"
    assert reg.bad_messages == 1


def test_bad_messages_counter_accumulates(feed: Feed) -> None:
    for n in range(1, 4):
        assert feed.kinds(Message(T.status("x"), b"\x00" * n))[-1] == "bad_message"
        assert feed.registry.bad_messages == n


def test_oversized_interface_xml_is_bad(feed: Feed) -> None:
    big = DEMO_XML + b"<!--" + b"x" * (256 * 1024) + b"-->"
    assert feed.kinds(iface("bat-1", big))[-1] == "bad_message"
    assert feed.registry.interfaces_by_hash == {}


def test_empty_payload_ignored(feed: Feed) -> None:
    reg = feed.registry
    # a cleared retained topic of an unknown agent creates nothing
    assert feed.send(Message(T.status("ghost"), b"", 1, True)) == []
    assert reg.get("ghost") is None
    _seeded(feed)
    rec = reg.get("bat-1")
    assert rec is not None
    for topic in (
        T.prop("bat-1", DEMO, "AssetName"),
        T.about("bat-1"),
        T.status("bat-1"),
        T.interface_xml("bat-1", DEMO),
        T.signal("bat-1", DEMO, "Alarm"),
    ):
        assert feed.send(Message(topic, b"", 1, True)) == []
    assert rec.prop(DEMO, "AssetName") == "kept"
    assert rec.online is True
    assert rec.about["DeviceName"] == "Battery 1"
    assert reg.interface(DEMO) is not None
    assert reg.bad_messages == 0


def test_interface_xml_cached_by_sha256(feed: Feed) -> None:
    reg = feed.registry
    assert feed.kinds(iface("bat-1")) == ["discovered", "interface"]
    first = reg.interface(DEMO)
    assert first is not None
    assert feed.kinds(iface("bat-2")) == ["discovered", "interface"]
    assert reg.interface(DEMO) is first  # same object: parsed once
    assert list(reg.interfaces_by_hash) == [DEMO_SHA]
    assert reg.interfaces_by_hash[DEMO_SHA] is first
    # different bytes (same interface) are parsed again into a new object
    variant = DEMO_XML.replace(b"<node", b"<!-- v2 --><node", 1)
    assert variant != DEMO_XML
    assert feed.kinds(iface("bat-3", variant)) == ["discovered", "interface"]
    assert len(reg.interfaces_by_hash) == 2
    assert reg.interfaces_by_hash[hashlib.sha256(variant).hexdigest()] is not first


def test_about_after_xml_links_interface_by_name(feed: Feed) -> None:
    feed.send(iface("bat-1"))
    reg = feed.registry
    cached = reg.interfaces_by_hash[DEMO_SHA]
    reg.interfaces_by_name.clear()
    feed.send(about("bat-2", 1, seq=None))
    assert reg.interface(DEMO) is cached


def test_signal_event(feed: Feed) -> None:
    payload = b'{"v":1,"seq":4,"args":[1,"x"]}'
    feed.send(birth("bat-1", 1, seq=0))
    events = feed.send(Message(T.signal("bat-1", DEMO, "Alarm"), payload))
    assert events == [("gap", "bat-1", (1, 4)), ("signal", "bat-1", (f"{DEMO}.Alarm", [1, "x"]))]


def test_cached_xml_published_under_another_name_is_rejected(feed: Feed) -> None:
    """The sha256 cache must not skip the 'XML defines the announced interface' check."""
    reg = feed.registry
    feed.send(iface("bat-1"))  # cached now
    events = feed.send(iface("bat-2", name="edu.other.thing"))
    assert [k for k, _, _ in events] == ["discovered", "bad_message"]
    assert "does not define it" in events[-1][2]
    assert reg.interface("edu.other.thing") is None
    assert reg.interface(DEMO) is reg.interfaces_by_hash[DEMO_SHA]
    assert reg.bad_messages == 1

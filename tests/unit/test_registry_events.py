"""Typed registry events: every kind the registry emits, with its typed fields, and the
``/events`` stream's JSON for each (the wire format documented in docs/api.md)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from typing import Any

import pytest

from sef.bus import About, GatewayAgents, InterfaceRef, Message, PropertyUpdate, Status, Topics
from sef.ems import (
    EMS,
    AboutReceived,
    BadMessage,
    Discovered,
    Event,
    EventKind,
    Gap,
    GatewayDown,
    GatewayUp,
    InterfaceLoaded,
    Offline,
    Online,
    Pending,
    PropertyBackfilled,
    PropertyChanged,
    SessionReset,
    SignalReceived,
    StaleStatus,
)
from sef.ems.api._events import event_json
from sef.interface import builtin_xml

DEMO = "edu.pdx.powerlab.demo"
DEMO_XML = builtin_xml(DEMO).encode()
T = Topics()
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
ALL = (
    Discovered,
    Online,
    Offline,
    StaleStatus,
    AboutReceived,
    PropertyChanged,
    PropertyBackfilled,
    InterfaceLoaded,
    SignalReceived,
    Gap,
    BadMessage,
    GatewayUp,
    GatewayDown,
    Pending,
    SessionReset,
)


def test_every_kind_is_one_class_and_in_the_union() -> None:
    assert {cls.kind for cls in ALL} == set(typing.get_args(EventKind))
    assert len({cls.kind for cls in ALL}) == len(ALL) == 15
    assert set(typing.get_args(Event)) == set(ALL)
    for cls in ALL:
        assert dataclasses.is_dataclass(cls)
        # the dataclass parameters are not in the type stubs
        assert cls.__dataclass_params__.frozen  # type: ignore[union-attr]


def test_events_are_immutable() -> None:
    event = Online("bat-1", 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.bdseq = 4  # type: ignore[misc]


@pytest.fixture
def ems() -> EMS:
    return EMS("mqtt://127.0.0.1:1", "events-test", announce=False, request_rebirth=False)


class Feed:
    def __init__(self, ems: EMS) -> None:
        self.ems = ems
        self.now = 5000.0

    def send(self, topic: str, payload: bytes, *, retain: bool = False) -> list[Event]:
        self.now += 1.0
        return self.ems.registry.handle(Message(topic, payload, 1, retain), self.now)

    def wire(self, events: list[Event]) -> list[dict[str, Any]]:
        """What /events streams for them (``ts`` left out), through JSON and back."""
        out = []
        for event in events:
            data = json.loads(json.dumps(event_json(self.ems, event)))
            assert isinstance(data.pop("ts"), float)
            out.append(data)
        return out


@pytest.fixture
def feed(ems: EMS) -> Feed:
    return Feed(ems)


def test_agent_lifecycle_events_and_their_wire_form(feed: Feed) -> None:
    events = feed.send(T.status("bat-1"), Status(True, 7, 1000.0, 30, 0).to_payload())
    assert events == [Discovered("bat-1"), Online("bat-1", 7)]
    assert feed.wire(events) == [
        {"kind": "discovered", "agent": "bat-1", "detail": None},
        {"kind": "online", "agent": "bat-1", "detail": 7, "status": "online"},
    ]

    about = About(
        ABOUT, [InterfaceRef(DEMO, hashlib.sha256(DEMO_XML).hexdigest())], ["g"], 7, 1000.0, 1
    )
    events = feed.send(T.about("bat-1"), about.to_payload())
    assert events == [AboutReceived("bat-1", ABOUT)]
    assert feed.wire(events) == [{"kind": "about", "agent": "bat-1", "detail": ABOUT}]

    events = feed.send(T.interface_xml("bat-1", DEMO), DEMO_XML, retain=True)
    assert events == [InterfaceLoaded("bat-1", DEMO)]
    assert feed.wire(events) == [{"kind": "interface", "agent": "bat-1", "detail": DEMO}]

    value = {"TimeStamp": ["u", 1], "Sys_SOC": ["d", 42.0]}
    events = feed.send(
        T.prop("bat-1", DEMO, "Telemetry"), PropertyUpdate(value, 1001.0, 2).to_payload()
    )
    assert events == [PropertyChanged("bat-1", f"{DEMO}.Telemetry")]
    assert feed.wire(events) == [
        {
            "kind": "property",
            "agent": "bat-1",
            "detail": f"{DEMO}.Telemetry",
            "key": f"{DEMO}.Telemetry",
            "value": value,
            "value_ts": 1001.0,
        }
    ]

    events = feed.send(T.signal("bat-1", DEMO, "Alarm"), b'{"v":1,"seq":5,"args":[1,"x"]}')
    assert events == [Gap("bat-1", 3, 5), SignalReceived("bat-1", f"{DEMO}.Alarm", [1, "x"])]
    assert feed.wire(events) == [
        {"kind": "gap", "agent": "bat-1", "detail": [3, 5]},
        {"kind": "signal", "agent": "bat-1", "detail": [f"{DEMO}.Alarm", [1, "x"]]},
    ]

    events = feed.send(T.status("bat-1"), Status(True, 6, 1000.0, 30, 0).to_payload())
    assert events == [StaleStatus("bat-1", 6, birth=True)]
    events += feed.send(T.status("bat-1"), Status(False, 5, reason="will").to_payload())
    assert events[1:] == [StaleStatus("bat-1", 5)]
    assert feed.wire(events) == [
        {"kind": "stale_death", "agent": "bat-1", "detail": "stale birth bdseq 6"},
        {"kind": "stale_death", "agent": "bat-1", "detail": 5},
    ]

    events = feed.send(T.status("bat-1"), Status(False, 7, reason="shutdown").to_payload())
    assert events == [Offline("bat-1", "shutdown")]
    assert feed.wire(events) == [
        {"kind": "offline", "agent": "bat-1", "detail": "shutdown", "status": "offline"}
    ]


@pytest.mark.parametrize(
    "payload",
    [
        b'{"v":1,"seq":1}',  # no args
        b'{"v":1,"args":{"a":1}}',  # args not an array
        b'{"v":1,"args":[],"seq":-3}',
        b'{"v":2,"args":[]}',
        b"\xff",
    ],
)
def test_bad_signal_is_a_bad_message(feed: Feed, payload: bytes) -> None:
    feed.send(T.status("bat-1"), Status(True, 1, 1000.0, 30, 0).to_payload())
    topic = T.signal("bat-1", DEMO, "Alarm")
    events = feed.send(topic, payload)
    assert len(events) == 1 and isinstance(events[0], BadMessage)
    assert events[0].topic == topic and events[0].reason
    assert feed.ems.registry.bad_messages == 1
    [wire] = feed.wire(events)
    assert wire["kind"] == "bad_message" and wire["agent"] == "bat-1"
    assert wire["detail"] == f"{topic}: {events[0].reason}"


def test_gateway_events_carry_the_home_and_its_agents(feed: Feed) -> None:
    for agent in ("bat-1", "wh-1"):
        feed.send(T.status(agent), Status(True, 1, 1000.0, 30, 0).to_payload())
    listed = GatewayAgents("home-1", ["bat-1", "wh-1", "gone-1"]).to_payload()
    assert feed.send(T.gateway_agents("home-1"), listed, retain=True) == []
    assert feed.ems.registry.gateway_agents["home-1"] == ["bat-1", "wh-1", "gone-1"]

    events = feed.send(T.gateway_status("home-1"), b"0", retain=True)
    behind = ("bat-1", "wh-1", "gone-1")
    assert events == [
        GatewayDown("home-1", behind),
        Offline("bat-1", "gateway"),
        Offline("wh-1", "gateway"),
    ]
    assert events[0].agent_id == "home-1"
    assert feed.wire(events) == [
        {"kind": "gateway_down", "agent": "home-1", "detail": list(behind)},
        {"kind": "offline", "agent": "bat-1", "detail": "gateway", "status": "offline"},
        {"kind": "offline", "agent": "wh-1", "detail": "gateway", "status": "offline"},
    ]
    record = feed.ems.registry.get("bat-1")
    assert record is not None and record.online is False and record.offline_reason == "gateway"

    events = feed.send(T.gateway_status("home-1"), b"1", retain=True)
    assert events == [GatewayUp("home-1", behind)]
    assert feed.wire(events) == [{"kind": "gateway_up", "agent": "home-1", "detail": list(behind)}]


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        (T.gateway_agents("home-1"), b'{"agents":["a"]}'),  # no protocol version
        (T.gateway_agents("home-1"), b'{"v":1,"home":"home-1","agents":[1]}'),
        (T.gateway_agents("home-1"), b"not json"),
        (T.gateway_status("home-1"), b"up"),
        (T.gateway_status("home-1"), b""),
    ],
)
def test_bad_gateway_payloads_are_counted_and_change_nothing(
    feed: Feed, topic: str, payload: bytes
) -> None:
    assert feed.send(topic, payload) == []
    assert feed.ems.registry.bad_messages == 1
    assert feed.ems.registry.gateway_agents == {}


def test_events_match_on_their_types() -> None:
    """How a consumer reads an event: by its type and typed fields, no strings."""

    def describe(event: Event) -> str:
        match event:
            case Online(agent, bdseq):
                return f"{agent} up in session {bdseq}"
            case Offline(agent, reason):
                return f"{agent} down ({reason})"
            case Gap(agent, expected, got):
                return f"{agent} lost {(got - expected) % 2**32}"
            case GatewayUp(home, agents) | GatewayDown(home, agents):
                return f"{home}: {len(agents)}"
            case _:
                return event.kind

    assert describe(Online("a", 3)) == "a up in session 3"
    assert describe(Offline("a", "will")) == "a down (will)"
    assert describe(Gap("a", 3, 5)) == "a lost 2"
    assert describe(GatewayDown("h", ("a", "b"))) == "h: 2"
    assert describe(Discovered("a")) == "discovered"

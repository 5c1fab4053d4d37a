"""The registry takes duplicates, replays and backfilled samples right (issue 19;
``docs/protocol.md`` §4.6, §4.7): real bus :class:`Message` objects, cycle by cycle.

The scenario of the issue: a home gateway's uplink comes back and its bridge flushes
copies of the home's retained state (birth, About, last properties) with the retain flag
cleared. They must cause no gap, no state change and no event (so nothing is stored
twice); a real rebirth (new ``ts``) is still taken; samples an agent buffered while
disconnected (``"backfill": true``) are history, never the last known value.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from sef.bus import (
    SEQ_MODULUS,
    About,
    GatewayAgents,
    InterfaceRef,
    Message,
    PropertyUpdate,
    Status,
    Topics,
)
from sef.ems import (
    AboutReceived,
    Admission,
    BadMessage,
    Event,
    Gap,
    Offline,
    Online,
    PropertyBackfilled,
    PropertyChanged,
    Registry,
)
from sef.interface import builtin_xml

T = Topics()
AGENT = "bat-1"
DEMO = "edu.pdx.powerlab.demo"
TELEMETRY = f"{DEMO}.Telemetry"
MODE = f"{DEMO}.Mode"
WALL = 1_800_000_000.0  # the EMS's wall clock, Unix s
B1 = int(WALL * 1000) - 10_000  # session numbers (ms, as agents make them)
B2 = B1 + 5000
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


class Feed:
    """A registry fed message by message, one EMS second apart."""

    def __init__(self) -> None:
        self.registry = Registry(
            T, admission=Admission.open(), wall_clock=lambda: WALL, monotonic=lambda: 0.0
        )
        self.now = WALL

    def send(self, message: Message) -> list[Event]:
        self.now += 1.0
        return self.registry.handle(message, self.now)

    @property
    def record(self) -> Any:
        record = self.registry.get(AGENT)
        assert record is not None
        return record


def birth(bdseq: int, ts: float, *, retain: bool = False) -> Message:
    return Message(T.status(AGENT), Status(True, bdseq, ts, 10, 0).to_payload(), 1, retain)


def about(bdseq: int, seq: int, *, retain: bool = False) -> Message:
    sha = hashlib.sha256(builtin_xml(DEMO).encode()).hexdigest()
    payload = About(ABOUT, [InterfaceRef(DEMO, sha)], ["feeder-1"], bdseq, WALL, seq)
    return Message(T.about(AGENT), payload.to_payload(), 1, retain)


def prop(
    name: str, value: Any, ts: float, seq: int, *, retain: bool = False, backfill: bool = False
) -> Message:
    update = PropertyUpdate(value, ts, seq, backfill)
    return Message(T.prop(AGENT, DEMO, name), update.to_payload(), 1, retain)


def telemetry(n: int, ts: float, seq: int, **kwargs: Any) -> Message:
    return prop("Telemetry", {"n": ["x", n]}, ts, seq, **kwargs)


def copy_live(message: Message) -> Message:
    """``message`` as a bridge flushes it again: same payload, retain flag cleared."""
    return Message(message.topic, message.payload, 1, False)


def live_session(feed: Feed, birth_ts: float) -> dict[str, Message]:
    """Birth (seq 0), About (1), Mode (2, retained), telemetry 3..10 (retained, as agents
    publish properties); returns the retained messages a broker would hold."""
    held = {"status": birth(B1, birth_ts, retain=True)}
    assert feed.send(copy_live(held["status"]))[-1] == Online(AGENT, B1)
    held["about"] = about(B1, 1, retain=True)
    assert feed.send(copy_live(held["about"])) == [AboutReceived(AGENT, ABOUT)]
    held["mode"] = prop("Mode", ["s", "auto"], birth_ts, 2, retain=True)
    assert feed.send(copy_live(held["mode"])) == [PropertyChanged(AGENT, MODE)]
    for seq in range(3, 11):
        held["telemetry"] = telemetry(seq, birth_ts + seq, seq, retain=True)
        assert feed.send(copy_live(held["telemetry"])) == [PropertyChanged(AGENT, TELEMETRY)]
    return held


def state(feed: Feed) -> tuple[Any, ...]:
    """Everything a duplicate must leave alone."""
    r = feed.record
    props = {k: (v.value, v.ts, v.received, v.seq) for k, v in r.properties.items()}
    return (r.online, r.bdseq, r.about, r.groups, props, r.last_seen, r.gaps, r.online_since)


@pytest.mark.parametrize("gateway_cut", [False, True])
def test_replayed_retained_state_after_a_cut_is_ignored(gateway_cut: bool) -> None:
    feed = Feed()
    held = live_session(feed, WALL - 100)
    if gateway_cut:  # the home's bridge went down and came back
        listed = GatewayAgents("home-1", [AGENT]).to_payload()
        feed.send(Message(T.gateway_agents("home-1"), listed, 1, True))
        down = feed.send(Message(T.gateway_status("home-1"), b"0", 1, True))
        assert Offline(AGENT, "gateway") in down
        feed.send(Message(T.gateway_status("home-1"), b"1", 1, True))
    before = state(feed)
    # the bridge flushes the home's retained state with the retain flag cleared, twice
    # (the user's 20 s cut: 8 false gaps before), and re-sends in-flight telemetry 7..10
    replays = [copy_live(held[k]) for k in ("status", "about", "mode", "telemetry")] * 2
    replays += [telemetry(seq, WALL - 100 + seq, seq) for seq in range(7, 11)]
    for message in replays:
        assert feed.send(message) == []
    assert state(feed) == before
    assert feed.record.gaps == 0
    assert feed.record.duplicates == len(replays) == feed.registry.duplicates == 12
    # the session goes on: the next live message is taken, without a gap
    assert feed.send(telemetry(11, WALL - 89, 11)) == [PropertyChanged(AGENT, TELEMETRY)]
    assert feed.record.prop(DEMO, "Telemetry") == {"n": ["x", 11]}
    assert feed.record.gaps == 0
    assert feed.record.summary()["duplicates"] == 12


def test_a_rebirth_with_a_new_ts_is_taken_and_restarts_the_sequence() -> None:
    feed = Feed()
    live_session(feed, WALL - 100)
    # another client asked for a rebirth: same bdseq, seq 0, a new ts
    assert feed.send(birth(B1, WALL - 50)) == []  # still online: no Online event
    assert feed.record.birth_ts == WALL - 50
    assert feed.send(about(B1, 1)) == [AboutReceived(AGENT, ABOUT)]
    events = feed.send(prop("Mode", ["s", "manual"], WALL - 50, 2))
    assert events == [PropertyChanged(AGENT, MODE)]
    assert feed.record.prop(DEMO, "Mode") == ["s", "manual"]
    assert feed.send(telemetry(3, WALL - 49, 3)) == [PropertyChanged(AGENT, TELEMETRY)]
    assert feed.record.gaps == 0 and feed.record.duplicates == 0
    # now the rebirth is the accepted birth: its replayed copy is a duplicate
    assert feed.send(birth(B1, WALL - 50)) == []
    assert feed.record.duplicates == 1
    assert feed.send(telemetry(4, WALL - 48, 4)) == [PropertyChanged(AGENT, TELEMETRY)]
    assert feed.record.gaps == 0


def test_a_lost_message_is_still_a_gap() -> None:
    feed = Feed()
    live_session(feed, WALL - 100)
    events = feed.send(telemetry(13, WALL - 87, 13))  # 11 and 12 lost
    assert events == [Gap(AGENT, 11, 13), PropertyChanged(AGENT, TELEMETRY)]
    assert feed.record.gaps == 1 and feed.record.duplicates == 0
    # 12 arriving late is behind the last accepted (13): a duplicate, not a second gap
    assert feed.send(telemetry(12, WALL - 88, 12)) == []
    assert feed.record.prop(DEMO, "Telemetry") == {"n": ["x", 13]}
    assert feed.record.gaps == 1 and feed.record.duplicates == 1


def test_a_replayed_birth_after_the_death_does_not_bring_the_agent_back() -> None:
    feed = Feed()
    held = live_session(feed, WALL - 100)
    death = Status(False, B1, WALL - 80, None, 11, "shutdown").to_payload()
    assert feed.send(Message(T.status(AGENT), death, 1, False)) == [Offline(AGENT, "shutdown")]
    assert feed.send(Message(T.status(AGENT), death, 1, False)) == []  # its copy
    assert feed.send(copy_live(held["status"])) == []  # the old birth, replayed
    assert feed.record.online is False
    assert feed.record.duplicates == 2 and feed.record.gaps == 0


def test_retained_deliveries_keep_their_rules() -> None:
    """A retained message is old news: never sequence-checked, never a duplicate."""
    feed = Feed()
    held = live_session(feed, WALL - 100)
    assert feed.send(held["telemetry"]) == [PropertyChanged(AGENT, TELEMETRY)]
    assert feed.send(held["status"]) == []  # retained birth of the current session
    assert feed.record.online is True and feed.record.expected_seq is None
    assert feed.record.duplicates == 0 and feed.record.gaps == 0


def test_backfill_after_a_reconnection_is_history_not_the_last_value() -> None:
    feed = Feed()
    live_session(feed, WALL - 100)  # telemetry up to ts WALL - 90
    will = Message(T.status(AGENT), Status(False, B1, reason="will").to_payload(), 1, False)
    assert feed.send(will) == [Offline(AGENT, "will")]
    # the agent kept 5 updates while disconnected; new session: birth, About, current
    # values, then the buffered updates, oldest first, with the new session's seq
    assert feed.send(birth(B2, WALL - 20))[-1] == Online(AGENT, B2)
    feed.send(about(B2, 1))
    feed.send(prop("Mode", ["s", "auto"], WALL - 100, 2))  # unchanged: its original ts
    assert feed.send(telemetry(99, WALL - 20, 3)) == [PropertyChanged(AGENT, TELEMETRY)]
    backfilled: list[Event] = []
    for i in range(5):
        backfilled += feed.send(telemetry(20 + i, WALL - 80 + i, 4 + i, backfill=True))
    assert backfilled == [
        PropertyBackfilled(AGENT, TELEMETRY, {"n": ["x", 20 + i]}, WALL - 80 + i, 4 + i)
        for i in range(5)
    ]
    record = feed.record
    assert record.gaps == 0 and record.duplicates == 0
    assert record.backfilled == 5 == feed.registry.backfilled
    assert record.prop(DEMO, "Telemetry") == {"n": ["x", 99]}  # the birth's current value
    assert record.properties[TELEMETRY].ts == WALL - 20
    assert backfilled[0].kind == "backfill" and backfilled[0].detail == (TELEMETRY, WALL - 80)
    # a backfilled update replayed is a duplicate; the session continues
    assert feed.send(telemetry(22, WALL - 78, 6, backfill=True)) == []
    assert feed.send(telemetry(100, WALL - 19, 9)) == [PropertyChanged(AGENT, TELEMETRY)]
    assert (record.gaps, record.duplicates, record.backfilled) == (0, 1, 5)
    assert record.summary()["backfilled"] == 5


def test_a_gap_in_the_backfill_is_a_gap() -> None:
    feed = Feed()
    feed.send(birth(B2, WALL - 20))
    events = feed.send(telemetry(1, WALL - 80, 3, backfill=True))
    sample = PropertyBackfilled(AGENT, TELEMETRY, {"n": ["x", 1]}, WALL - 80, 3)
    assert events == [Gap(AGENT, 1, 3), sample]


@pytest.mark.parametrize(
    "payload",
    [
        b'{"v":1,"seq":1,"value":1,"backfill":true}',  # no original ts
        b'{"v":1,"seq":1,"ts":5.0,"value":1,"backfill":1}',  # not a JSON boolean
        b'{"v":1,"seq":1,"ts":5.0,"value":1,"backfill":"true"}',
    ],
)
def test_a_malformed_backfill_is_a_bad_message(payload: bytes) -> None:
    feed = Feed()
    feed.send(birth(B2, WALL - 20))
    events = feed.send(Message(T.prop(AGENT, DEMO, "Telemetry"), payload, 1, False))
    assert len(events) == 1 and isinstance(events[0], BadMessage)
    assert TELEMETRY not in feed.record.properties and feed.record.backfilled == 0


def test_duplicates_across_the_seq_wrap() -> None:
    feed = Feed()
    feed.send(birth(B1, WALL - 100))
    top = SEQ_MODULUS - 1
    feed.record.last_seq, feed.record.expected_seq = top - 1, top  # a long session
    assert feed.send(telemetry(1, WALL - 99, top)) == [PropertyChanged(AGENT, TELEMETRY)]
    assert feed.send(telemetry(2, WALL - 98, 0)) == [PropertyChanged(AGENT, TELEMETRY)]
    assert feed.send(telemetry(1, WALL - 99, top)) == []  # behind, across the wrap
    assert feed.send(telemetry(2, WALL - 98, 0)) == []  # equal
    assert feed.send(telemetry(3, WALL - 97, 1)) == [PropertyChanged(AGENT, TELEMETRY)]
    assert (feed.record.gaps, feed.record.duplicates) == (0, 2)


def test_a_message_dated_far_ahead_does_not_move_the_sequence() -> None:
    """A forged update dated 2096 with a high seq (a rogue on a broker without ACLs) must
    not make the agent's real messages look like duplicates."""
    feed = Feed()
    live_session(feed, WALL - 100)
    forged = telemetry(-1, 3_976_214_400.0, 500)
    assert feed.send(forged) == [PropertyChanged(AGENT, TELEMETRY)]  # the store refuses it
    assert (feed.record.last_seq, feed.record.expected_seq) == (10, 11)
    assert feed.send(telemetry(11, WALL - 89, 11)) == [PropertyChanged(AGENT, TELEMETRY)]
    assert (feed.record.gaps, feed.record.duplicates) == (0, 0)
    # within the window it is sequence-checked like any message
    assert feed.send(telemetry(12, feed.now + 200, 13)) == [
        Gap(AGENT, 12, 13),
        PropertyChanged(AGENT, TELEMETRY),
    ]

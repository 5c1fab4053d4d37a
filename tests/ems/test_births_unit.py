"""Unit tests of :class:`sef.ems._births.BirthTracker`: a real registry fed message by
message, the tracker fed its events, and an in-memory clock (plain floats, s)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from sef.bus import About, InterfaceRef, Message, PropertyUpdate, Status, Topics
from sef.ems import _births as births
from sef.ems._births import BirthTracker
from sef.ems._registry import Registry
from sef.interface import builtin_xml

T = Topics()
DEMO = "edu.pdx.powerlab.demo"
DEMO_SHA = hashlib.sha256(builtin_xml(DEMO).encode()).hexdigest()
THING = "org.example.Thing"
THING_XML = (
    b'<node><interface name="org.example.Thing">'
    b'<property name="Level" type="d" access="read"/></interface></node>'
)
THING_SHA = hashlib.sha256(THING_XML).hexdigest()
BDSEQ = 1_700_000_000_000
FIELDS = {
    "AppId": "0b8e",
    "DeviceId": "d",
    "AppName": "a",
    "Manufacturer": "m",
    "ModelNumber": "1",
    "DefaultLanguage": "en",
    "DeviceName": "n",
    "SoftwareVersion": "1",
}


def status(agent: str, online: bool = True, bdseq: int = BDSEQ, retain: bool = True) -> Message:
    payload = Status(online, bdseq, 1000.0, 30, 0 if online else None).to_payload()
    return Message(T.status(agent), payload, 1, retain)


def about(
    agent: str, bdseq: int = BDSEQ, refs: tuple[tuple[str, str], ...] = ((DEMO, DEMO_SHA),)
) -> Message:
    interfaces = [InterfaceRef(name, sha) for name, sha in refs]
    payload = About(FIELDS, interfaces, ["g1"], bdseq, 1000.0, 1).to_payload()
    return Message(T.about(agent), payload, 1, True)


def prop(agent: str, member: str = "AssetName", value: Any = "x", iface: str = DEMO) -> Message:
    return Message(
        T.prop(agent, iface, member), PropertyUpdate(value, 1001.0, 2).to_payload(), 0, True
    )


class Rig:
    """A registry and its tracker; messages go through both, times are plain floats."""

    def __init__(self, **kwargs: Any) -> None:
        self.registry = Registry(T, wall_clock=lambda: BDSEQ / 1000 + 10)
        self.tracker = BirthTracker(self.registry, **kwargs)
        self.asked: list[tuple[float, str]] = []

    def feed(self, now: float, *messages: Message) -> None:
        for message in messages:
            if message.retain:
                self.tracker.retained(now)
            for event in self.registry.handle(message, 1000.0 + now):
                self.tracker.observe(event, now)

    def birth(self, now: float, agent: str) -> None:
        self.feed(now, status(agent), about(agent), prop(agent))

    def sweep(self, now: float, accept: bool = True) -> list[str]:
        asked = self.tracker.sweep(now, lambda agent_id, reason: accept)
        self.asked += [(now, a) for a in asked]
        return asked


def test_a_whole_birth_is_complete_and_never_asked() -> None:
    rig = Rig()
    rig.birth(0.0, "a1")
    assert rig.tracker.pending == 0
    assert rig.sweep(100.0) == [] and rig.tracker.incomplete == 0


def test_a_status_alone_is_incomplete_after_the_grace_and_completes_with_its_birth() -> None:
    rig = Rig(grace_s=5.0)
    rig.feed(0.0, status("a1"))
    record = rig.registry.agents["a1"]
    assert rig.tracker.missing(record) == ("about",)
    assert rig.tracker.pending == 1
    assert rig.sweep(4.9) == [] and rig.tracker.incomplete == 0  # within the grace
    assert rig.sweep(5.0) == ["a1"] and rig.tracker.incomplete == 1
    rig.feed(5.1, about("a1"))  # About: now its demo properties are missing
    assert rig.tracker.missing(record) == ("properties",) and rig.tracker.incomplete == 1
    rig.feed(5.2, prop("a1"))
    assert rig.tracker.missing(record) == () and rig.tracker.incomplete == 0
    assert rig.tracker.resolved == 1
    assert rig.sweep(60.0) == []


def test_no_agent_is_incomplete_while_the_retained_backlog_drains() -> None:
    rig = Rig(grace_s=5.0, drain_quiet_s=2.0, max_drain_s=60.0)
    rig.tracker.subscribed(0.0)
    rig.feed(0.0, status("a1"))
    for t in range(1, 20):  # retained messages of other agents keep arriving
        rig.birth(float(t), f"b{t}")
        assert rig.sweep(float(t) + 0.5) == []
    assert rig.tracker.incomplete == 0 and rig.tracker.draining(20.5)
    assert not rig.tracker.draining(21.0)  # 2 s without a retained message: drained
    assert rig.sweep(21.0) == [] and rig.tracker.pending == 1  # checked: its grace starts
    assert rig.sweep(25.9) == []
    assert rig.sweep(26.0) == ["a1"]


def test_the_check_after_a_drain_is_spread_over_sweeps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(births, "SCAN_CHUNK", 2)
    rig = Rig(grace_s=0.0, drain_quiet_s=1.0, burst=10.0)
    rig.tracker.subscribed(0.0)
    for i in range(5):
        rig.feed(0.0, status(f"a{i}"))  # Abouts and properties dropped
    rig.birth(0.0, "whole")
    assert rig.tracker.pending == 0  # nothing checked while draining
    assert rig.sweep(1.0) == ["a0", "a1"]  # 2 records per sweep (grace 0: asked at once)
    assert rig.sweep(1.25) == ["a2", "a3"]
    assert rig.sweep(1.5) == ["a4"]  # and "whole" was complete
    assert rig.sweep(1.75) == [] and rig.tracker.incomplete == 5


def test_a_drain_never_holds_detection_back_past_its_cap() -> None:
    rig = Rig(grace_s=0.0, drain_quiet_s=2.0, max_drain_s=10.0)
    rig.tracker.subscribed(0.0)
    rig.feed(0.0, status("a1"))
    for t in range(1, 12):
        rig.tracker.retained(float(t))
        assert rig.sweep(float(t) + 0.1) == (["a1"] if t == 10 else []), t


def test_unknown_status_offline_and_new_sessions() -> None:
    rig = Rig(grace_s=0.0)
    rig.feed(0.0, about("u1"), prop("u1"))  # its status was dropped
    assert rig.tracker.missing(rig.registry.agents["u1"]) == ("status",)
    rig.feed(0.0, status("off", online=False))  # offline: nothing to ask
    rig.feed(0.0, about("off"))
    assert rig.sweep(1.0) == ["u1"]
    rig.birth(1.5, "n1")
    assert rig.tracker.pending == 0
    rig.feed(2.0, status("n1", online=False, retain=False))  # goes away, comes back:
    rig.feed(3.0, status("n1", bdseq=BDSEQ + 5, retain=False))  # a new session
    assert rig.tracker.missing(rig.registry.agents["n1"]) == ("about",)
    rig.feed(3.1, about("n1", bdseq=BDSEQ + 5))
    assert rig.tracker.pending == 0
    rig.feed(3.2, status("u1", online=False, retain=False))  # incomplete, then offline
    assert rig.tracker.incomplete == 0


def test_an_interface_the_registry_does_not_know_until_its_xml_or_blob_arrives() -> None:
    rig = Rig(grace_s=0.0)
    refs = ((THING, THING_SHA),)
    rig.feed(0.0, status("x1"), about("x1", refs=refs))
    assert rig.tracker.missing(rig.registry.agents["x1"]) == ("interface",)
    rig.feed(0.0, status("x2"), about("x2", refs=refs))
    assert sorted(rig.sweep(1.0)) == ["x1", "x2"]
    # x1's own XML (version 1): an InterfaceLoaded event; then its property
    rig.feed(1.5, Message(T.interface_xml("x1", THING), THING_XML, 1, True))
    assert rig.tracker.missing(rig.registry.agents["x1"]) == ("properties",)
    rig.feed(1.6, prop("x1", "Level", 1.5, THING))
    # the definition is now known for x2 too (by name); it still lacks its property
    assert rig.tracker.missing(rig.registry.agents["x2"]) == ("properties",)
    rig.feed(1.7, prop("x2", "Level", 1.5, THING))
    assert rig.tracker.incomplete == 0


def test_a_blob_learned_without_an_agent_event_completes_the_agents_at_the_sweep() -> None:
    rig = Rig(grace_s=0.0, require_properties=False)
    rig.feed(0.0, status("x1"), about("x1", refs=((THING, THING_SHA),)))
    assert rig.sweep(1.0) == ["x1"]
    rig.feed(1.5, Message(T.interface_blob(THING_SHA), THING_XML, 1, True))
    assert rig.tracker.incomplete == 1  # the blob has no agent event...
    assert rig.sweep(2.0) == [] and rig.tracker.incomplete == 0  # ...the sweep rechecks


def test_a_restored_about_counts_for_its_own_session_only() -> None:
    source = Rig()
    source.birth(0.0, "s1")
    source.birth(0.0, "s2")
    rig = Rig(grace_s=0.0)
    for agent_id in ("s1", "s2"):
        record = source.registry.agents[agent_id]
        rig.registry.restore(record)
        rig.tracker.restored(record)
    rig.feed(0.0, status("s1"))  # same session as stored: its stored About holds
    rig.feed(0.0, status("s2", bdseq=BDSEQ + 1))  # a new session: its About was lost
    assert rig.sweep(1.0) == ["s2"]


def test_a_restored_agent_silent_after_the_drain_is_asked_too() -> None:
    source = Rig()
    source.birth(0.0, "quiet")
    source.birth(0.0, "heard")
    rig = Rig(grace_s=2.0, drain_quiet_s=1.0)
    for agent_id in ("quiet", "heard"):
        rig.registry.restore(source.registry.agents[agent_id])  # online: unknown now
        rig.tracker.restored(rig.registry.agents[agent_id])
    rig.tracker.subscribed(0.0)
    rig.feed(0.5, status("heard"))  # every retained message of "quiet" was dropped
    assert rig.sweep(1.0) == []  # draining
    assert rig.sweep(1.6) == [] and rig.tracker.pending == 1  # drained: watched from now
    assert rig.sweep(3.5) == []
    assert rig.sweep(3.6) == ["quiet"]
    assert rig.tracker.missing(rig.registry.agents["quiet"]) == ("status",)


def test_rate_limit_and_backoff_cycle_by_cycle() -> None:
    """2 agents/s (burst 2), backoff 5 s doubling to 20 s, grace 5 s; five agents."""
    rig = Rig(grace_s=5.0, rate=2.0, burst=2.0, backoff_s=5.0, backoff_max_s=20.0, adaptive=False)
    for i in range(5):
        rig.feed(0.0, status(f"a{i}"))
    assert rig.sweep(4.9) == []
    assert rig.sweep(5.0) == ["a0", "a1"]  # oldest first, the burst
    assert rig.tracker.incomplete == 5
    assert rig.sweep(5.25) == []  # half a token
    assert rig.sweep(5.5) == ["a2"]
    assert rig.sweep(6.0) == ["a3"]
    assert rig.sweep(6.5) == ["a4"]
    assert rig.sweep(9.9) == []  # nobody due before 10
    assert rig.sweep(10.0) == ["a0", "a1"]  # second ask: 5 s after the first
    rig.birth(10.2, "a3")  # a3 completes: never asked again
    assert rig.sweep(10.5) == ["a2"]
    assert rig.sweep(11.5) == ["a4"]
    assert rig.sweep(19.9) == []
    assert rig.sweep(20.0) == ["a0", "a1"]  # third: 10 s after the second
    assert rig.sweep(20.5) == ["a2"]
    assert rig.sweep(21.5) == ["a4"]
    assert rig.sweep(39.9) == []
    assert rig.sweep(40.0) == ["a0", "a1"]  # fourth: 20 s (the cap)
    assert rig.sweep(40.5) == ["a2"]
    assert rig.sweep(41.5) == ["a4"]
    assert rig.sweep(59.9) == []
    assert rig.sweep(60.0) == ["a0", "a1"]  # and every 20 s from then on
    counts = {a: sum(1 for _, b in rig.asked if b == a) for a in ("a0", "a2", "a3", "a4")}
    assert counts == {"a0": 5, "a2": 4, "a3": 1, "a4": 4}
    assert rig.tracker.asked == len(rig.asked)


def test_the_adaptive_rate_starts_slow_halves_on_lost_answers_and_recovers() -> None:
    """Rate 80/s, judged every 5 s (the backoff): starts at 10/s, doubles while the first
    asks complete births, halves when answers are lost (agents still incomplete 5 s after
    their first ask), then grows by 80/8 = 10/s as they succeed again."""
    rig = Rig(grace_s=0.0, rate=80.0, backoff_s=5.0)
    tracker = rig.tracker
    now = 0.0
    answer = True

    def sweeps(until: float) -> None:
        nonlocal now
        while now <= until:
            for agent_id in rig.sweep(now):
                if answer and agent_id.startswith("ok"):
                    rig.birth(now, agent_id)
            now += 0.25

    def incomplete(prefix: str, count: int) -> None:
        for i in range(count):
            rig.feed(now, status(f"{prefix}{i:04d}"))

    assert tracker.rate_now == 10.0
    incomplete("ok", 20_000)
    sweeps(0.0)
    assert len(rig.asked) == 2  # burst: a quarter second's worth of 10/s
    sweeps(4.75)
    assert tracker.rate_now == 10.0  # 0 s: nothing judged yet
    sweeps(5.0)
    assert tracker.rate_now == 20.0  # 5 s: first asks completed births: doubled
    sweeps(10.0)
    assert tracker.rate_now == 40.0
    answer = False  # from now on every answer is lost
    sweeps(15.0)
    assert tracker.rate_now == 80.0  # (a first ask is judged 5 s after it)
    sweeps(20.0)
    assert tracker.rate_now == 40.0  # 20 s: the first asks of 10-15 s failed: halved
    sweeps(25.0)
    assert tracker.rate_now == 20.0
    answer = True
    sweeps(30.0)  # 30 s: the losses of 20-25 s outnumber the answers of 25-30 s
    assert tracker.rate_now == 10.0
    rates = []
    for _ in range(8):
        sweeps(now + 4.75)
        rates.append(tracker.rate_now)
    assert rates == [20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 80.0]  # additive now


def test_requests_for_other_reasons_go_first_through_the_same_bucket() -> None:
    rig = Rig(grace_s=0.0, rate=2.0, burst=2.0, adaptive=False)
    rig.feed(0.0, status("inc"))
    reasons: list[tuple[str, str]] = []

    def ask(agent_id: str, reason: str) -> bool:
        reasons.append((agent_id, reason))
        return agent_id != "refused"

    for agent_id in ("g1", "g2", "g1", "refused", "g3"):
        rig.tracker.request(agent_id, "gap")
    assert rig.tracker.requests == 4  # one per agent
    assert rig.tracker.sweep(0.0, ask) == ["g1", "g2"]  # burst 2: the incomplete one waits
    assert rig.tracker.sweep(0.5, ask) == ["g3"]  # "refused" (5 s rule) spent no token
    assert rig.tracker.sweep(1.0, ask) == ["inc"]
    assert reasons[-1] == ("inc", "incomplete") and ("refused", "gap") in reasons
    assert rig.tracker.requests == 0


def test_rate_zero_counts_but_never_asks() -> None:
    rig = Rig(grace_s=0.0, rate=0.0)
    rig.feed(0.0, status("a0"))
    assert rig.sweep(10.0) == [] and rig.tracker.incomplete == 1


def test_memory_stays_bounded_by_the_fleet() -> None:
    """Agents that become incomplete and complete again, over and over, leave no
    structure growing beyond the fleet."""
    rig = Rig(grace_s=0.0, rate=1000.0)
    agents = [f"m{i}" for i in range(50)]
    for cycle in range(40):
        now = float(cycle * 10)
        for agent_id in agents:
            rig.feed(now, status(agent_id, bdseq=BDSEQ + cycle))
        rig.sweep(now + 1)
        for agent_id in agents:
            rig.feed(now + 2, about(agent_id, bdseq=BDSEQ + cycle), prop(agent_id))
    tracker = rig.tracker
    assert tracker.incomplete == 0 and tracker.pending == 0
    assert len(tracker._about) <= len(agents)
    assert len(tracker._heap) <= 2 * len(agents) + 64


@pytest.mark.parametrize("bad", [{"rate": -1.0}, {"backoff_s": 0.0}, {"backoff_max_s": 1.0}])
def test_bad_settings_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        BirthTracker(Registry(T), **bad)

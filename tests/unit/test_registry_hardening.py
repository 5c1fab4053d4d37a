"""Unit tests of the registry's hardening (issue 11): bdseq bounds, operator reset,
pinned and first-learned interfaces, admission of new agents, pages of agents."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import pytest

from sef.bus import About, InterfaceRef, Message, Status, Topics
from sef.ems import Admission, AgentRecord, Registry
from sef.interface import builtin_xml, load_xml

T = Topics()
DEMO = "edu.pdx.powerlab.demo"
WALL = 1_800_000_000.0  # the EMS's wall clock in these tests, Unix s
X_XML = b'<node><interface name="org.example.X"><method name="Go"/></interface></node>'
X2_XML = b'<node><interface name="org.example.X"><method name="Stop"/></interface></node>'


class Clock:
    def __init__(self) -> None:
        self.mono = 0.0


def registry(**kwargs: Any) -> tuple[Registry, Clock]:
    clock = Clock()
    kwargs.setdefault("admission", Admission.open())
    reg = Registry(wall_clock=lambda: WALL, monotonic=lambda: clock.mono, **kwargs)
    return reg, clock


def status(agent: str, online: bool, bdseq: int, *, retain: bool = False) -> Message:
    payload = Status(online, bdseq, WALL if online else None, 10, 0 if online else None)
    return Message(T.status(agent), payload.to_payload(), 1, retain)


def kinds(reg: Registry, message: Message) -> list[str]:
    return [e.kind for e in reg.handle(message, 100.0)]


# -- bdseq ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bdseq", "accepted"),
    [
        (int(WALL * 1000), True),
        (int(WALL * 1000) + 86_400_000, True),  # exactly the margin
        (int(WALL * 1000) + 86_400_001, False),
        (2**62, False),
        (2**63 - 1, False),
        (2**63, False),
        (2**80, False),
    ],
)
def test_bdseq_ahead_of_the_wall_clock_is_a_bad_message(bdseq: int, accepted: bool) -> None:
    reg, _ = registry()
    assert kinds(reg, status("bat-1", True, 5)) == ["discovered", "online"]
    events = reg.handle(status("bat-1", False, bdseq), 101.0)
    record = reg.get("bat-1")
    assert record is not None
    if accepted:
        assert [e.kind for e in events] == ["offline"]
        assert record.bdseq == bdseq
    else:
        assert [e.kind for e in events] == ["bad_message"]
        assert "bdseq" in str(events[0].detail)
        assert (record.online, record.bdseq, reg.bad_messages) == (True, 5, 1)


def test_bad_status_of_an_unknown_agent_creates_nothing() -> None:
    reg, _ = registry()
    assert kinds(reg, status("ghost", False, 2**63)) == ["bad_message"]
    assert reg.get("ghost") is None and reg.bad_messages == 1


def test_margin_is_configurable() -> None:
    reg, _ = registry(bdseq_ahead_s=60.0)
    kinds(reg, status("bat-1", True, 5))
    assert kinds(reg, status("bat-1", False, int(WALL * 1000) + 61_000)) == ["bad_message"]
    assert kinds(reg, status("bat-1", False, int(WALL * 1000) + 59_000)) == ["offline"]


def test_reset_and_restore_forget_the_session() -> None:
    reg, _ = registry()
    kinds(reg, status("bat-1", True, int(WALL * 1000)))
    kinds(reg, status("bat-1", False, int(WALL * 1000) + 3_600_000))  # forged, in the margin
    assert kinds(reg, status("bat-1", True, int(WALL * 1000) + 1)) == ["stale_death"]
    events = reg.reset("bat-1")
    assert [(e.kind, e.detail) for e in events] == [("reset", int(WALL * 1000) + 3_600_000)]
    record = reg.get("bat-1")
    assert record is not None and (record.online, record.bdseq) == (None, None)
    assert kinds(reg, status("bat-1", True, int(WALL * 1000) + 1)) == ["online"]
    with pytest.raises(KeyError):
        reg.reset("nope")

    restored = AgentRecord("bat-2", online=True, bdseq=2**62)
    reg.restore(restored)
    assert (restored.online, restored.bdseq) == (None, None)
    reg.restore(AgentRecord("bat-3", online=False, bdseq=7))
    assert reg.get("bat-3").bdseq == 7  # type: ignore[union-attr]


# -- interfaces -------------------------------------------------------------------------


def iface(agent: str, name: str, xml: bytes) -> Message:
    return Message(T.interface_xml(agent, name), xml, 1, True)


def test_shipped_interface_cannot_be_redefined() -> None:
    reg, _ = registry()
    shipped = reg.interface(DEMO)
    assert shipped is not None
    hijack = builtin_xml(DEMO).replace('type="a(snn)"', 'type="a(sii)"').encode()
    assert kinds(reg, iface("ghost", DEMO, hijack)) == ["discovered", "bad_message"]
    assert reg.interface(DEMO) == shipped
    assert DEMO in reg.get("ghost").rejected_interfaces  # type: ignore[union-attr]
    # the shipped bytes (and an equal definition) are fine
    assert kinds(reg, iface("bat-1", DEMO, builtin_xml(DEMO).encode())) == [
        "discovered",
        "interface",
    ]
    assert reg.get("bat-1").summary()["rejected_interfaces"] == {}  # type: ignore[union-attr]


def test_first_definition_stays_and_pinned_one_wins() -> None:
    reg, _ = registry()
    assert kinds(reg, iface("a-1", "org.example.X", X_XML)) == ["discovered", "interface"]
    assert kinds(reg, iface("a-2", "org.example.X", X2_XML)) == ["discovered", "bad_message"]
    assert "Go" in reg.interface("org.example.X").methods  # type: ignore[union-attr]

    pinned = load_xml(X2_XML).interfaces["org.example.X"]
    reg2, _ = registry(pinned=[pinned])
    assert kinds(reg2, iface("a-1", "org.example.X", X_XML))[-1] == "bad_message"
    assert reg2.interface("org.example.X") is pinned


def test_about_maps_a_name_only_to_its_own_interface() -> None:
    reg, _ = registry()
    kinds(reg, iface("a-1", "org.example.X", X_XML))
    fields = {
        k: "x"
        for k in [
            "DefaultLanguage",
            "DeviceName",
            "DeviceId",
            "AppName",
            "Manufacturer",
            "ModelNumber",
            "SoftwareVersion",
        ]
    }
    fields["AppId"] = "0" * 32
    sha = hashlib.sha256(X_XML).hexdigest()
    about = About(fields, [InterfaceRef("org.example.Y", sha)], [], 1, WALL, None)
    kinds(reg, Message(T.about("a-2"), about.to_payload(), 1, True))
    assert reg.interface("org.example.Y") is None


# -- admission ------------------------------------------------------------------------


def test_rate_limit_and_missed_births() -> None:
    reg, clock = registry(admission=Admission(new_per_s=2.0, burst=3, max_agents=None))
    for i in range(5):
        reg.handle(status(f"a-{i}", True, 1), 100.0)
    assert sorted(reg.agents) == ["a-0", "a-1", "a-2"]
    assert reg.refused == {"rate": 2} and reg.refused_ids == 2
    reg.handle(status("a-3", True, 1), 100.0)
    assert reg.refused_ids == 2  # the same id again
    clock.mono = 1.0  # two more tokens
    events = reg.handle(status("a-3", True, 1), 100.0)
    assert events[0].kind == "discovered" and events[0].missed is True
    events = reg.handle(status("a-9", True, 1), 100.0)
    assert events[0].kind == "discovered" and events[0].missed is False


def test_allow_list_cap_and_approval() -> None:
    reg, _ = registry(admission=Admission(allow=("bat-*", "wh-1"), max_agents=2))
    for agent in ("bat-1", "wh-1", "bat-2", "x-1", "wh-10"):
        reg.handle(status(agent, True, 1), 100.0)
    assert sorted(reg.agents) == ["bat-1", "wh-1"]
    assert reg.refused == {"cap": 1, "not_allowed": 2}

    reg, _ = registry(admission=Admission(approval=True, allow=("bat-*",), max_pending=2))
    assert kinds(reg, status("bat-1", True, 1)) == ["discovered", "online"]  # allowed
    assert kinds(reg, status("wh-1", True, 1)) == ["pending"]
    assert kinds(reg, status("wh-1", True, 1)) == []
    assert kinds(reg, status("wh-2", True, 1)) == ["pending"]
    assert kinds(reg, status("wh-3", True, 1)) == []  # the waiting room is full
    assert reg.refused == {"pending": 3, "pending_full": 1}
    assert reg.pending["wh-1"].messages == 2
    assert reg.approve("wh-1") is True and "wh-1" not in reg.pending
    assert reg.approve("wh-9") is False  # in advance
    events = reg.handle(status("wh-1", True, 1), 101.0)
    assert events[0].kind == "discovered" and events[0].missed is True
    assert kinds(reg, status("wh-9", True, 1)) == ["discovered", "online"]


def test_pages() -> None:
    reg, _ = registry()
    for i in range(25):
        reg.handle(status(f"a-{i:02d}", i % 2 == 0, 1), 100.0)
    page, total, more = reg.page(limit=10)
    assert [r.agent_id for r in page] == [f"a-{i:02d}" for i in range(10)]
    assert (total, more) == (25, True)
    page, total, more = reg.page(after="a-19", limit=10)
    assert [r.agent_id for r in page] == [f"a-{i:02d}" for i in range(20, 25)]
    assert more is False
    page, total, more = reg.page(offset=5, limit=3, where=lambda r: r.online is True)
    assert [r.agent_id for r in page] == ["a-10", "a-12", "a-14"]
    assert (total, more) == (13, True)


def test_bad_messages_are_logged_in_aggregate(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sef")
    reg, _ = registry()
    for i in range(5000):
        reg.handle(Message(T.status(f"g-{i % 50}"), b"{not json"), 100.0)
    reg.flush_logs()
    lines = [r.getMessage() for r in caplog.records]
    assert 10 < len(lines) <= 20, lines
    assert any("bad messages from 45 other sources" in line for line in lines), lines


def test_learned_interfaces_and_gateway_lists_are_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sef.bus import GatewayAgents
    from sef.ems import _interfaces, _registry

    monkeypatch.setattr(_interfaces, "MAX_LEARNED_INTERFACES", 3)
    monkeypatch.setattr(_registry, "MAX_GATEWAYS", 2)
    monkeypatch.setattr(_registry, "MAX_GATEWAY_AGENTS", 5)
    reg, _ = registry()
    for i in range(5):
        name = f"org.example.I{i}"
        xml = f'<node><interface name="{name}"><method name="Go"/></interface></node>'
        reg.handle(iface("a-1", name, xml.encode()), 100.0)
    assert sorted(reg.interfaces_by_name) == [f"org.example.I{i}" for i in range(3)]
    assert reg.bad_messages == 2
    assert kinds(reg, iface("a-2", DEMO, builtin_xml(DEMO).encode()))[-1] == "interface"

    def listing(home: str, n: int) -> Message:
        payload = GatewayAgents(home, [f"x-{i}" for i in range(n)]).to_payload()
        return Message(T.gateway_agents(home), payload, 1, True)

    reg.handle(listing("home-1", 5), 100.0)
    reg.handle(listing("home-2", 6), 100.0)  # too long
    reg.handle(listing("home-3", 1), 100.0)
    reg.handle(listing("home-4", 1), 100.0)  # a third gateway
    assert sorted(reg.gateway_agents) == ["home-1", "home-3"]
    assert reg.bad_messages == 4

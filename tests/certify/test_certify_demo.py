"""The ``demo`` suite against real agents on a real Mosquitto: SEF's virtual battery, BIS and
the example paho agent pass every check, an agent without ``edu.pdx.powerlab.demo`` skips
them, and variants of the example agent that break one command rule fail that check."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from broken_agents import BROKEN_AGENTS
from certify_support import bis_with_emulator
from suite_support import (
    ExampleAgent,
    assert_all_pass,
    certify,
    describe,
    example,
    result,
    thread_agent,
)

from sef.agents import Agent
from sef.broker import Mosquitto
from sef.certify._demo import CHECKS
from sef.certify._model import Outcome
from support import AgentProcess


async def test_virtual_battery_passes_every_demo_check(broker_url: str) -> None:
    agent = AgentProcess("vb-1", broker_url).start()
    try:
        report = await certify(broker_url, "vb-1", CHECKS)
    finally:
        agent.stop()
    assert_all_pass(report, CHECKS)
    assert "no discharge within 3 s" in result(report, "demo.replaces").evidence
    assert "256 events" in result(report, "demo.bounds_accepted").evidence


async def test_bis_passes_every_demo_check(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """``sef bis`` polling ``sef emulate battery`` over Modbus TCP (processes)."""
    with bis_with_emulator(mosquitto, tmp_path, ()) as agent:
        report = await certify(mosquitto.url, agent.agent_id, CHECKS)
    assert_all_pass(report, CHECKS)


async def test_the_example_agent_passes_every_demo_check(broker_url: str) -> None:
    with thread_agent(ExampleAgent, broker_url, "example-1"):
        report = await certify(broker_url, "example-1", CHECKS)
    assert_all_pass(report, CHECKS)


async def test_an_agent_without_the_demo_interface_skips_the_suite(broker_url: str) -> None:
    agent = Agent("plain-1", broker_url, keepalive_s=2)
    await agent.start()
    try:
        report = await certify(broker_url, "plain-1", CHECKS)
    finally:
        await agent.stop()
    assert {r.outcome for r in report.results} == {Outcome.SKIP}, describe(report)
    assert "does not implement edu.pdx.powerlab.demo" in report.results[0].evidence


# -- agents that break one rule of the demo interface (variants of the example agent) --------
class RefusesEndshed(ExampleAgent):  # type: ignore[misc]
    """Knows only four of the five commands."""

    def energy_method(self, cmds: list[list[Any]]) -> None:
        if any(str(c[0]).lower() == "endshed" for c in cmds):
            raise example.CallRefused("org.freedesktop.DBus.Error.Failed", "endshed unsupported")
        super().energy_method(cmds)


class AcceptsNegativeRates(ExampleAgent):  # type: ignore[misc]
    """Takes a negative rate as 0 instead of refusing it."""

    def energy_method(self, cmds: list[list[Any]]) -> None:
        super().energy_method([[cmd, max(0, rate), duration] for cmd, rate, duration in cmds])


class AtMost64Events(ExampleAgent):  # type: ignore[misc]
    """Refuses sequences longer than 64 events (the interface allows 256)."""

    def energy_method(self, cmds: list[list[Any]]) -> None:
        if len(cmds) > 64:
            raise example.CallRefused("org.freedesktop.DBus.Error.InvalidArgs", "cmds: at most 64")
        super().energy_method(cmds)


class AcceptsAnyLength(ExampleAgent):  # type: ignore[misc]
    """Runs the first 256 events of a longer sequence instead of refusing it."""

    def energy_method(self, cmds: list[list[Any]]) -> None:
        super().energy_method(cmds[:256])


class SaysNothingOfApplied(ExampleAgent):  # type: ignore[misc]
    """Replies ``ok`` without ``applied``, though it knows (a SHOULD, level recommended)."""

    def execute(self, iface: str, method: str, args: list[Any]) -> tuple[list[Any], Any]:
        result, _extra = super().execute(iface, method, args)
        return result, {}


class OldSequenceKeepsRunning(ExampleAgent):  # type: ignore[misc]
    """Does not cancel the running sequence: its timer still starts its next event."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.zombies: list[tuple[float, list[Any]]] = []

    def energy_method(self, cmds: list[list[Any]]) -> None:
        if self.event_ends is not None and self.events:
            self.zombies.append((self.event_ends, list(self.events)))
        super().energy_method(cmds)

    def tick(self) -> None:
        for zombie in [z for z in self.zombies if z[0] <= time.time()]:
            self.zombies.remove(zombie)
            self.events = zombie[1]
            self.start_next_event()
        super().tick()


class OpenEndedLastsOneSecond(ExampleAgent):  # type: ignore[misc]
    """Ends an open-ended event after 1 s instead of at the next command."""

    event_ends: float | None

    def start_next_event(self) -> None:
        super().start_next_event()
        if self.event_ends is None and self.event[0] != "idle":
            self.event_ends = time.time() + 1.0


class TelemetryOnlyEvery30s(ExampleAgent):  # type: ignore[misc]
    """Publishes Telemetry on its timer only, not after a command."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.telemetry_s = 30.0

    def start_next_event(self) -> None:
        self.quiet = True
        try:
            super().start_next_event()
        finally:
            self.quiet = False

    def publish_telemetry(self) -> None:
        if not getattr(self, "quiet", False):
            super().publish_telemetry()


BROKEN_DEMO: list[tuple[type, str]] = [
    (RefusesEndshed, "demo.commands"),
    (AcceptsNegativeRates, "demo.bounds_refused"),
    (AtMost64Events, "demo.bounds_accepted"),
    (AcceptsAnyLength, "demo.bounds_refused"),
    (SaysNothingOfApplied, "demo.applied"),
    (OldSequenceKeepsRunning, "demo.replaces"),
    (OpenEndedLastsOneSecond, "demo.open_ended"),
]


@pytest.mark.parametrize(
    ("agent_class", "check_id"), BROKEN_DEMO, ids=[cls.__name__ for cls, _ in BROKEN_DEMO]
)
async def test_an_agent_breaking_one_command_rule_fails_that_check(
    broker_url: str, agent_class: type, check_id: str
) -> None:
    with thread_agent(agent_class, broker_url, "broken-1"):
        report = await certify(broker_url, "broken-1", CHECKS)
    failed = [r.check.id for r in report.results if r.outcome is Outcome.FAIL]
    assert failed == [check_id], describe(report)


async def test_telemetry_not_published_after_a_command_fails(broker_url: str) -> None:
    checks = [c for c in CHECKS if c.id == "demo.telemetry_changes"]
    with thread_agent(TelemetryOnlyEvery30s, broker_url, "broken-1"):
        report = await certify(broker_url, "broken-1", checks)
    assert report.results[0].outcome is Outcome.FAIL, describe(report)
    assert "no new Telemetry within 5 s" in report.results[0].evidence


async def test_telemetry_without_timestamp_fails_only_the_timestamp_check(broker_url: str) -> None:
    broken = BROKEN_AGENTS["telemetry_without_timestamp"]
    with thread_agent(broken.agent_class, broker_url, "broken-1"):
        report = await certify(broker_url, "broken-1", CHECKS)
    failed = [r.check.id for r in report.results if r.outcome is Outcome.FAIL]
    assert failed == ["demo.telemetry_timestamp"], describe(report)

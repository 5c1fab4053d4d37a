"""The ``calls`` suite against real agents on a real Mosquitto: SEF's virtual battery (a
``sef agent`` process), BIS (``sef bis`` polling ``sef emulate battery``), the example paho
agent and a plain ``sef.Agent``-only agent pass every check (the last one with Ping only);
with signed calls over mutual TLS (protocol version 2) the three suites pass too. Every
broken agent of ``broken_agents.py`` for a call rule, and variants of the example agent
defined here, fail exactly the check of the rule they break."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from broken_agents import BROKEN_AGENTS
from certify_support import bis_with_emulator
from rich.console import Console
from suite_support import (
    ExampleAgent,
    assert_all_pass,
    certify,
    describe,
    example,
    readable,
    result,
    thread_agent,
)

from secure_stack import make_pki, secure_broker
from sef.agents import Agent
from sef.agents.virtual_battery import VirtualBatteryAgent
from sef.broker import Mosquitto
from sef.bus import BusClient
from sef.certify._calls import CHECKS
from sef.certify._demo import CHECKS as DEMO_CHECKS
from sef.certify._model import Outcome
from sef.certify._robustness import CHECKS as ROBUSTNESS_CHECKS
from sef.certify._runner import CertifyOptions, run_certification
from sef.security import Role
from support import AgentProcess


async def test_virtual_battery_passes_every_call_check(broker_url: str) -> None:
    agent = AgentProcess("vb-1", broker_url, "--group", "feeder-7", "--group", "home-3").start()
    try:
        report = await certify(broker_url, "vb-1", CHECKS)
    finally:
        agent.stop()
    assert_all_pass(report, CHECKS)
    groups = result(report, "calls.group").evidence
    assert "'feeder-7' -> ok" in groups and "'home-3' -> ok" in groups
    assert "1 reply" in result(report, "calls.duplicate").evidence
    assert "still idle" in result(report, "calls.duplicate").evidence  # one effect checked


async def test_bis_passes_every_call_check(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """``sef bis`` polling ``sef emulate battery`` over Modbus TCP (processes)."""
    with bis_with_emulator(mosquitto, tmp_path, ("feeder-7",)) as agent:
        report = await certify(mosquitto.url, agent.agent_id, CHECKS)
    assert_all_pass(report, CHECKS)
    assert report.duration_s < 20, describe(report)


async def test_an_agent_without_groups_skips_the_group_check(broker_url: str) -> None:
    agent = AgentProcess("vb-2", broker_url).start()
    try:
        report = await certify(broker_url, "vb-2", [c for c in CHECKS if c.id == "calls.group"])
    finally:
        agent.stop()
    assert report.results[0].outcome is Outcome.SKIP
    assert "declares no groups" in report.results[0].evidence


async def test_an_agent_without_the_demo_interface_is_checked_with_ping(broker_url: str) -> None:
    """Without EnergyMethod the checks use Ping only; the int16 check has no int16 to send."""
    agent = Agent("plain-1", broker_url, groups=["feeder-7"], keepalive_s=2)
    await agent.start()
    try:
        report = await certify(broker_url, "plain-1", CHECKS)
    finally:
        await agent.stop()
    outcomes = {r.check.id: r.outcome for r in report.results}
    assert outcomes.pop("calls.int16_range") is Outcome.SKIP, describe(report)
    assert set(outcomes.values()) == {Outcome.PASS}, describe(report)
    assert "sef.Agent.Ping() with reply_to" in result(report, "calls.reply_to_invalid").evidence
    assert "Ping() with exp 60 s ago" in result(report, "calls.expired").evidence


async def test_the_suites_pass_with_signed_calls_over_mutual_tls(tmp_path: Path) -> None:
    """Protocol version 2 (§12): the certifier signs its calls as an EMS, the agent signs
    its replies; every check of the three suites passes, except the MalformedPayload
    reply to unsigned calls, which version 2 forbids (SKIP)."""
    ca = make_pki(tmp_path)
    async with secure_broker(ca, tmp_path) as broker:
        agent_security = broker.security_for("vb-s", Role.AGENT, groups=("feeder-7",))
        certifier = broker.security_for("certifier", Role.EMS)
        agent = VirtualBatteryAgent(
            "vb-s", broker.url, groups=["feeder-7"], security=agent_security
        )
        await agent.start()
        try:
            checks = [*CHECKS, *DEMO_CHECKS, *ROBUSTNESS_CHECKS]

            def use_tls(bus: BusClient) -> None:
                bus.tls = certifier.client_tls()

            report = await run_certification(
                CertifyOptions(broker.url, "vb-s", security=certifier, prepare_bus=use_tls),
                Console(file=io.StringIO()),
                checks,
            )
        finally:
            await agent.stop()
    outcomes = {r.check.id: r.outcome for r in report.results}
    assert outcomes.pop("robustness.malformed_reply") is Outcome.SKIP, describe(report)
    assert set(outcomes.values()) == {Outcome.PASS}, describe(report)
    assert len(outcomes) == len(checks) - 1


CALL_RULES = [name for name, bad in BROKEN_AGENTS.items() if bad.check_id.startswith("calls.")]


@pytest.mark.parametrize("name", CALL_RULES)
async def test_an_agent_breaking_one_call_rule_fails_that_check(broker_url: str, name: str) -> None:
    """Every check of the suite runs; only the broken rule's check fails."""
    broken = BROKEN_AGENTS[name]
    with thread_agent(broken.agent_class, broker_url, "broken-1", ["feeder-7"]):
        report = await certify(broker_url, "broken-1", CHECKS)
    failed = [r.check.id for r in report.results if r.outcome is Outcome.FAIL]
    assert failed == [broken.check_id], describe(report)


async def test_the_example_agent_passes_every_call_check(broker_url: str) -> None:
    with thread_agent(ExampleAgent, broker_url, "example-1", ["feeder-7"]):
        report = await certify(broker_url, "example-1", CHECKS)
    assert_all_pass(report, CHECKS)


# -- variants of the example agent breaking a rule that broken_agents.py does not cover ------
CALL_KEYS = {"v", "id", "ts", "exp", "args", "reply_to", "sender"}


class RefusesUnknownKeys(ExampleAgent):  # type: ignore[misc]
    """Refuses a call with keys beyond §5.5's instead of ignoring them."""

    def on_call(self, iface: str, method: str, payload: bytes) -> None:
        obj: Any = readable(payload)
        if set(obj) - CALL_KEYS:
            bad = example.CallRefused("sef.Error.MalformedPayload", "unknown keys")
            self.reply(obj, bad)
            return
        super().on_call(iface, method, payload)


class RepliesToTheSender(ExampleAgent):  # type: ignore[misc]
    """Answers a call without reply_to on its sender's reply topic anyway."""

    def on_call(self, iface: str, method: str, payload: bytes) -> None:
        obj: Any = readable(payload)
        if obj and "reply_to" not in obj and isinstance(obj.get("sender"), str):
            obj["reply_to"] = f"{self.root}/clients/{obj['sender']}/reply"
            payload = json.dumps(obj).encode()
        super().on_call(iface, method, payload)


class KeysCallsBySenderString(ExampleAgent):  # type: ignore[misc]
    """De-duplicates by ``f"{sender}/{id}"``: an anonymous call and one from the sender
    "None" with the same id collide."""

    def is_duplicate(self, call: dict[str, Any]) -> bool:
        key = f"{call.get('sender')}/{call['id']}"
        if key in self.seen_calls:
            return True
        self.seen_calls[key] = None
        return False


class RemembersRefusedCalls(ExampleAgent):  # type: ignore[misc]
    """Puts calls refused at step 1 into the de-duplication window too."""

    def on_call(self, iface: str, method: str, payload: bytes) -> None:
        obj: Any = readable(payload)
        key = (obj.get("sender"), obj.get("id"))
        if key in self.seen_calls:
            return
        if isinstance(obj.get("id"), str) and not isinstance(obj.get("args"), list):
            self.seen_calls[key] = None
        super().on_call(iface, method, payload)


class AnswersRedeliveredExpiredCalls(ExampleAgent):  # type: ignore[misc]
    """Checks expiry before de-duplication: a redelivered expired call is answered again."""

    def is_duplicate(self, call: dict[str, Any]) -> bool:
        return False if self.is_expired(call) else bool(super().is_duplicate(call))


class FollowsNoReply(ExampleAgent):  # type: ignore[misc]
    """Never answers a method annotated NoReply (Rebirth), whatever reply_to says."""

    def on_call(self, iface: str, method: str, payload: bytes) -> None:
        obj: Any = readable(payload)
        if method == "Rebirth" and obj:
            obj.pop("reply_to", None)
            payload = json.dumps(obj).encode()
        super().on_call(iface, method, payload)


VARIANTS: list[tuple[Any, str]] = [
    (RefusesUnknownKeys, "calls.unknown_keys"),
    (RepliesToTheSender, "calls.no_reply_wanted"),
    (KeysCallsBySenderString, "calls.duplicate"),
    (RemembersRefusedCalls, "calls.duplicate"),
    (AnswersRedeliveredExpiredCalls, "calls.duplicate"),
    (FollowsNoReply, "calls.noreply_method_answered"),
]


@pytest.mark.parametrize(
    ("agent_class", "check_id"), VARIANTS, ids=[cls.__name__ for cls, _ in VARIANTS]
)
async def test_a_variant_breaking_one_call_rule_fails_that_check(
    broker_url: str, agent_class: Any, check_id: str
) -> None:
    with thread_agent(agent_class, broker_url, "broken-1", ["feeder-7"]):
        report = await certify(broker_url, "broken-1", CHECKS)
    failed = [r.check.id for r in report.results if r.outcome is Outcome.FAIL]
    assert failed == [check_id], describe(report)

"""The ``robustness`` suite against real agents on a real Mosquitto: SEF's virtual battery,
BIS and the example paho agent survive every bad payload and keep answering; variants of
the example agent that break one rule fail that check."""

from __future__ import annotations

import json
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
    readable,
    result,
    thread_agent,
)

from sef.broker import Mosquitto
from sef.certify._model import Outcome
from sef.certify._robustness import CHECKS
from support import AgentProcess


async def test_virtual_battery_passes_every_robustness_check(broker_url: str) -> None:
    agent = AgentProcess("vb-1", broker_url).start()
    try:
        report = await certify(broker_url, "vb-1", CHECKS)
    finally:
        agent.stop()
    assert_all_pass(report, CHECKS)
    assert "262" in result(report, "robustness.oversized").evidence
    assert sum(r.duration_s for r in report.results) < 10, describe(report)


async def test_bis_passes_every_robustness_check(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """``sef bis`` polling ``sef emulate battery`` over Modbus TCP (processes)."""
    with bis_with_emulator(mosquitto, tmp_path, ()) as agent:
        report = await certify(mosquitto.url, agent.agent_id, CHECKS)
    assert_all_pass(report, CHECKS)


async def test_the_example_agent_passes_every_robustness_check(broker_url: str) -> None:
    with thread_agent(ExampleAgent, broker_url, "example-1"):
        report = await certify(broker_url, "example-1", CHECKS)
    assert_all_pass(report, CHECKS)
    evidence = result(report, "robustness.wrong_version").evidence
    assert "each answered sef.Error.UnsupportedVersion" in evidence


# -- agents that break one rule (variants of the example agent) ------------------------------
class ExecutesOversized(ExampleAgent):  # type: ignore[misc]
    """Has no size limit: parses and executes a call of any size."""

    def on_call(self, iface: str, method: str, payload: bytes) -> None:
        if len(payload) <= example.MAX_PAYLOAD_BYTES:
            super().on_call(iface, method, payload)
            return
        call = json.loads(payload)
        result, extra = self.execute(iface, method, call["args"])
        self.reply(call, result, **extra)


class ExecutesAnyVersion(ExampleAgent):  # type: ignore[misc]
    """Ignores ``v`` and the envelope keys: a version-2 or version-99 call runs as v1."""

    def on_call(self, iface: str, method: str, payload: bytes) -> None:
        obj: Any = readable(payload)
        if obj and obj.get("v") != 1:
            fixed = {k: v for k, v in obj.items() if k not in ("jws", "cose")} | {"v": 1}
            payload = json.dumps(fixed).encode()
        super().on_call(iface, method, payload)


class SilentOnInvalidCalls(ExampleAgent):  # type: ignore[misc]
    """Refuses an invalid call without the MalformedPayload reply §6 step 1 requires."""

    def on_call(self, iface: str, method: str, payload: bytes) -> None:
        try:
            example.check_call(example.decode(payload))
        except example.CallRefused as exc:
            if exc.name == "sef.Error.MalformedPayload":
                return
        super().on_call(iface, method, payload)


class AnswersCallsWithoutId(ExampleAgent):  # type: ignore[misc]
    """Answers a readable call with no string id, with whatever id it had."""

    def on_call(self, iface: str, method: str, payload: bytes) -> None:
        obj: Any = readable(payload)
        if obj and not isinstance(obj.get("id"), str) and self.valid_reply_to(obj.get("reply_to")):
            self.reply({"id": str(obj.get("id")), "reply_to": obj["reply_to"]}, [])
            return
        super().on_call(iface, method, payload)


class AnswersOversizedCalls(ExampleAgent):  # type: ignore[misc]
    """Reads an oversized call anyway to answer it PayloadTooLarge (never to be answered)."""

    def on_call(self, iface: str, method: str, payload: bytes) -> None:
        obj: Any = readable(payload)
        if len(payload) > example.MAX_PAYLOAD_BYTES and self.valid_reply_to(obj.get("reply_to")):
            self.reply(obj, example.CallRefused("sef.Error.PayloadTooLarge", "too large"))
            return
        super().on_call(iface, method, payload)


class AnswersCallsInAnArray(ExampleAgent):  # type: ignore[misc]
    """Answers a JSON array holding a call (not an object: never to be answered)."""

    def on_call(self, iface: str, method: str, payload: bytes) -> None:
        try:
            items = json.loads(payload)
        except ValueError:
            items = None
        if isinstance(items, list) and items and isinstance(items[0], dict):
            refused = example.CallRefused("sef.Error.MalformedPayload", "not an object")
            self.reply(items[0], refused)
            return
        super().on_call(iface, method, payload)


class SilentOnWrongVersion(ExampleAgent):  # type: ignore[misc]
    """Refuses a call with v other than 1 without the UnsupportedVersion reply."""

    def on_call(self, iface: str, method: str, payload: bytes) -> None:
        obj: Any = readable(payload)
        if obj and (obj.get("v") != 1 or "jws" in obj or "cose" in obj):
            return
        super().on_call(iface, method, payload)


BROKEN_ROBUSTNESS: list[tuple[Any, str]] = [
    (BROKEN_AGENTS["drops_connection_on_malformed_json"].agent_class, "robustness.malformed"),
    (ExecutesOversized, "robustness.oversized"),
    (AnswersOversizedCalls, "robustness.oversized"),
    (AnswersCallsInAnArray, "robustness.malformed"),
    (ExecutesAnyVersion, "robustness.wrong_version"),
    (SilentOnWrongVersion, "robustness.wrong_version"),
    (SilentOnInvalidCalls, "robustness.malformed_reply"),
    (AnswersCallsWithoutId, "robustness.unanswerable"),
]


@pytest.mark.parametrize(
    ("agent_class", "check_id"),
    BROKEN_ROBUSTNESS,
    ids=[cls.__name__ for cls, _ in BROKEN_ROBUSTNESS],
)
async def test_an_agent_breaking_one_rule_fails_that_check(
    broker_url: str, agent_class: Any, check_id: str
) -> None:
    with thread_agent(agent_class, broker_url, "broken-1"):
        report = await certify(broker_url, "broken-1", CHECKS)
    failed = [r.check.id for r in report.results if r.outcome is Outcome.FAIL]
    assert failed == [check_id], describe(report)

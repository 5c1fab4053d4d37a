"""The certification engine on a real Mosquitto: the runner's outcomes (pass, fail, skip,
time limit, a crashing check), levels, the JUnit XML and report files, the CLI's exit
codes, and agents broken on purpose that fail exactly the birth or session check of the
rule they break."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import junitparser
import pytest
from lxml import etree
from rich.console import Console

from sef.agents.virtual_battery import VirtualBatteryAgent
from sef.broker import Mosquitto
from sef.bus import Message, Will
from sef.certify import CertifyOptions, Level, Outcome, Report, run_certification
from sef.certify._junit import junit_xml, write_junit, write_report_dir
from sef.certify._model import Check, CheckContext, CheckFailed, CheckSkipped
from sef.certify._runner import select_checks


# -- the runner with checks of its own ----------------------------------------------------
async def _passes(ctx: CheckContext) -> str:
    return f"saw {ctx.agent_id}"


async def _fails(ctx: CheckContext) -> str:
    raise CheckFailed("the rule <is> broken & said so")


async def _skips(ctx: CheckContext) -> str:
    raise CheckSkipped("not applicable")


async def _hangs(ctx: CheckContext) -> str:
    await asyncio.sleep(30)
    return "never"


async def _crashes(ctx: CheckContext) -> str:
    raise RuntimeError("bug in a check")


SYNTHETIC = [
    Check("alpha.passes", "passes", "§1", Level.REQUIRED, _passes),
    Check("alpha.fails", "fails", "§2", Level.REQUIRED, _fails),
    Check("beta.skips", "skips", "§3", Level.REQUIRED, _skips),
    Check("beta.hangs", "hangs", "§4", Level.REQUIRED, _hangs, timeout_s=0.3),
    Check("beta.crashes", "crashes", "§5", Level.REQUIRED, _crashes),
    Check("beta.should", "a SHOULD rule", "§6", Level.RECOMMENDED, _passes),
]


async def _run_synthetic(mosquitto: Mosquitto, level: Level) -> Report:
    options = CertifyOptions(broker=mosquitto.url, agent_id="nobody", level=level, timeout_s=1.0)
    return await run_certification(options, Console(quiet=True), SYNTHETIC)


async def test_runner_outcomes_levels_and_files(mosquitto: Mosquitto, tmp_path: Path) -> None:
    report = await _run_synthetic(mosquitto, Level.RECOMMENDED)
    outcomes = {r.check.id: (r.outcome, r.evidence) for r in report.results}
    assert outcomes["alpha.passes"] == (Outcome.PASS, "saw nobody")
    assert outcomes["alpha.fails"] == (Outcome.FAIL, "the rule <is> broken & said so")
    assert outcomes["beta.skips"] == (Outcome.SKIP, "not applicable")
    assert outcomes["beta.hangs"][0] is Outcome.FAIL and "within 0.3 s" in outcomes["beta.hangs"][1]
    assert outcomes["beta.crashes"] == (Outcome.FAIL, "check error: RuntimeError: bug in a check")
    assert outcomes["beta.should"][0] is Outcome.PASS
    assert [r.check.id for r in report.results] == [c.id for c in SYNTHETIC]  # in order
    assert not report.passed and report.count(Outcome.FAIL) == 3
    assert next(r for r in report.results if r.check.id == "beta.hangs").duration_s < 1.0

    required = await _run_synthetic(mosquitto, Level.REQUIRED)
    assert "beta.should" not in {r.check.id for r in required.results}
    assert len(required.results) == 5

    write_junit(report, tmp_path / "out" / "junit.xml")
    xml = junitparser.JUnitXml.fromfile(str(tmp_path / "out" / "junit.xml"))
    suites = {suite.name: suite for suite in xml}
    assert set(suites) == {"alpha", "beta"}
    assert (suites["alpha"].tests, suites["alpha"].failures) == (2, 1)
    assert (suites["beta"].tests, suites["beta"].failures, suites["beta"].skipped) == (4, 2, 1)
    failed = next(case for case in suites["alpha"] if case.name == "alpha.fails")
    assert failed.classname == "sef.certify.alpha"
    assert "the rule <is> broken & said so" in failed.result[0].message
    assert "§2" in failed.result[0].message
    skipped = next(case for case in suites["beta"] if case.name == "beta.skips")
    assert skipped.is_skipped

    root = etree.fromstring(junit_xml(report))
    assert root.get("tests") == "6" and root.get("failures") == "3" and root.get("skipped") == "1"
    assert root.xpath("string(//testcase[@name='alpha.fails']/failure)") == (
        "the rule <is> broken & said so"
    )
    assert root.xpath("string(//testcase[@name='beta.should']/properties/property"
                      "[@name='level']/@value)") == "recommended"  # fmt: skip

    write_report_dir(report, tmp_path / "report")
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["passed"] is False and data["summary"] == {"PASS": 2, "FAIL": 3, "SKIP": 1}
    assert data["results"][1]["section"] == "§2" and data["results"][1]["level"] == "required"
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "**FAILED**" in markdown and "| FAIL | `alpha.fails`" in markdown


def test_select_checks_filters_by_level_and_prefix() -> None:
    everything = select_checks(Level.RECOMMENDED)
    ids = [c.id for c in everything]
    assert ids.index("birth.order") < ids.index("sessions.seq")  # births first, sessions last
    assert all(c.suite == "sessions" for c in everything[-6:])
    required = select_checks(Level.REQUIRED)
    assert "birth.keepalive" in ids and "birth.keepalive" not in [c.id for c in required]
    assert [c.id for c in select_checks(Level.REQUIRED, ("birth.ab",))] == ["birth.about"]
    assert len(ids) == len(set(ids))


# -- the command line ---------------------------------------------------------------------
def _sef(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sef", "certify", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_cli_exit_codes(mosquitto: Mosquitto, tmp_path: Path) -> None:
    bad_id = _sef("bad/id", "--insecure", "--broker", mosquitto.url)
    assert bad_id.returncode == 2, bad_id.stderr
    plain = _sef("a1", "--broker", mosquitto.url)  # secure by default: mqtt:// refused
    assert plain.returncode == 2 and "plain-text" in plain.stderr
    bad_xml = tmp_path / "x.xml"
    bad_xml.write_text("<node><interface")
    assert _sef("a1", "--insecure", "--interface", str(bad_xml)).returncode == 2
    no_broker = _sef("a1", "--insecure", "--broker", "mqtt://127.0.0.1:1", "--timeout", "2")
    assert no_broker.returncode == 2, no_broker.stdout + no_broker.stderr
    absent = _sef(
        "absent-agent", "--insecure", "--broker", mosquitto.url, "--check", "birth.about",
        "--timeout", "2", "--junit", str(tmp_path / "j.xml"),
    )  # fmt: skip
    assert absent.returncode == 1, absent.stdout + absent.stderr
    assert "FAIL birth.about" in absent.stdout and "no About" in absent.stdout
    assert junitparser.JUnitXml.fromfile(str(tmp_path / "j.xml")).failures == 1


# -- agents that break one rule -----------------------------------------------------------
Publish = Callable[..., None]


def _props_not_retained(publish: Publish) -> Publish:
    def wrapped(topic: str, payload: bytes, **kw: Any) -> None:
        if "/props/" in topic:
            kw["retain"] = False
        publish(topic, payload, **kw)

    return wrapped


def _props_at_qos0(publish: Publish) -> Publish:
    def wrapped(topic: str, payload: bytes, **kw: Any) -> None:
        publish(topic, payload, **{**kw, "qos": 0 if "/props/" in topic else kw.get("qos", 1)})

    return wrapped


def _bad_app_id(publish: Publish) -> Publish:
    def wrapped(topic: str, payload: bytes, **kw: Any) -> None:
        if topic.endswith("/about"):
            about = json.loads(payload)
            about["about"]["AppId"] = "not-hex"
            payload = json.dumps(about).encode()
        publish(topic, payload, **kw)

    return wrapped


def _xml_not_as_hashed(publish: Publish) -> Publish:
    def wrapped(topic: str, payload: bytes, **kw: Any) -> None:
        publish(topic, payload + b"\n" if "/interfaces/" in topic else payload, **kw)

    return wrapped


def _xml_after_properties(publish: Publish) -> Publish:
    held: list[tuple[str, bytes, dict[str, Any]]] = []

    def wrapped(topic: str, payload: bytes, **kw: Any) -> None:
        if "/interfaces/" in topic:
            held.append((topic, payload, kw))
            return
        publish(topic, payload, **kw)
        if "/props/" in topic:
            while held:
                t, p, k = held.pop(0)
                publish(t, p, **k)

    return wrapped


def _acked_through(publish: Publish) -> Callable[..., asyncio.Future[None]]:
    """``publish_acked`` (agents publish their properties with it, to buffer what the
    broker did not acknowledge) through the broken ``publish``: taken as acknowledged."""

    def acked(
        topic: str, payload: bytes, *, retain: bool = False, expiry_s: float | None = None
    ) -> asyncio.Future[None]:
        publish(topic, payload, qos=1, retain=retain, expiry_s=expiry_s)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    return acked


class V1Battery(VirtualBatteryAgent):
    """Publishes its interface XML on its own topics (protocol version 1), where the
    birth's order is checked."""

    default_interface_topics = "v1"


class NoStaleRepair(VirtualBatteryAgent):
    def _check_own_status(self, message: Any) -> None:
        return None


class NoWill(VirtualBatteryAgent):
    def _make_will(self) -> Will:
        super()._make_will()  # a new session, but no will set
        return None  # type: ignore[return-value]


class RepairsRetainedStatus(VirtualBatteryAgent):
    """Takes its own retained status (the previous connection's will) for a live one,
    once connected."""

    def _check_own_status(self, message: Message) -> None:
        live = Message(message.topic, message.payload, message.qos, False)
        asyncio.get_running_loop().call_later(0.3, super()._check_own_status, live)


class BirthBeforeSubscribing(VirtualBatteryAgent):
    """From its second connection on, publishes its birth and subscribes to its call
    topic 0.5 s later."""

    async def _on_connect(self) -> None:
        pattern = f"{self._prefix}/call/+/+"
        self._publish_birth()
        await asyncio.sleep(0.5)
        await self.bus.subscribe(pattern, qos=1)
        self.bus._subscriptions.pop(pattern)  # not before the next birth


BROKEN: list[tuple[str, type[VirtualBatteryAgent], Any, str, str]] = [
    ("props-not-retained", VirtualBatteryAgent, _props_not_retained, "birth.", "birth.retained"),
    ("props-at-qos0", VirtualBatteryAgent, _props_at_qos0, "birth.", "birth.qos"),
    ("bad-app-id", VirtualBatteryAgent, _bad_app_id, "birth.", "birth.about"),
    ("xml-hash", VirtualBatteryAgent, _xml_not_as_hashed, "birth.", "birth.interface_xml"),
    ("xml-hash-v1", V1Battery, _xml_not_as_hashed, "birth.", "birth.interface_xml"),
    ("xml-after-props", V1Battery, _xml_after_properties, "birth.", "birth.order"),
    ("no-stale-repair", NoStaleRepair, None, "sessions.", "sessions.stale_death"),
    ("no-will", NoWill, None, "sessions.", "sessions.will"),
    ("repairs-retained", RepairsRetainedStatus, None, "sessions.",
     "sessions.retained_status_ignored"),
    ("birth-before-subscribing", BirthBeforeSubscribing, None, "sessions.",
     "sessions.subscribed_before_birth"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "mutate", "suite", "expected"),
    [pytest.param(k, m, s, e, id=name) for name, k, m, s, e in BROKEN],
)
async def test_an_agent_breaking_one_rule_fails_exactly_that_check(
    mosquitto: Mosquitto,
    kind: type[VirtualBatteryAgent],
    mutate: Callable[[Publish], Publish] | None,
    suite: str,
    expected: str,
) -> None:
    agent = kind("broken-1", mosquitto.url, step_s=1.0)
    if mutate is not None:
        broken = mutate(agent.bus.publish)
        agent.bus.publish = broken  # type: ignore[method-assign]
        agent.bus.publish_acked = _acked_through(broken)  # type: ignore[method-assign]
    await agent.start()
    try:
        report = await run_certification(
            CertifyOptions(broker=mosquitto.url, agent_id="broken-1", select=(suite,)),
            Console(quiet=True),
        )
    finally:
        await agent.stop()
    failed = {r.check.id: r.evidence for r in report.results if r.outcome is Outcome.FAIL}
    assert list(failed) == [expected], failed


def test_docs_list_every_check_with_its_section_and_level() -> None:
    """docs/certify.md's table is the suite: a new check must be documented there."""
    docs = (Path(__file__).parents[2] / "docs" / "certify.md").read_text()
    rows = {
        line.split("|")[1].strip().strip("`"): [cell.strip() for cell in line.split("|")[2:5]]
        for line in docs.splitlines()
        if re.match(r"\| `[a-z0-9_]+\.[a-z0-9_]+` \|", line)
    }
    checks = select_checks(Level.RECOMMENDED)
    assert set(rows) == {c.id for c in checks}
    for check in checks:
        assert rows[check.id] == [check.section, check.level.value, check.title], check.id


def _no_interface_xml(publish: Publish) -> Publish:
    def wrapped(topic: str, payload: bytes, **kw: Any) -> None:
        if "/interfaces/" not in topic:
            publish(topic, payload, **kw)

    return wrapped


@pytest.mark.parametrize("kind", [VirtualBatteryAgent, V1Battery], ids=["v2", "v1"])
async def test_no_interface_xml_fails_saying_where_it_was_looked_for(
    mosquitto: Mosquitto, kind: type[VirtualBatteryAgent]
) -> None:
    agent = kind("no-xml-1", mosquitto.url, step_s=1.0)
    broken = _no_interface_xml(agent.bus.publish)
    agent.bus.publish = broken  # type: ignore[method-assign]
    agent.bus.publish_acked = _acked_through(broken)  # type: ignore[method-assign]
    await agent.start()
    try:
        report = await run_certification(
            CertifyOptions(broker=mosquitto.url, agent_id="no-xml-1", select=("birth.",)),
            Console(quiet=True),
        )
    finally:
        await agent.stop()
    failed = {r.check.id: r.evidence for r in report.results if r.outcome is Outcome.FAIL}
    evidence = failed["birth.interface_xml"]
    assert "neither on sef/interfaces/{sha256}" in evidence, evidence
    assert "nor on sef/agents/no-xml-1/interfaces/{name}" in evidence, evidence
    assert "interfaces/edu.pdx.powerlab.demo or sef/interfaces/" in failed["birth.retained"]

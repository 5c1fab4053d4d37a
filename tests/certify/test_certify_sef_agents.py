"""SEF's own agents pass ``sef certify`` at level recommended: the virtual battery through
the CLI (exit code, JUnit read by junitparser and lxml, report.json), the BIS with its
battery emulator and the UCM with the water-heater emulator on a pty in-process. Each run
restarts the agent with SIGKILL through ``--restart-cmd``."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import junitparser
from certify_support import RestartableAgent, bis_with_emulator, ucm_with_pty_emulator
from certify_support import virtual_battery as start_virtual_battery
from lxml import etree
from rich.console import Console

import sef.interface
from secure_stack import make_pki, secure_broker, security_for
from sef.broker import Mosquitto
from sef.certify import CertifyOptions, Level, Outcome, Report, run_certification
from sef.security import Role

DEMO_XML = Path(sef.interface.__file__).parent / "data" / "edu.pdx.powerlab.demo.xml"
RUN_LIMIT_S = 60.0
"""A conformant agent is certified within this (excluding the restart), s."""


def _restart_time(report: Report) -> float:
    return sum(r.duration_s for r in report.results if r.check.id == "sessions.restart")


def _assert_all_pass(report: Report) -> None:
    failed = [f"{r.check.id}: {r.evidence}" for r in report.results if r.outcome is Outcome.FAIL]
    assert not failed, failed
    skipped = [f"{r.check.id}: {r.evidence}" for r in report.results if r.outcome is Outcome.SKIP]
    assert not skipped, skipped  # a group, the interface XML and a restart command given
    ids = {r.check.id for r in report.results if r.outcome is Outcome.PASS}
    for must in ("birth.order", "birth.retained", "sessions.will", "sessions.restart"):
        assert must in ids
    assert report.duration_s - _restart_time(report) < RUN_LIMIT_S


async def _certify(agent: RestartableAgent, mosquitto: Mosquitto, out: Path) -> Report:
    with out.open("w") as log:
        report = await run_certification(
            CertifyOptions(
                broker=mosquitto.url,
                agent_id=agent.agent_id,
                level=Level.RECOMMENDED,
                restart_cmd=agent.restart_cmd,
                interfaces={"edu.pdx.powerlab.demo": DEMO_XML.read_bytes()},
            ),
            console=Console(file=log, width=200),
        )
    return report


def test_virtual_battery_passes_through_the_cli(mosquitto: Mosquitto, tmp_path: Path) -> None:
    with start_virtual_battery(mosquitto, tmp_path / "agent") as agent:
        started = time.monotonic()
        run = subprocess.run(
            [
                sys.executable, "-m", "sef", "certify", agent.agent_id, "--insecure",
                "--broker", mosquitto.url, "--level", "recommended",
                "--restart-cmd", agent.restart_cmd,
                "--junit", str(tmp_path / "junit.xml"), "--report", str(tmp_path / "report"),
            ],
            capture_output=True, text=True, timeout=110,
            env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
        took = time.monotonic() - started
    assert run.returncode == 0, run.stdout + run.stderr + agent.output()[-2000:]
    assert "PASSED" in run.stdout and "FAIL " not in run.stdout
    assert "PASS birth.order" in run.stdout

    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["passed"] is True and report["summary"]["FAIL"] == 0
    restart = next(r["duration_s"] for r in report["results"] if r["id"] == "sessions.restart")
    assert took - restart < RUN_LIMIT_S + 5  # the process start included
    assert "| PASS | `birth.order`" in (tmp_path / "report" / "report.md").read_text()

    xml = junitparser.JUnitXml.fromfile(str(tmp_path / "junit.xml"))
    suites = {suite.name: suite for suite in xml}
    assert {"birth", "sessions"} <= set(suites)
    cases = [case for suite in xml for case in suite]
    assert len(cases) == len(report["results"])
    assert all(case.is_passed or case.is_skipped for case in cases)
    assert suites["birth"].failures == 0

    tree = etree.parse(str(tmp_path / "junit.xml"))
    assert tree.getroot().tag == "testsuites"
    assert tree.getroot().get("failures") == "0"
    names = [str(name) for name in tree.xpath("//testcase/@name")]  # type: ignore[union-attr]
    assert "sessions.will" in names and "birth.order" in names


async def test_bis_with_battery_emulator_passes(mosquitto: Mosquitto, tmp_path: Path) -> None:
    with bis_with_emulator(mosquitto, tmp_path / "agent", ("feeder-1", "program-2")) as agent:
        report = await _certify(agent, mosquitto, tmp_path / "out.txt")
    _assert_all_pass(report)


async def test_ucm_with_waterheater_on_a_pty_passes(mosquitto: Mosquitto, tmp_path: Path) -> None:
    with ucm_with_pty_emulator(mosquitto, tmp_path / "agent", ("feeder-1",)) as agent:
        report = await _certify(agent, mosquitto, tmp_path / "out.txt")
    _assert_all_pass(report)


async def test_secure_agent_passes_with_signed_calls(tmp_path: Path) -> None:
    """Mutual TLS and the generated ACL: the certifier, with an EMS certificate of its
    own, sends signed calls and takes only signed replies; the agent (a process with its
    own certificate) is restarted with SIGKILL."""
    ca = make_pki(tmp_path)
    certifier = security_for(ca, "certifier", Role.EMS)
    security_for(ca, "sbat-1", Role.AGENT, ("feeder-1",), "h1")
    async with secure_broker(ca, tmp_path) as broker:
        args = ["agent", "virtual-battery", "--id", "sbat-1", "--broker", broker.url]
        args += ["--cert", str(ca.cert_path("sbat-1")), "--key", str(ca.key_path("sbat-1"))]
        args += ["--ca", str(ca.ca_path), "--group", "feeder-1", "--step", "1"]
        agent = RestartableAgent(tmp_path / "agent", "sbat-1", args, broker.url)
        agent.start(tls=certifier.client_tls())
        try:
            with (tmp_path / "out.txt").open("w") as log:
                report = await run_certification(
                    CertifyOptions(
                        broker=broker.url,
                        agent_id="sbat-1",
                        security=certifier,
                        prepare_bus=lambda bus: setattr(bus, "tls", certifier.client_tls()),
                        restart_cmd=agent.restart_cmd,
                    ),
                    console=Console(file=log, width=200),
                )
            cli = subprocess.run(
                [
                    sys.executable, "-m", "sef", "certify", "sbat-1", "--broker", broker.url,
                    "--cert", str(ca.cert_path("certifier")), "--key",
                    str(ca.key_path("certifier")), "--ca", str(ca.ca_path),
                    "--check", "birth.", "--check", "calls.known_method",
                ],
                capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"},
            )  # fmt: skip
        finally:
            agent.stop()
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "PASS calls.known_method" in cli.stdout and "PASS birth.sef_agent" in cli.stdout
    outcomes = {r.check.id: (r.outcome, r.evidence) for r in report.results}
    failed = {k: v for k, (o, v) in outcomes.items() if o is Outcome.FAIL}
    assert not failed, failed
    assert outcomes["birth.sef_agent"][0] is Outcome.PASS  # a signed Ping, a verified reply
    assert outcomes["sessions.rebirth"][0] is Outcome.PASS  # a signed Rebirth
    assert outcomes["sessions.restart"][0] is Outcome.PASS
    assert outcomes["sessions.will"][0] is Outcome.PASS
    assert outcomes["sessions.reconnect"][0] is Outcome.SKIP  # no takeover with credentials
    assert outcomes["sessions.stale_death"][0] is Outcome.SKIP  # the ACL: not our topic


def _read_until(fd: int, text: str, timeout_s: float) -> str:
    """Read the pty master ``fd`` until ``text`` shows up (or fail after ``timeout_s``)."""
    seen = ""
    deadline = time.monotonic() + timeout_s
    while text not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {text!r} on the terminal: {seen!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            seen += os.read(fd, 4096).decode(errors="replace")
    return seen


def test_operator_restarts_the_agent_when_asked_on_a_terminal(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """Without --restart-cmd, on a terminal, the certifier asks the operator to restart
    the agent and waits for its new session."""
    with start_virtual_battery(mosquitto, tmp_path / "agent") as agent:
        master, slave = pty.openpty()
        process = subprocess.Popen(
            [
                sys.executable, "-m", "sef", "certify", agent.agent_id, "--insecure",
                "--broker", mosquitto.url, "--check", "sessions.restart",
                "--restart-timeout", "30",
            ],
            stdin=slave, stdout=subprocess.PIPE, stderr=slave, text=True,
            env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
        os.close(slave)
        try:
            prompt = _read_until(master, "waiting up to 30 s", 30.0)
            assert f"Restart agent {agent.agent_id} now" in prompt
            assert os.system(agent.restart_cmd) == 0  # the operator
            out, _ = process.communicate(timeout=40)
        finally:
            process.kill()
            os.close(master)
    assert process.returncode == 0, out
    assert "PASS sessions.restart" in out

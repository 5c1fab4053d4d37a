"""Run a certification: connect the probe, run the selected checks in order (each with a
time limit), print one line per check and a summary, return the :class:`Report`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape

from sef.bus import BusClient
from sef.certify._model import (
    Check,
    CheckFailed,
    CheckResult,
    CheckSkipped,
    Level,
    Outcome,
    Report,
)
from sef.certify._probe import Probe, ProbeSettings
from sef.certify._registry import all_checks
from sef.security import Security

__all__ = ["CertifyOptions", "run_certification", "select_checks"]

STYLE = {Outcome.PASS: "green", Outcome.FAIL: "bold red", Outcome.SKIP: "yellow"}


@dataclass
class CertifyOptions:
    """What to certify and how.

    Attributes:
        broker: broker URL (``mqtt://`` or ``mqtts://``).
        agent_id: the agent under test.
        root: topic root.
        level: ``required`` runs the MUST rules; ``recommended`` also the SHOULD rules.
        interfaces: interface name -> XML the agent must implement (``--interface``).
        restart_cmd: shell command that restarts the agent (e.g. kills it with SIGKILL and
            starts it again); ``None``: ask the operator when ``interactive``, else skip.
        interactive: a terminal is attached: ask the operator to restart the agent.
        timeout_s: time limit of one check, s (a check may set a longer one of its own).
        restart_timeout_s: how long to wait for the agent to come back after a restart, s.
        security: EMS credentials: signed (protocol version 2) calls; ``None``: version 1.
        prepare_bus: applied to every MQTT client the certifier makes (TLS context).
        select: run only the checks whose id starts with one of these (all when empty).
    """

    broker: str
    agent_id: str
    root: str = "sef"
    level: Level = Level.RECOMMENDED
    interfaces: dict[str, bytes] = field(default_factory=dict)
    restart_cmd: str | None = None
    interactive: bool = False
    timeout_s: float = 20.0
    restart_timeout_s: float = 60.0
    security: Security | None = None
    prepare_bus: Callable[[BusClient], None] | None = None
    select: tuple[str, ...] = ()


def select_checks(
    level: Level, select: Sequence[str] = (), checks: Sequence[Check] | None = None
) -> list[Check]:
    """The checks a run at ``level`` takes, in order (``select``: id prefixes)."""
    pool = all_checks() if checks is None else list(checks)
    return [
        c
        for c in pool
        if (level is Level.RECOMMENDED or c.level is Level.REQUIRED)
        and (not select or c.id.startswith(tuple(select)))
    ]


def _line(result: CheckResult) -> str:
    check = result.check
    style = STYLE[result.outcome]
    return (
        f"[{style}]{result.outcome.value:4}[/] {escape(check.id):30} {escape(check.section):6} "
        f"{escape(result.evidence)} [dim]({result.duration_s:.1f} s)[/]"
    )


async def _run_one(check: Check, probe: Probe, default_timeout_s: float) -> CheckResult:
    timeout = check.timeout_s or default_timeout_s
    started = time.monotonic()
    try:
        evidence = await asyncio.wait_for(check.run(probe), timeout)
        outcome = Outcome.PASS
    except CheckFailed as exc:
        outcome, evidence = Outcome.FAIL, str(exc)
    except CheckSkipped as exc:
        outcome, evidence = Outcome.SKIP, str(exc)
    except TimeoutError:
        outcome, evidence = Outcome.FAIL, f"no result within {timeout:g} s"
    except Exception as exc:  # a check's bug or a broken connection: still a result
        outcome, evidence = Outcome.FAIL, f"check error: {type(exc).__name__}: {exc}"
    return CheckResult(check, outcome, evidence, time.monotonic() - started)


async def run_certification(
    options: CertifyOptions,
    console: Console | None = None,
    checks: Sequence[Check] | None = None,
) -> Report:
    """Certify ``options.agent_id``: one line per check on ``console`` and a summary.

    ``checks`` replaces the registry's checks (tests). Raises :class:`sef.bus.BusError`
    when the broker cannot be reached.
    """
    out = console or Console()
    selected = select_checks(options.level, options.select, checks)
    report = Report(options.agent_id, options.broker, options.level)
    probe = Probe(
        ProbeSettings(
            broker=options.broker,
            agent_id=options.agent_id,
            root=options.root,
            security=options.security,
            prepare_bus=options.prepare_bus,
            restart_cmd=options.restart_cmd,
            interactive=options.interactive,
            restart_timeout_s=options.restart_timeout_s,
            expected_interfaces=dict(options.interfaces),
        )
    )
    started = time.monotonic()
    out.print(
        f"certifying agent [bold]{escape(options.agent_id)}[/] on {escape(options.broker)} "
        f"at level {options.level.value}: {len(selected)} checks",
        highlight=False,
    )
    await probe.start()
    try:
        if not await probe.wait_about(min(10.0, options.timeout_s)):
            out.print("[yellow]no retained About from the agent yet[/]", highlight=False)
        for check in selected:
            result = await _run_one(check, probe, options.timeout_s)
            report.results.append(result)
            out.print(_line(result), highlight=False, soft_wrap=True)
    finally:
        await probe.stop()
    report.duration_s = time.monotonic() - started
    verdict = "[green]PASSED[/]" if report.passed else "[bold red]FAILED[/]"
    out.print(
        f"{verdict}: {report.count(Outcome.PASS)} passed, {report.count(Outcome.FAIL)} failed, "
        f"{report.count(Outcome.SKIP)} skipped in {report.duration_s:.1f} s",
        highlight=False,
    )
    return report

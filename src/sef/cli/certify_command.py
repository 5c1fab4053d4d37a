"""``sef certify``: run the conformance suite against a live agent (docs/certify.md)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import typer
from rich.console import Console

import sef.discovery  # noqa: F401  (registers mdns:// broker URLs with the bus)
from sef.bus import BusError, check_id
from sef.certify import CertifyOptions, Level, run_certification, write_junit, write_report_dir
from sef.cli._security_options import (
    CA_OPTION,
    CERT_OPTION,
    CRL_OPTION,
    INSECURE_OPTION,
    KEY_OPTION,
    Credentials,
    secure_connection,
)
from sef.cli._signals import EXIT_USAGE
from sef.interface import InterfaceError, load_file
from sef.security import Role

__all__ = ["certify"]

EXIT_FAILED = 1
"""A check failed (the agent is not conformant at the level asked)."""

_err = Console(stderr=True)


def _interfaces(paths: list[Path]) -> dict[str, bytes]:
    """Interface name -> XML bytes of each ``--interface`` file (exit 2 if one is bad)."""
    found: dict[str, bytes] = {}
    for path in paths:
        try:
            node = load_file(path)
            data = path.read_bytes()
        except (InterfaceError, OSError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--interface") from None
        if not node.interfaces:
            raise typer.BadParameter(f"{path} declares no interface", param_hint="--interface")
        for name in node.interfaces:
            found[name] = data
    return found


def certify(
    agent_id: str = typer.Argument(..., help="Id of the agent under test."),
    broker: str | None = typer.Option(
        None,
        "--broker",
        "-b",
        help="Broker URL: mqtts://HOST[:PORT] (default mqtts://127.0.0.1:8883; "
        "mqtt://127.0.0.1:1883 with --insecure); a comma-separated list: failover.",
    ),
    interface: list[Path] = typer.Option(
        [],
        "--interface",
        help="Interface XML the agent must implement (repeatable): its members are compared.",
    ),
    level: Level = typer.Option(
        Level.RECOMMENDED,
        "--level",
        help="required: the MUST rules only; recommended: the SHOULD rules too.",
    ),
    junit: Path | None = typer.Option(None, "--junit", help="Write a JUnit XML report here."),
    report: Path | None = typer.Option(
        None, "--report", help="Write report.json and report.md into this directory."
    ),
    restart_cmd: str | None = typer.Option(
        None,
        "--restart-cmd",
        help="Shell command that restarts the agent (kill it with SIGKILL, start it again) "
        "for the restart and will checks; without it an operator is asked on a terminal, "
        "else the checks are skipped.",
    ),
    restart_timeout: float = typer.Option(
        60.0, "--restart-timeout", min=1.0, help="How long to wait for a restarted agent, s."
    ),
    root: str = typer.Option("sef", "--root", help="Topic root."),
    timeout: float = typer.Option(20.0, "--timeout", min=1.0, help="Time limit per check, s."),
    check: list[str] = typer.Option(
        [], "--check", help="Run only the checks whose id starts with this (repeatable)."
    ),
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
    ca: Path | None = CA_OPTION,
    crl: Path | None = CRL_OPTION,
    insecure: bool = INSECURE_OPTION,
) -> None:
    """Certify a live agent against docs/protocol.md: one line per check (PASS, FAIL or
    SKIP, the rule's section, the evidence) and a summary.

    On a secure bus give this tool an EMS certificate of its own (``sef pki issue --role
    ems certifier``): it sends signed calls like the EMS.

    Exit codes: 0 no check failed; 1 a check failed; 2 bad usage or no broker.
    """
    try:
        check_id("agent", agent_id)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="AGENT_ID") from None
    if not root or any(c in root for c in "+#") or root.endswith("/"):
        raise typer.BadParameter(f"invalid topic root {root!r}", param_hint="--root")
    expected = _interfaces(interface)
    secured = secure_connection(
        "sef certify", broker, Credentials(cert, key, ca, crl, insecure), roles=(Role.EMS,)
    )
    options = CertifyOptions(
        broker=secured.broker,
        agent_id=agent_id,
        root=root,
        level=level,
        interfaces=expected,
        restart_cmd=restart_cmd,
        interactive=restart_cmd is None and sys.stdin.isatty() and sys.stderr.isatty(),
        timeout_s=timeout,
        restart_timeout_s=restart_timeout,
        security=secured.security,
        prepare_bus=secured.harden,
        select=tuple(check),
    )
    try:
        result = asyncio.run(run_certification(options))
    except KeyboardInterrupt:
        _err.print("[yellow]stopped[/]")
        raise typer.Exit(130) from None
    except BusError as exc:
        _err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    if junit is not None:
        write_junit(result, junit)
    if report is not None:
        write_report_dir(result, report)
    if not result.passed:
        raise typer.Exit(EXIT_FAILED)

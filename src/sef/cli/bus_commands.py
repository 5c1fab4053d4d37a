"""``sef agents`` and ``sef call``: the bus from the command line (and the helpers the
other bus commands share; the agents' commands are in :mod:`sef.cli.agent_commands`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

import sef.discovery  # noqa: F401  (registers mdns:// broker URLs with the bus)
from sef.bus import BusClient, BusError
from sef.cli._security_options import (
    CA_OPTION,
    CERT_OPTION,
    CRL_OPTION,
    INSECURE_OPTION,
    KEY_OPTION,
    Credentials,
    Secured,
    secure_connection,
)
from sef.cli._signals import broker_usage
from sef.clock import Clock, ClockSpecError, default_clock, parse_clock
from sef.ems import EMS, Admission, AgentRecord, CallRefused, CallTarget
from sef.ems.render import agents_table
from sef.security import Role

if TYPE_CHECKING:
    pass

console = Console()
err = Console(stderr=True)

BROKER_HELP = (
    "Broker URL: mqtts://HOST[:PORT][?version=3.1.1|5] (default mqtts://127.0.0.1:8883; "
    "mqtt://127.0.0.1:1883 with --insecure); a comma-separated list: failover."
)


def run_async(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a short command's coroutine; Ctrl-C ends it with exit code 130.

    Long-running commands use :func:`sef.cli._signals.run_service` instead (SIGINT and
    SIGTERM stop them cleanly with exit code 0).
    """
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        err.print("[yellow]stopped[/]")
        raise typer.Exit(130) from None
    except BusError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None


def clock_option(spec: str | None) -> Clock:
    """The clock of a ``--clock`` option (default: ``SEF_CLOCK`` or real time)."""
    try:
        return parse_clock(spec) if spec else default_clock()
    except ClockSpecError as exc:
        raise typer.BadParameter(str(exc), param_hint="--clock") from None


def register(app: typer.Typer) -> None:
    """Add the bus commands to the ``sef`` app."""
    app.command("agents")(agents)
    app.command("call")(call)
    from sef.cli import agent_commands

    agent_commands.register(app)


def agents(
    broker: str | None = typer.Option(None, "--broker", "-b", help=BROKER_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
    wait: float = typer.Option(3.0, "--wait", help="Longest time to gather state, s."),
    api: str | None = typer.Option(
        None,
        "--api",
        help="Read from this EMS API (e.g. http://127.0.0.1:8080) instead of the broker.",
    ),
    home: str | None = typer.Option(
        None, "--home", help="Only agents behind this home (gateway); see sef homes."
    ),
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
    ca: Path | None = CA_OPTION,
    crl: Path | None = CRL_OPTION,
    insecure: bool = INSECURE_OPTION,
) -> None:
    """List agents with status, home (gateway), interfaces and last telemetry (read from
    the broker with an operator or EMS certificate, or from the EMS API with --api)."""
    from sef.cli.operator import api_agents, homes_of

    if api is not None:
        summaries, known = api_agents(api, home=home)
        if as_json:
            print(json.dumps(summaries, indent=2))
        else:
            console.print(agents_table(known, f"SEF agents of {api}", homes_of(summaries)))
        return
    secured = secure_connection(
        "sef agents",
        broker,
        Credentials(cert, key, ca, crl, insecure),
        roles=(Role.OPERATOR, Role.EMS),
    )
    home_of: dict[str, str] = {}
    records: list[AgentRecord] = run_async(read_agents(secured, max_s=wait, homes=home_of))
    records = [r for r in records if home is None or home_of.get(r.agent_id) == home]
    if as_json:
        shown = [{**r.summary(), "home": home_of.get(r.agent_id)} for r in records]
        print(json.dumps(shown, indent=2))
    else:
        console.print(agents_table(records, f"SEF agents on {secured.broker}", home_of))


async def read_agents(
    secured: Secured, *, max_s: float, homes: dict[str, str] | None = None
) -> list[AgentRecord]:
    """The agents' retained state on the broker, read without announcing an EMS (and,
    into ``homes``, each agent's home: agent id -> home id)."""
    with broker_usage():
        reader = EMS(
            secured.broker,
            secured.identity or "snapshot",
            announce=False,
            request_rebirth=False,
            admission=Admission.open(),
            security=secured.security,
        )
    secured.harden(reader.bus)
    await reader.start()
    try:
        await reader.settle(0.3, max_s)
        if homes is not None:
            homes.update(reader.homes.home_of)
        return reader.agents()
    finally:
        await reader.stop()


def call(
    target: str = typer.Argument(..., help="Agent id, or group:NAME."),
    member: str = typer.Argument(
        ..., help="INTERFACE.METHOD, e.g. edu.pdx.powerlab.demo.EnergyMethod."
    ),
    args_json: str = typer.Argument(
        "[]", help="Arguments as a JSON array, e.g. '[[[\"charge\",4,1800]]]'."
    ),
    broker: str | None = typer.Option(None, "--broker", "-b", help=BROKER_HELP),
    no_reply: bool = typer.Option(False, "--no-reply", help="Send without asking for a reply."),
    timeout: float = typer.Option(5.0, "--timeout", help="How long to wait for replies, s."),
    expect: int | None = typer.Option(
        None,
        "--expect",
        min=1,
        help="A group call ends once this many replies came (default: at --timeout).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print replies as JSON."),
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
    ca: Path | None = CA_OPTION,
    crl: Path | None = CRL_OPTION,
    insecure: bool = INSECURE_OPTION,
) -> None:
    """Call a method on one agent or on every agent of a group.

    Sends at once: only the called interface's definition is read from the broker (none
    for an interface SEF ships), never the fleet's state. A group's members are not
    known here, so a group call gathers replies until --timeout (or --expect replies).

    Only the EMS role may send calls on a secure bus: give this tool an EMS certificate
    of its own (``sef pki issue --role ems ems-cli``), not the running EMS's (the broker
    would hand that EMS's session over to this tool).

    Exit codes: 0 all replies ok; 1 an agent answered with an error; 2 the call was not
    sent (bad input); 3 no reply in time.
    """
    interface, _, method_name = member.rpartition(".")
    if not interface or not method_name:
        raise typer.BadParameter(f"expected INTERFACE.METHOD, got {member!r}", param_hint="MEMBER")
    try:
        args = json.loads(args_json)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="ARGS_JSON") from None
    if not isinstance(args, list):
        raise typer.BadParameter(
            "arguments must be a JSON array, one item per in-argument", param_hint="ARGS_JSON"
        )
    try:
        dest = CallTarget.parse(target)
    except CallRefused as exc:
        raise typer.BadParameter(str(exc), param_hint="TARGET") from None

    secured = secure_connection(
        "sef call", broker, Credentials(cert, key, ca, crl, insecure), roles=(Role.EMS,)
    )

    with broker_usage():  # a bad --broker is a usage error, before anything connects
        BusClient(secured.broker)
    no_reply_method = False

    async def main() -> list[Any]:
        nonlocal no_reply_method
        from sef.cli._call import call_once

        outcome = await call_once(
            secured.broker,
            secured.identity,
            dest,
            interface,
            method_name,
            args,
            security=secured.security,
            harden=secured.harden,
            clock=default_clock(),
            reply=not no_reply,
            timeout_s=timeout,
            expect=expect,
        )
        spec = outcome.interface.methods.get(method_name)
        no_reply_method = spec is not None and spec.no_reply
        return outcome.replies

    try:
        replies = run_async(main())
    except CallRefused as exc:
        err.print(f"[red]call not sent:[/] {exc}")
        raise typer.Exit(2) from None
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "agent": r.agent,
                        "ok": r.ok,
                        "result": r.result,
                        "error": r.error,
                        "message": r.message,
                    }
                    for r in replies
                ],
                indent=2,
            )
        )
    else:
        for r in replies:
            if r.ok:
                console.print(f"[green]{r.agent}[/]: ok {json.dumps(r.result)}")
            else:
                console.print(f"[red]{r.agent}[/]: {r.error}: {r.message}")
    if no_reply:
        return
    if not replies:
        err.print(f"[yellow]no reply from {dest} within {timeout} s[/]")
        if no_reply_method:
            err.print(
                f"{member} is annotated NoReply, but an agent must answer every call that "
                "has a reply_to (docs/protocol.md §6 step 7); --no-reply sends none"
            )
        raise typer.Exit(3)
    if not all(r.ok for r in replies):
        raise typer.Exit(1)

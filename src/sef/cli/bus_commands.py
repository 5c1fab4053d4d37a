"""``sef ems``, ``sef agents``, ``sef call`` and ``sef agent``: the bus from the command line."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

import sef.discovery  # noqa: F401  (registers mdns:// broker URLs with the bus)
from sef.bus import BusError
from sef.cli._security_options import (
    CA_OPTION,
    CERT_OPTION,
    CRL_OPTION,
    ENROLL_URL_OPTION,
    INSECURE_OPTION,
    KEY_OPTION,
    Credentials,
    Secured,
    agent_groups,
    secure_connection,
)
from sef.cli._signals import broker_usage, run_service, until_stopped
from sef.clock import Clock, ClockSpecError, default_clock, parse_clock
from sef.ems import EMS, Admission, AgentRecord, CallRefused, CallTarget
from sef.ems.render import agents_table
from sef.security import Role

if TYPE_CHECKING:
    from sef.agents import Agent

console = Console()
err = Console(stderr=True)

BROKER_HELP = (
    "Broker URL: mqtts://HOST[:PORT][?version=3.1.1|5] (default mqtts://127.0.0.1:8883; "
    "mqtt://127.0.0.1:1883 with --insecure)."
)
AGENT_BROKER_HELP = (
    "Broker URL: mqtts://HOST[:PORT][?version=3.1.1|5], or mdns://[NAME] to "
    "find it over mDNS (the default when omitted; re-discovered after every "
    "lost connection; with credentials only a broker proving the deployment CA's "
    "identity is accepted)."
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


async def run_agent(agent: Agent) -> None:
    """Run an agent until SIGINT or SIGTERM: it then publishes its ``shutdown`` status."""
    await agent.start()
    try:
        await until_stopped()
    finally:
        await asyncio.shield(agent.stop())


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
    app.command("bis")(bis)
    app.command("ucm")(ucm)
    agent_app = typer.Typer(help="Run an agent.", no_args_is_help=True)
    agent_app.command("virtual-battery")(virtual_battery)
    app.add_typer(agent_app, name="agent")


def agents(
    broker: str | None = typer.Option(None, "--broker", "-b", help=BROKER_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
    wait: float = typer.Option(3.0, "--wait", help="Longest time to gather state, s."),
    api: str | None = typer.Option(
        None,
        "--api",
        help="Read from this EMS API (e.g. http://127.0.0.1:8080) instead of the broker.",
    ),
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
    ca: Path | None = CA_OPTION,
    crl: Path | None = CRL_OPTION,
    insecure: bool = INSECURE_OPTION,
) -> None:
    """List agents with status, interfaces and last telemetry (read from the broker with
    an operator or EMS certificate, or from the EMS API with --api)."""
    if api is not None:
        from sef.cli.operator import api_agents

        summaries, known = api_agents(api)
        if as_json:
            print(json.dumps(summaries, indent=2))
        else:
            console.print(agents_table(known, f"SEF agents of {api}"))
        return
    secured = secure_connection(
        "sef agents",
        broker,
        Credentials(cert, key, ca, crl, insecure),
        roles=(Role.OPERATOR, Role.EMS),
    )
    records: list[AgentRecord] = run_async(read_agents(secured, max_s=wait))
    if as_json:
        print(json.dumps([r.summary() for r in records], indent=2))
    else:
        console.print(agents_table(records, f"SEF agents on {secured.broker}"))


async def read_agents(secured: Secured, *, max_s: float) -> list[AgentRecord]:
    """The agents' retained state on the broker, read without announcing an EMS."""
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
    as_json: bool = typer.Option(False, "--json", help="Print replies as JSON."),
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
    ca: Path | None = CA_OPTION,
    crl: Path | None = CRL_OPTION,
    insecure: bool = INSECURE_OPTION,
) -> None:
    """Call a method on one agent or on every agent of a group.

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

    async def main() -> list[Any]:
        with broker_usage():
            client = EMS(
                secured.broker,
                secured.identity or "cli",
                announce=False,
                request_rebirth=False,
                security=secured.security,
            )
        secured.harden(client.bus)
        await client.start()
        try:
            await client.settle(0.2, 1.5)
            return await client.call(
                dest, interface, method_name, args, reply=not no_reply, timeout_s=timeout
            )
        finally:
            await client.stop()

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
        raise typer.Exit(3)
    if not all(r.ok for r in replies):
        raise typer.Exit(1)


def virtual_battery(
    agent_id: str = typer.Option(..., "--id", help="Agent id on the bus."),
    broker: str | None = typer.Option(None, "--broker", "-b", help=AGENT_BROKER_HELP),
    group: list[str] = typer.Option([], "--group", "-g", help="Group to join (repeatable)."),
    soc: float = typer.Option(0.5, "--soc", min=0.0, max=1.0, help="Initial SOC, fraction."),
    step: float = typer.Option(60.0, "--step", help="Model step and telemetry period, clock s."),
    clock: str | None = typer.Option(None, "--clock", help="real or scaled:SPEED[:START]."),
    keepalive: int = typer.Option(10, "--keepalive", help="MQTT keepalive, s."),
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
    ca: Path | None = CA_OPTION,
    crl: Path | None = CRL_OPTION,
    insecure: bool = INSECURE_OPTION,
    enroll_url: str | None = ENROLL_URL_OPTION,
) -> None:
    """Run a battery agent with the battery model inside it (no device protocol)."""
    from sef.agents.virtual_battery import VirtualBatteryAgent

    secured = _agent_security(
        "sef agent virtual-battery", agent_id, broker, cert, key, ca, crl, insecure
    )
    with broker_usage():
        agent = VirtualBatteryAgent(
            agent_id,
            secured.broker,
            soc=soc,
            step_s=step,
            groups=agent_groups(secured, group),
            clock=clock_option(clock),
            keepalive_s=keepalive,
            security=secured.security,
        )
    secured.harden(agent.bus)
    print(f"agent {agent_id} starting on {agent.bus.url}", flush=True)
    run_service(
        secured.with_renewal(run_agent(agent), agent.bus, enroll_url), name=f"agent {agent_id}"
    )


def bis(
    modbus: str = typer.Option(..., "--modbus", help="Battery address: tcp://HOST:PORT."),
    agent_id: str = typer.Option(..., "--id", help="Agent id on the bus."),
    broker: str | None = typer.Option(None, "--broker", "-b", help=AGENT_BROKER_HELP),
    unit: int = typer.Option(1, "--unit", min=1, max=247, help="Modbus unit id."),
    group: list[str] = typer.Option([], "--group", "-g", help="Group to join (repeatable)."),
    poll: float = typer.Option(1.0, "--poll", min=0.01, help="Poll and telemetry period, real s."),
    clock: str | None = typer.Option(None, "--clock", help="real or scaled:SPEED[:START]."),
    keepalive: int = typer.Option(10, "--keepalive", help="MQTT keepalive, s."),
    open_revert: float = typer.Option(
        20.0,
        "--open-revert",
        min=0.1,
        help="An open-ended event ends on the battery by "
        "itself this many real s after the BIS stops re-arming it.",
    ),
    host_loss_grace: float = typer.Option(
        60.0,
        "--host-loss-grace",
        min=0.0,
        help="Real s with no EMS online before open-ended "
        "events end and the rest of a sequence is dropped.",
    ),
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
    ca: Path | None = CA_OPTION,
    crl: Path | None = CRL_OPTION,
    insecure: bool = INSECURE_OPTION,
    enroll_url: str | None = ENROLL_URL_OPTION,
) -> None:
    """Run the BIS: the demo interface on the bus, SunSpec Modbus TCP to the battery."""
    from urllib.parse import urlsplit

    from sef.agents.bis import BISAgent

    parts = urlsplit(modbus if "://" in modbus else f"tcp://{modbus}")
    try:
        port = parts.port or 502
    except ValueError:
        port = -1
    if parts.scheme != "tcp" or not parts.hostname or not 0 < port < 65536:
        raise typer.BadParameter(f"expected tcp://HOST:PORT, got {modbus!r}", param_hint="--modbus")
    host, the_clock = parts.hostname, clock_option(clock)
    secured = _agent_security("sef bis", agent_id, broker, cert, key, ca, crl, insecure)
    groups = agent_groups(secured, group)

    async def main() -> None:
        # pymodbus' client needs the running event loop: build the agent inside it
        agent = BISAgent(
            agent_id,
            secured.broker,
            modbus_host=host,
            modbus_port=port,
            unit=unit,
            poll_s=poll,
            open_revert_s=open_revert,
            host_loss_grace_s=host_loss_grace,
            groups=groups,
            clock=the_clock,
            keepalive_s=keepalive,
            security=secured.security,
        )
        secured.harden(agent.bus)
        print(f"agent {agent_id} starting on {agent.bus.url}, battery at {host}:{port}", flush=True)
        await secured.with_renewal(run_agent(agent), agent.bus, enroll_url)

    run_service(main(), name=f"bis {agent_id}")


def ucm(
    agent_id: str = typer.Option(..., "--id", help="Agent id on the bus."),
    serial: str | None = typer.Option(
        None, "--serial", help="Serial port or pty path of the SGD (19200 8N1)."
    ),
    tcp: str | None = typer.Option(None, "--tcp", help="CTA-2045 over TCP: HOST:PORT."),
    broker: str | None = typer.Option(None, "--broker", "-b", help=AGENT_BROKER_HELP),
    group: list[str] = typer.Option([], "--group", "-g", help="Group to join (repeatable)."),
    poll: float = typer.Option(1.0, "--poll", min=0.05, help="Poll and telemetry period, real s."),
    heartbeat: float = typer.Option(
        30.0, "--heartbeat", min=1.0, max=60.0, help="Outside Comm Status period, real s."
    ),
    clock: str | None = typer.Option(None, "--clock", help="real or scaled:SPEED[:START]."),
    keepalive: int = typer.Option(10, "--keepalive", help="MQTT keepalive, s."),
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
    ca: Path | None = CA_OPTION,
    crl: Path | None = CRL_OPTION,
    insecure: bool = INSECURE_OPTION,
    enroll_url: str | None = ENROLL_URL_OPTION,
) -> None:
    """Run the UCM: the demo interface on the bus, CTA-2045 to a water heater (SGD)."""
    from sef.agents.ucm import UCMAgent

    if (serial is None) == (tcp is None):
        raise typer.BadParameter("give exactly one of --serial PATH and --tcp HOST:PORT")
    target: tuple[str, int] | None = None
    if tcp is not None:
        host, _, port_text = tcp.rpartition(":")
        if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise typer.BadParameter(f"expected HOST:PORT, got {tcp!r}", param_hint="--tcp")
        target = (host, int(port_text))
    secured = _agent_security("sef ucm", agent_id, broker, cert, key, ca, crl, insecure)
    with broker_usage():
        agent = UCMAgent(
            agent_id,
            secured.broker,
            serial_port=serial,
            tcp=target,
            poll_s=poll,
            heartbeat_s=heartbeat,
            groups=agent_groups(secured, group),
            clock=clock_option(clock),
            keepalive_s=keepalive,
            security=secured.security,
        )
    secured.harden(agent.bus)
    print(f"agent {agent_id} starting on {agent.bus.url}, SGD at {serial or tcp}", flush=True)
    run_service(
        secured.with_renewal(run_agent(agent), agent.bus, enroll_url), name=f"ucm {agent_id}"
    )


def _agent_security(
    command: str,
    agent_id: str,
    broker: str | None,
    cert: Path | None,
    key: Path | None,
    ca: Path | None,
    crl: Path | None,
    insecure: bool,
) -> Secured:
    """An agent's credentials: an ``agent`` certificate whose identity is ``--id``; no
    ``--broker`` means mDNS discovery (TLS only when secure)."""
    return secure_connection(
        command,
        broker,
        Credentials(cert, key, ca, crl, insecure),
        roles=(Role.AGENT,),
        identity=agent_id,
        discover=True,
    )

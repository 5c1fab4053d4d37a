"""``sef bis``, ``sef ucm`` and ``sef agent virtual-battery``: run an agent."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from sef.cli._nameplate_options import (
    CHARGE_EFFICIENCY_OPTION,
    COMPRESSOR_KW_OPTION,
    DEADBAND_K_OPTION,
    DISCHARGE_EFFICIENCY_OPTION,
    ELEMENT_KW_OPTION,
    HEATER_TYPE_OPTION,
    INLET_C_OPTION,
    SETPOINT_C_OPTION,
    VOLUME_L_OPTION,
)
from sef.cli._security_options import (
    CA_OPTION,
    CERT_OPTION,
    CRL_OPTION,
    ENROLL_URL_OPTION,
    INSECURE_OPTION,
    KEY_OPTION,
    SIGN_TELEMETRY_OPTION,
    Credentials,
    Secured,
    _fail,
    agent_groups,
    secure_connection,
)
from sef.cli._signals import broker_usage, run_service, until_stopped
from sef.cli.bus_commands import clock_option
from sef.discovery import HomePin, MdnsResolver, PinError, default_state_dir, is_mdns_url, load_pin
from sef.security import Role

if TYPE_CHECKING:
    from sef.agents import Agent

AGENT_BROKER_HELP = (
    "Broker URL: mqtts://HOST[:PORT][?version=3.1.1|5], or mdns://[NAME] to "
    "find it over mDNS (the default when omitted; re-discovered after every "
    "lost connection; with credentials only a broker proving the deployment CA's "
    "identity is accepted); a comma-separated list: failover (starts at a node chosen "
    "by --id, moves to the next when the connection fails)."
)
HOME_OPTION: Any = typer.Option(
    None,
    "--home",
    help="Home this agent belongs to: a broker found over mDNS is accepted only if it is "
    "this home's gateway (default: the home of the first gateway joined, then kept in "
    "--state-dir). Secure: must be the certificate's home.",
)
STATE_DIR_OPTION: Any = typer.Option(
    None,
    "--state-dir",
    envvar="SEF_STATE_DIR",
    help="Directory of the agent's state: its home pin is STATE_DIR/ID/home "
    "(default: $XDG_STATE_HOME/sef or ~/.local/state/sef).",
)


def register(app: typer.Typer) -> None:
    """Add ``bis``, ``ucm`` and ``agent virtual-battery`` to the ``sef`` app."""
    app.command("bis")(bis)
    app.command("ucm")(ucm)
    agent_app = typer.Typer(help="Run an agent.", no_args_is_help=True)
    agent_app.command("virtual-battery")(virtual_battery)
    app.add_typer(agent_app, name="agent")


async def run_agent(agent: Agent) -> None:
    """Run an agent until SIGINT or SIGTERM: it then publishes its ``shutdown`` status."""
    await agent.start()
    try:
        await until_stopped()
    finally:
        await asyncio.shield(agent.stop())


async def serve_agent(
    agent: Agent,
    secured: Secured,
    enroll_url: str | None,
    device: str = "",
    pin: HomePin | None = None,
) -> None:
    """Make the agent's bus accept only our broker (of its home when ``pin`` is given
    and it discovers its broker), say where it runs (and, in ``device``, what it drives),
    and run it with certificate renewal until stopped."""
    secured.harden(agent.bus)
    pinned = ""
    if pin is not None and isinstance(agent.bus.resolver, MdnsResolver):
        agent.bus.resolver.use_pin(pin)
        pinned = f", pinned to home {pin.home!r}" if pin.home else ", not pinned to a home yet"
    print(f"agent {agent.agent_id} starting on {agent.bus.url}{pinned}{device}", flush=True)
    await secured.with_renewal(run_agent(agent), agent.bus, enroll_url)


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
    sign_telemetry: bool = SIGN_TELEMETRY_OPTION,
    home: str | None = HOME_OPTION,
    state_dir: Path | None = STATE_DIR_OPTION,
) -> None:
    """Run a battery agent with the battery model inside it (no device protocol)."""
    from sef.agents.virtual_battery import VirtualBatteryAgent

    secured = _agent_security(
        "sef agent virtual-battery", agent_id, broker, cert, key, ca, crl, insecure, sign_telemetry
    )
    pin = _home_pin("sef agent virtual-battery", agent_id, secured, home, state_dir)
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
            sign_telemetry=sign_telemetry,
        )
    run_service(serve_agent(agent, secured, enroll_url, pin=pin), name=f"agent {agent_id}")


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
    charge_efficiency: float = CHARGE_EFFICIENCY_OPTION,
    discharge_efficiency: float = DISCHARGE_EFFICIENCY_OPTION,
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
    ca: Path | None = CA_OPTION,
    crl: Path | None = CRL_OPTION,
    insecure: bool = INSECURE_OPTION,
    enroll_url: str | None = ENROLL_URL_OPTION,
    sign_telemetry: bool = SIGN_TELEMETRY_OPTION,
    home: str | None = HOME_OPTION,
    state_dir: Path | None = STATE_DIR_OPTION,
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
    secured = _agent_security(
        "sef bis", agent_id, broker, cert, key, ca, crl, insecure, sign_telemetry
    )
    groups = agent_groups(secured, group)
    pin = _home_pin("sef bis", agent_id, secured, home, state_dir)

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
            charge_efficiency_pct=charge_efficiency,
            discharge_efficiency_pct=discharge_efficiency,
            groups=groups,
            clock=the_clock,
            keepalive_s=keepalive,
            security=secured.security,
            sign_telemetry=sign_telemetry,
        )
        await serve_agent(agent, secured, enroll_url, f", battery at {host}:{port}", pin)

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
    advanced_load_up: bool = typer.Option(
        False,
        "--advanced-load-up",
        help="Follow a timed charge with a rate by CTA-2045-B Set Advanced Load Up "
        "(rate x duration Wh), when the SGD supports it.",
    ),
    heater_type: str | None = HEATER_TYPE_OPTION,
    volume_l: float | None = VOLUME_L_OPTION,
    element_kw: float | None = ELEMENT_KW_OPTION,
    compressor_kw: float | None = COMPRESSOR_KW_OPTION,
    setpoint_c: float | None = SETPOINT_C_OPTION,
    deadband_k: float | None = DEADBAND_K_OPTION,
    inlet_c: float | None = INLET_C_OPTION,
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
    ca: Path | None = CA_OPTION,
    crl: Path | None = CRL_OPTION,
    insecure: bool = INSECURE_OPTION,
    enroll_url: str | None = ENROLL_URL_OPTION,
    sign_telemetry: bool = SIGN_TELEMETRY_OPTION,
    home: str | None = HOME_OPTION,
    state_dir: Path | None = STATE_DIR_OPTION,
) -> None:
    """Run the UCM: the demo interface on the bus, CTA-2045 to a water heater (SGD)."""
    from sef.agents._ucm_nameplate import NameplateOptions
    from sef.agents.ucm import UCMAgent

    if (serial is None) == (tcp is None):
        raise typer.BadParameter("give exactly one of --serial PATH and --tcp HOST:PORT")
    try:
        plate = NameplateOptions(
            heater_type, volume_l, element_kw, compressor_kw, setpoint_c, deadband_k, inlet_c
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    target: tuple[str, int] | None = None
    if tcp is not None:
        host, _, port_text = tcp.rpartition(":")
        if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise typer.BadParameter(f"expected HOST:PORT, got {tcp!r}", param_hint="--tcp")
        target = (host, int(port_text))
    secured = _agent_security(
        "sef ucm", agent_id, broker, cert, key, ca, crl, insecure, sign_telemetry
    )
    pin = _home_pin("sef ucm", agent_id, secured, home, state_dir)
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
            sign_telemetry=sign_telemetry,
            use_advanced_load_up=advanced_load_up,
            nameplate=plate,
        )
    run_service(
        serve_agent(agent, secured, enroll_url, f", SGD at {serial or tcp}", pin),
        name=f"ucm {agent_id}",
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
    sign_telemetry: bool = False,
) -> Secured:
    """An agent's credentials: an ``agent`` certificate whose identity is ``--id``; no
    ``--broker`` means mDNS discovery (TLS only when secure). ``--sign-telemetry`` needs
    credentials."""
    if sign_telemetry and insecure:
        _fail(f"{command}: --sign-telemetry needs credentials: it cannot run with --insecure")
    return secure_connection(
        command,
        broker,
        Credentials(cert, key, ca, crl, insecure),
        roles=(Role.AGENT,),
        identity=agent_id,
        discover=True,
    )


def _home_pin(
    command: str, agent_id: str, secured: Secured, home: str | None, state_dir: Path | None
) -> HomePin | None:
    """The home an agent that discovers its broker is pinned to (``docs/discovery.md``,
    "Several homes in range"); ``None`` for an explicit ``mqtt(s)://`` broker, which
    disables pinning. A pin that cannot run is refused (exit 2)."""
    me = secured.security.identity if secured.security is not None else None
    if home is not None and me is not None and me.home != home:
        _fail(
            f"{command}: --home {home!r} does not match the home of the certificate of "
            f"{me.id!r} ({me.home!r}): that home's gateway would refuse this agent"
        )
    if not is_mdns_url(secured.broker):
        if home is not None:
            typer.echo(
                f"note: --home {home} is not checked with --broker {secured.broker}: "
                "pinning applies to a broker found over mDNS",
                err=True,
            )
        return None
    try:
        return load_pin(
            agent_id,
            state_dir or default_state_dir(),
            home,
            certificate_home=None if me is None else me.home,
            secure=me is not None,
        )
    except PinError as exc:
        _fail(f"{command}: {exc}")

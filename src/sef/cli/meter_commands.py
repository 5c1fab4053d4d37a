"""``sef emulate meter`` (a SunSpec meter on Modbus TCP) and ``sef meter`` (its agent).

Also the ``--ct HOST:PORT`` reporter that ``sef emulate battery`` and ``sef emulate
waterheater`` use to tell a meter emulator their power (``docs/meter.md``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from sef.cli._security_options import (
    CA_OPTION,
    CERT_OPTION,
    CRL_OPTION,
    ENROLL_URL_OPTION,
    INSECURE_OPTION,
    KEY_OPTION,
    SIGN_TELEMETRY_OPTION,
    agent_groups,
)
from sef.cli._signals import run_service, run_until_stopped
from sef.cli.agent_commands import (
    AGENT_BROKER_HELP,
    HOME_OPTION,
    STATE_DIR_OPTION,
    _agent_security,
    _home_pin,
    serve_agent,
)
from sef.cli.bus_commands import clock_option

__all__ = ["CT_NAME_OPTION", "CT_OPTION", "emulate_meter", "meter", "start_ct_reporter"]

CT_OPTION: Any = typer.Option(
    None,
    "--ct",
    help="Report this device's AC power to a meter emulator's CT input, HOST:PORT (UDP), "
    "as a current transformer on its circuit would (sef emulate meter --ct-port).",
)
CT_NAME_OPTION: Any = typer.Option(
    None, "--ct-name", help="Name of this device at the meter's CT input (default: unique)."
)

_reporters: set[asyncio.Task[None]] = set()


def start_ct_reporter(ct: str | None, name: str, read_w: Callable[[], float]) -> None:
    """Start reporting ``read_w()`` (W, + = drawn from the grid) to the meter at ``ct``
    (``HOST:PORT``; nothing when None); call from inside the running event loop."""
    if ct is None:
        return
    from sef.emulators._meter_sources import parse_host_port, report_power

    task = asyncio.ensure_future(report_power(read_w, parse_host_port(ct), name))
    _reporters.add(task)
    task.add_done_callback(_reporters.discard)
    typer.echo(f"reporting power to the meter at {ct} as {name}")


def check_ct(ct: str | None) -> None:
    """Refuse a malformed ``--ct`` before anything starts."""
    if ct is None:
        return
    from sef.emulators._meter_sources import parse_host_port

    try:
        parse_host_port(ct)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--ct") from None


def emulate_meter(
    port: int = typer.Option(..., "--port", "-p", min=0, max=65535, help="Modbus TCP port."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (Modbus and CT)."),
    unit: int = typer.Option(1, "--unit", min=1, max=247, help="Modbus unit (device) id."),
    phases: int = typer.Option(1, "--phases", help="1 (SunSpec model 201) or 3 (model 203)."),
    base_load: Path | None = typer.Option(
        None,
        "--base-load",
        exists=True,
        dir_okay=False,
        help="Base load profile: CSV time_s,kw (s after 00:00 UTC of the clock, step-held, "
        "repeats daily).",
    ),
    base_kw: float = typer.Option(0.0, "--base-kw", help="Constant base load, kW (no CSV)."),
    ct_port: int | None = typer.Option(
        None, "--ct-port", min=0, max=65535, help="UDP port of the CT inputs (0 = free)."
    ),
    ct_timeout: float = typer.Option(
        5.0, "--ct-timeout", min=0.1, help="A CT source silent this long (real s) reads 0 W."
    ),
    max_kw: float = typer.Option(100.0, "--max-kw", min=0.1, help="Largest |power|, kW."),
    clock: str | None = typer.Option(
        None,
        "--clock",
        help="Clock spec: real, scaled:SPEED or scaled:SPEED:START@ANCHOR (default: SEF_CLOCK).",
    ),
) -> None:
    """Emulate a SunSpec meter (models 1 + 201/203) measuring base load + CT sources.

    Prints one line "meter emulator listening on HOST:PORT unit N[, CT on HOST:PORT]".
    """
    from sef.emulators._meter_sources import BaseLoad
    from sef.emulators.meter import MeterEmulator, run_meter_emulator

    if phases not in (1, 3):
        raise typer.BadParameter("1 or 3", param_hint="--phases")
    try:
        load = BaseLoad.from_csv(base_load) if base_load else BaseLoad.constant(base_kw)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--base-load") from None
    the_clock = clock_option(clock)

    def announce(emulator: MeterEmulator) -> None:
        bound_host, bound_port = emulator.address or (host, port)
        where = emulator.ct_address
        ct = f", CT on {where[0]}:{where[1]}" if where is not None else ""
        typer.echo(f"meter emulator listening on {bound_host}:{bound_port} unit {unit}{ct}")

    async def main() -> None:
        emulator = MeterEmulator(
            host, port, unit, the_clock, phases=phases, base_load=load, ct_port=ct_port,
            ct_timeout_s=ct_timeout, max_kw=max_kw,
        )  # fmt: skip
        await run_until_stopped(run_meter_emulator(emulator, on_ready=announce))

    run_service(main(), name="meter emulator")


def meter(
    modbus: str = typer.Option(..., "--modbus", help="Meter address: tcp://HOST:PORT."),
    agent_id: str = typer.Option(..., "--id", help="Agent id on the bus."),
    broker: str | None = typer.Option(None, "--broker", "-b", help=AGENT_BROKER_HELP),
    unit: int = typer.Option(1, "--unit", min=1, max=247, help="Modbus unit id."),
    group: list[str] = typer.Option([], "--group", "-g", help="Group to join (repeatable)."),
    poll: float = typer.Option(1.0, "--poll", min=0.01, help="Poll and telemetry period, real s."),
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
    """Run the meter agent: Net_Power_kW (+ = import) on the bus from any SunSpec meter."""
    from urllib.parse import urlsplit

    from sef.agents.meter import MeterAgent

    parts = urlsplit(modbus if "://" in modbus else f"tcp://{modbus}")
    try:
        port = parts.port or 502
    except ValueError:
        port = -1
    if parts.scheme != "tcp" or not parts.hostname or not 0 < port < 65536:
        raise typer.BadParameter(f"expected tcp://HOST:PORT, got {modbus!r}", param_hint="--modbus")
    host, the_clock = parts.hostname, clock_option(clock)
    secured = _agent_security(
        "sef meter", agent_id, broker, cert, key, ca, crl, insecure, sign_telemetry
    )
    groups = agent_groups(secured, group)
    pin = _home_pin("sef meter", agent_id, secured, home, state_dir)

    async def main() -> None:
        agent = MeterAgent(
            agent_id, secured.broker, modbus_host=host, modbus_port=port, unit=unit,
            poll_s=poll, groups=groups, clock=the_clock, keepalive_s=keepalive,
            security=secured.security, sign_telemetry=sign_telemetry,
        )  # fmt: skip
        await serve_agent(agent, secured, enroll_url, f", meter at {host}:{port}", pin)

    run_service(main(), name=f"meter {agent_id}")

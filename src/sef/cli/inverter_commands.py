"""``sef emulate inverter`` and ``sef inverter``: the smart PV inverter family (issue 17).

Thin wrappers over :func:`sef.emulators.inverter.run_inverter_emulator` and
:class:`sef.agents.inverter.InverterAgent`; see ``docs/inverter.md``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

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
from sef.cli.meter_commands import CT_NAME_OPTION, CT_OPTION, check_ct, start_ct_reporter

__all__ = ["emulate_inverter", "inverter", "parse_modbus_url"]

CLOCK_HELP = "Clock spec: real, scaled:SPEED or scaled:SPEED:START@ANCHOR (default: SEF_CLOCK)."


def parse_modbus_url(url: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` (or ``HOST:PORT``) → (host, port); :class:`typer.BadParameter`
    with the reason otherwise."""
    from urllib.parse import urlsplit

    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    try:
        port = parts.port or 502
    except ValueError:
        port = -1
    if parts.scheme != "tcp" or not parts.hostname or not 0 < port < 65536:
        raise typer.BadParameter(f"expected tcp://HOST:PORT, got {url!r}", param_hint="--modbus")
    return parts.hostname, port


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def emulate_inverter(
    port: int = typer.Option(..., "--port", "-p", min=0, max=65535, help="Modbus TCP port."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    unit: int = typer.Option(1, "--unit", min=1, max=247, help="Modbus unit (device) id."),
    clock: str | None = typer.Option(None, "--clock", help=CLOCK_HELP),
    dc_kwp: float = typer.Option(6.0, "--dc-kwp", min=0.1, help="PV array rating, kWp."),
    ac_kw: float = typer.Option(5.0, "--ac-kw", min=0.1, help="Inverter rating, kW."),
    kva: float | None = typer.Option(None, "--kva", min=0.1, help="Apparent rating, kVA."),
    latitude: float = typer.Option(40.0, "--lat", min=-90, max=90, help="Site latitude, °."),
    longitude: float = typer.Option(-105.0, "--lon", min=-180, max=180, help="Longitude, °."),
    tilt: float = typer.Option(30.0, "--tilt", min=0, max=90, help="Array tilt, °."),
    azimuth: float = typer.Option(180.0, "--azimuth", min=0, max=360, help="Azimuth, ° (S=180)."),
    clouds: int | None = typer.Option(None, "--clouds", help="Cloudiness process seed."),
    irradiance: Path | None = typer.Option(
        None, "--irradiance", help="Measured-irradiance CSV: time,ghi[,dni,dhi,temp_air]."
    ),
    insecure: bool = typer.Option(
        False,
        "--insecure",
        help="Allow binding a non-loopback address: Modbus TCP has no authentication.",
    ),
    ct: str | None = CT_OPTION,
    ct_name: str | None = CT_NAME_OPTION,
) -> None:
    """Emulate a smart PV inverter: SunSpec 1/701/702/704/705/711 over Modbus TCP."""
    from sef.emulators.inverter import InverterEmulator, InverterSpec, run_inverter_emulator
    from sef.models.pv_irradiance import CsvIrradiance, Site

    if not _loopback(host) and not insecure:
        raise typer.BadParameter(
            "Modbus TCP has no authentication: bind a loopback address, or say --insecure",
            param_hint="--host",
        )
    try:
        if irradiance is not None:
            CsvIrradiance(irradiance)  # a bad file is an error now, not at the first read
        spec = InverterSpec(
            dc_kwp=dc_kwp, ac_kw=ac_kw, kva=kva or ac_kw, tilt_deg=tilt, azimuth_deg=azimuth,
            site=Site(latitude, longitude), cloud_seed=clouds,
            irradiance_csv=None if irradiance is None else str(irradiance),
        )  # fmt: skip
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    the_clock = clock_option(clock)
    check_ct(ct)

    def announce(emulator: InverterEmulator) -> None:
        bound_host, bound_port = emulator.address or (host, port)
        typer.echo(f"inverter emulator listening on {bound_host}:{bound_port} unit {unit}")
        model = emulator.model  # AC output, kW; at the CT + = consuming: producing is < 0
        start_ct_reporter(ct, ct_name or f"pv-{bound_port}", lambda: -float(model.p_kw[0]) * 1e3)

    run_service(
        run_until_stopped(
            run_inverter_emulator(
                host, port, unit=unit, clock=the_clock, spec=spec, on_ready=announce
            )
        ),
        name="inverter emulator",
    )


def inverter(
    modbus: str = typer.Option(..., "--modbus", help="Inverter address: tcp://HOST:PORT."),
    agent_id: str = typer.Option(..., "--id", help="Agent id on the bus."),
    broker: str | None = typer.Option(None, "--broker", "-b", help=AGENT_BROKER_HELP),
    unit: int = typer.Option(1, "--unit", min=1, max=247, help="Modbus unit id."),
    group: list[str] = typer.Option([], "--group", "-g", help="Group to join (repeatable)."),
    poll: float = typer.Option(1.0, "--poll", min=0.01, help="Poll and telemetry period, real s."),
    clock: str | None = typer.Option(None, "--clock", help="real or scaled:SPEED[:START]."),
    keepalive: int = typer.Option(10, "--keepalive", help="MQTT keepalive, s."),
    dc_kwp: float | None = typer.Option(
        None, "--dc-kwp", min=0.0, help="PV array rating for the Nameplate, kWp (SunSpec has none)."
    ),
    host_loss_grace: float = typer.Option(
        60.0, "--host-loss-grace", min=0.0, help="Real s with no EMS online before sheds end."
    ),
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
    """Run the inverter agent: demo interface + org.sef.der.Inverter ⇄ SunSpec Modbus TCP."""
    from sef.agents.inverter import InverterAgent

    host, port = parse_modbus_url(modbus)
    the_clock = clock_option(clock)
    secured = _agent_security(
        "sef inverter", agent_id, broker, cert, key, ca, crl, insecure, sign_telemetry
    )
    groups = agent_groups(secured, group)
    pin = _home_pin("sef inverter", agent_id, secured, home, state_dir)

    async def main() -> None:
        # pymodbus' client needs the running event loop: build the agent inside it
        agent = InverterAgent(
            agent_id, secured.broker, modbus_host=host, modbus_port=port, unit=unit,
            poll_s=poll, dc_kwp=dc_kwp, host_loss_grace_s=host_loss_grace, groups=groups,
            clock=the_clock, keepalive_s=keepalive, security=secured.security,
            sign_telemetry=sign_telemetry,
        )  # fmt: skip
        await serve_agent(agent, secured, enroll_url, f", inverter at {host}:{port}", pin)

    run_service(main(), name=f"inverter {agent_id}")

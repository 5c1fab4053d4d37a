"""``sef evse`` (the OCPP central-system agent) and ``sef emulate evse`` (a charge point).

Security (``docs/evse.md``, "Security"): the agent's listener is ``wss://`` with HTTP
Basic authentication and a per-charger password (OCPP Security Profile 2) unless told
otherwise; ``--ocpp-client-ca`` adds client certificates (Profile 3). A plain ``ws://``
listener, and a charge point connecting without TLS, need ``--insecure``.
"""

from __future__ import annotations

import os
import urllib.parse
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
from sef.cli.bus_commands import clock_option
from sef.cli.meter_commands import CT_NAME_OPTION, CT_OPTION, check_ct, start_ct_reporter

__all__ = ["emulate_evse", "evse"]

PASSWORD_ENV = "SEF_OCPP_PASSWORD"
VERSIONS = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1", "ocpp1.6": "ocpp1.6", "ocpp2.0.1": "ocpp2.0.1"}
_UNITS = ("W", "A")


def _listen(url: str) -> tuple[str, str, int]:
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("ws", "wss") or not parts.hostname or port is None:
        raise typer.BadParameter(f"expected wss://HOST:PORT, got {url!r}", param_hint="--listen")
    return parts.scheme, parts.hostname, port


def _passwords(path: Path | None, cp_id: str) -> dict[str, str] | None:
    from sef.protocols.ocpp import load_passwords

    if path is not None:
        try:
            found = load_passwords(path)
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--ocpp-passwords") from None
        if cp_id not in found:
            raise typer.BadParameter(
                f"{path} has no password for {cp_id!r}", param_hint="--ocpp-passwords"
            )
        return found
    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        return None
    if not 16 <= len(password) <= 40:
        raise typer.BadParameter(f"{PASSWORD_ENV} must be 16-40 characters")
    return {cp_id: password}


def evse(
    listen: str = typer.Option(
        ..., "--listen", help="OCPP listener: wss://HOST:PORT (ws:// only with --insecure)."
    ),
    agent_id: str = typer.Option(..., "--id", help="Agent id on the bus."),
    charge_point: str | None = typer.Option(
        None, "--charge-point", help="The charge point's OCPP identity (default: --id)."
    ),
    ocpp_passwords: Path | None = typer.Option(
        None,
        "--ocpp-passwords",
        help=f"File of ID:PASSWORD lines (mode 0600, 16-40 characters; or {PASSWORD_ENV}): "
        "HTTP Basic auth of the charge point (OCPP Security Profile 2).",
    ),
    ocpp_cert: Path | None = typer.Option(
        None, "--ocpp-cert", help="TLS server certificate of the listener (PEM, serverAuth)."
    ),
    ocpp_key: Path | None = typer.Option(None, "--ocpp-key", help="Its private key (PEM)."),
    ocpp_client_ca: Path | None = typer.Option(
        None,
        "--ocpp-client-ca",
        help="Require charge-point certificates from this CA, common name = the charge "
        "point id (OCPP Security Profile 3).",
    ),
    max_kw: float = typer.Option(11.0, "--max-kw", min=0.1, help="The charger's rating, kW."),
    unit: str = typer.Option("W", "--unit", help="Charging profiles in W or A (per phase)."),
    no_guard: bool = typer.Option(
        False, "--no-departure-guard", help="Obey commands that miss a declared departure."
    ),
    broker: str | None = typer.Option(None, "--broker", "-b", help="Broker URL."),
    group: list[str] = typer.Option([], "--group", "-g", help="Group to join (repeatable)."),
    poll: float = typer.Option(1.0, "--poll", min=0.05, help="Telemetry period, real s."),
    clock: str | None = typer.Option(None, "--clock", help="real or scaled:SPEED[:START]."),
    keepalive: int = typer.Option(10, "--keepalive", help="MQTT keepalive, s."),
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
    ca: Path | None = CA_OPTION,
    crl: Path | None = CRL_OPTION,
    insecure: bool = INSECURE_OPTION,
    enroll_url: str | None = ENROLL_URL_OPTION,
    sign_telemetry: bool = SIGN_TELEMETRY_OPTION,
) -> None:
    """Run the EV-charger agent: the OCPP 1.6J / 2.0.1 central system of one charge point."""
    from sef.agents.evse import EVSEAgent, OcppCharger
    from sef.cli.agent_commands import _agent_security, serve_agent
    from sef.protocols.ocpp import server_tls

    scheme, host, port = _listen(listen)
    cp_id = charge_point or agent_id
    if unit not in _UNITS:
        raise typer.BadParameter("W or A", param_hint="--unit")
    passwords = _passwords(ocpp_passwords, cp_id)
    if scheme == "ws" and not insecure:
        raise typer.BadParameter(
            "a plain ws:// listener lets anyone on the network drive the charger: use "
            "wss:// with --ocpp-cert/--ocpp-key (or --insecure, lab only)",
            param_hint="--listen",
        )
    context = None
    if scheme == "wss":
        if ocpp_cert is None or ocpp_key is None:
            raise typer.BadParameter(
                "wss:// needs --ocpp-cert and --ocpp-key (e.g. sef pki issue ID-ocpp --role "
                "gateway --host HOST)",
                param_hint="--listen",
            )
        context = server_tls(ocpp_cert, ocpp_key, ocpp_client_ca)
        if passwords is None and ocpp_client_ca is None:
            raise typer.BadParameter(
                f"charge points must authenticate: give --ocpp-passwords (or {PASSWORD_ENV}) "
                "or --ocpp-client-ca",
                param_hint="--listen",
            )
    if scheme == "ws" or (passwords is None and ocpp_client_ca is None):
        typer.echo(
            f"WARNING: the OCPP listener runs INSECURE ({scheme}://, "
            f"{'Basic auth' if passwords else 'no authentication'}): anyone who reaches "
            f"{host}:{port} can pose as charge point {cp_id!r}. For a lab only.",
            err=True,
        )
    secured = _agent_security(
        "sef evse", agent_id, broker, cert, key, ca, crl, insecure, sign_telemetry
    )
    groups = agent_groups(secured, group)

    async def main() -> None:
        charger = OcppCharger(
            cp_id,
            host=host,
            port=port,
            passwords=passwords,
            ssl_context=context,
            require_client_cert=ocpp_client_ca is not None,
            max_kw=max_kw,
            unit=unit,
        )
        agent = EVSEAgent(
            agent_id,
            secured.broker,
            charger,
            departure_guard=not no_guard,
            poll_s=poll,
            clock=clock_option(clock),
            groups=groups,
            keepalive_s=keepalive,
            security=secured.security,
            sign_telemetry=sign_telemetry,
        )
        await charger.listener.start()
        where = f", OCPP on {scheme}://{host}:{charger.listener.port}/{cp_id}"
        await serve_agent(agent, secured, enroll_url, where)

    run_service(main(), name=f"evse {agent_id}")


def emulate_evse(
    ocpp: str = typer.Option(..., "--ocpp", help="Central system: wss://HOST:PORT/CP_ID."),
    version: str = typer.Option("1.6", "--ocpp-version", help="1.6 (1.6J) or 2.0.1."),
    password: str | None = typer.Option(
        None, "--password", envvar=PASSWORD_ENV, help="Basic-auth password (16-40 characters)."
    ),
    ca: Path | None = typer.Option(None, "--ca", help="CA the central system's TLS cert is from."),
    cert: Path | None = typer.Option(None, "--cert", help="Client certificate (Profile 3)."),
    key: Path | None = typer.Option(None, "--key", help="Its private key."),
    insecure: bool = typer.Option(False, "--insecure", help="LAB ONLY: allow ws:// (no TLS)."),
    clock: str | None = typer.Option(None, "--clock", help="real or scaled:SPEED[:START]."),
    max_kw: float = typer.Option(11.0, "--max-kw", min=0.1, help="Charger rating, kW."),
    arrive_in: float = typer.Option(0.0, "--arrive-in", min=0.0, help="EV arrives in, clock s."),
    arrive_at: float | None = typer.Option(
        None,
        "--arrive-at",
        help="EV arrives at this clock time, Unix s (instead of --arrive-in; "
        "a past time: plugged in since then, --stay counted from it).",
    ),
    stay: float = typer.Option(10.0, "--stay", min=0.01, help="EV stays, hours."),
    need: float = typer.Option(20.0, "--need", min=0.0, help="Energy the EV wants, kWh."),
    battery: float = typer.Option(60.0, "--battery", min=1.0, help="EV battery, kWh."),
    ev_max_kw: float = typer.Option(11.0, "--ev-max-kw", min=0.1, help="EV's max rate, kW."),
    soc: float = typer.Option(0.3, "--soc", min=0.0, max=1.0, help="SOC at arrival."),
    seed: int | None = typer.Option(
        None, "--seed", help="Draw the session from the home-charging generator instead."
    ),
    meter_interval: float = typer.Option(
        60.0, "--meter-interval", min=1.0, help="Meter values every, clock s."
    ),
    ct: str | None = CT_OPTION,
    ct_name: str | None = CT_NAME_OPTION,
) -> None:
    """Emulate an EV charge point (OCPP 1.6J or 2.0.1) charging one EV session."""
    from datetime import UTC, datetime

    from sef.emulators.evse import EVSEEmulator, default_session
    from sef.models.ev_sessions import home_sessions
    from sef.protocols.ocpp import client_tls

    the_version = VERSIONS.get(version)
    if the_version is None:
        raise typer.BadParameter("1.6 or 2.0.1", param_hint="--ocpp-version")
    the_clock = clock_option(clock)
    check_ct(ct)
    scheme = urllib.parse.urlsplit(ocpp).scheme
    if scheme == "ws" and not insecure:
        raise typer.BadParameter("ws:// sends the password in clear: use wss:// (or --insecure)")
    context = None
    if scheme == "wss":
        if ca is None:
            raise typer.BadParameter(
                "wss:// needs --ca (the central system's CA)", param_hint="--ca"
            )
        context = client_tls(ca, cert, key)
    now = the_clock.now()
    if seed is not None:
        midnight = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0).timestamp()
        session = home_sessions(1, seed=seed, day0_s=midnight)
    else:
        in_s = arrive_in if arrive_at is None else arrive_at - now  # < 0: arrived before
        session = default_session(
            now, arrive_in_s=in_s, stay_h=stay, need_kwh=need, battery_kwh=battery,
            ev_max_kw=ev_max_kw, soc0=soc,
        )  # fmt: skip

    def ready(emulator: Any) -> None:
        typer.echo(f"charge point {emulator.cp_id} booted at {ocpp} ({the_version})")

    try:
        emulator = EVSEEmulator(
            ocpp,
            version=the_version,
            clock=the_clock,
            session=session,
            max_kw=max_kw,
            password=password,
            ssl_context=context,
            meter_interval_s=meter_interval,
            on_ready=ready,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--ocpp") from None

    async def main() -> None:
        # the EV's AC power at the CT, W (+ = drawn from the grid)
        start_ct_reporter(ct, ct_name or f"evse-{emulator.cp_id}", lambda: emulator.power_w)
        await run_until_stopped(emulator.run())

    run_service(main(), name="EVSE emulator")

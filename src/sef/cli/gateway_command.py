"""``sef gateway``: the home-side broker bridged to the control server (``sef.gateway``)."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer

from sef.bus import BrokerURL, BusError
from sef.cli._security_options import (
    CA_OPTION,
    CERT_OPTION,
    CRL_OPTION,
    INSECURE_OPTION,
    KEY_OPTION,
    Credentials,
    secure_connection,
)
from sef.cli._signals import EXIT_USAGE, run_service, until_stopped
from sef.security import Role


def gateway(
    uplink: str = typer.Option(
        ...,
        "--uplink",
        "-u",
        help="The control server's broker: mqtts://HOST[:PORT] (mqtt:// with --insecure).",
    ),
    listen: str | None = typer.Option(
        None,
        "--listen",
        help="Local listener HOST:PORT (PORT 0 = a free port; 0.0.0.0 for the whole home "
        "network); default 127.0.0.1:8883 (127.0.0.1:1883 with --insecure).",
    ),
    home_id: str | None = typer.Option(
        None,
        "--id",
        help="Id of this home (bridge, mDNS name); default: the home in the gateway's "
        "certificate ('home' with --insecure).",
    ),
    advertise: bool = typer.Option(
        True, "--advertise/--no-advertise", help="Advertise the local broker over mDNS."
    ),
    root: str = typer.Option("sef", "--root", help="Topic root."),
    cert: Path | None = CERT_OPTION,
    key: Path | None = KEY_OPTION,
    ca: Path | None = CA_OPTION,
    crl: Path | None = CRL_OPTION,
    insecure: bool = INSECURE_OPTION,
) -> None:
    """Run a home gateway: a local broker for the home's agents with one uplink bridge that
    forwards only the DER interfaces. Needs Mosquitto.

    Secure (the default): the bridge and the home listener speak TLS with the gateway's
    certificate (role gateway, naming its home); home agents need certificates of the
    same CA. SIGINT and SIGTERM stop it cleanly (its Mosquitto child too) with exit code 0.
    """
    from sef.gateway import run_gateway

    secured = secure_connection(
        "sef gateway",
        uplink,
        Credentials(cert, key, ca, crl, insecure),
        roles=(Role.GATEWAY,),
    )
    home = home_id
    if secured.security is not None:
        mine = secured.security.identity.home
        if mine is None:
            _usage(
                f"the gateway certificate of {secured.identity!r} names no home: issue it "
                "with `sef pki issue --role gateway --home HOME ID`"
            )
        if home is not None and home != mine:
            _usage(f"--id {home!r} is not the home in the gateway's certificate ({mine!r})")
        home = mine
    try:
        url = BrokerURL.parse(secured.broker)
    except BusError as exc:
        raise typer.BadParameter(str(exc), param_hint="--uplink") from None
    where = listen or ("127.0.0.1:1883" if secured.security is None else "127.0.0.1:8883")
    host, _, port_text = where.rpartition(":")
    if not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise typer.BadParameter(f"expected HOST:PORT, got {where!r}", param_hint="--listen")
    home = home or "home"
    run_service(
        run_gateway(
            url,
            home,
            listen_host=host or "127.0.0.1",
            listen_port=int(port_text),
            advertise=advertise,
            root=root,
            until=until_stopped,
            security=secured.security,
        ),
        name=f"gateway {home}",
    )


def _usage(message: str) -> NoReturn:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print("[red]error:[/] " + escape(message), highlight=False)
    raise typer.Exit(EXIT_USAGE)

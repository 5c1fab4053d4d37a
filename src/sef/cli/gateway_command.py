"""``sef gateway``: the home-side broker relayed to the control server (``sef.gateway``).

Its operations flags (``docs/operations.md``, "Gateway"): ``--keepalive`` (MQTT keepalive
of the uplink, s), ``--backoff BASE,CAP`` (the uplink's reconnection backoff, s),
``--queue-limit`` (messages kept while the uplink is down) and ``--log-dir`` (where the
gateway's Mosquitto writes ``mosquitto.log``).
"""

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

KEEPALIVE_RANGE_S = (2, 3600)
"""Allowed ``--keepalive`` values, s (inclusive)."""
BACKOFF_MAX_S = 3600
"""Largest ``--backoff`` cap, s."""
QUEUE_LIMIT_MIN = 100
"""Smallest ``--queue-limit``, messages."""


def parse_backoff(text: str) -> tuple[int, int]:
    """``--backoff BASE,CAP`` as ``(base, cap)`` in whole seconds, checked:
    ``0 < BASE <= CAP <= 3600``.

    Raises:
        typer.BadParameter: (usage error, exit code 2) anything else, saying why.
    """
    base_text, comma, cap_text = text.partition(",")
    try:
        base, cap = int(base_text.strip()), int(cap_text.strip())
    except ValueError:
        raise typer.BadParameter(
            f"expected BASE,CAP in whole seconds (e.g. 1,5), got {text!r}", param_hint="--backoff"
        ) from None
    if not comma or not 0 < base <= cap <= BACKOFF_MAX_S:
        raise typer.BadParameter(
            f"need 0 < BASE <= CAP <= {BACKOFF_MAX_S} s, got BASE {base}, CAP {cap}",
            param_hint="--backoff",
        )
    return base, cap


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
        help="Id of this home (uplink relay, mDNS name); default: the home in the gateway's "
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
    keepalive: int = typer.Option(
        10,
        "--keepalive",
        min=KEEPALIVE_RANGE_S[0],
        max=KEEPALIVE_RANGE_S[1],
        help="MQTT keepalive of the uplink, s: a silently cut uplink is noticed 1 to 2 x "
        "this after its last traffic (about 3.5 s at 2, 19.5 s at 10).",
    ),
    backoff: str = typer.Option(
        "1,5",
        "--backoff",
        metavar="BASE,CAP",
        help="Reconnection backoff of the uplink, whole s: first retry after BASE, growing "
        f"to at most CAP (0 < BASE <= CAP <= {BACKOFF_MAX_S}).",
    ),
    queue_limit: int = typer.Option(
        500_000,
        "--queue-limit",
        min=QUEUE_LIMIT_MIN,
        help="Messages kept for the uplink while it is down; once that many are kept, new "
        "ones are dropped (and counted, with a warning).",
    ),
    log_dir: Path | None = typer.Option(
        None,
        "--log-dir",
        file_okay=False,
        help="Directory for the gateway Mosquitto's log, mosquitto.log (created if "
        "missing); default: the gateway's temporary directory. Its path is printed at start.",
    ),
) -> None:
    """Run a home gateway: a local broker for the home's agents with one uplink to the
    control server's broker that forwards only the DER interfaces. Needs Mosquitto.

    Secure (the default): the uplink and the home listener speak TLS with the gateway's
    certificate (role gateway, naming its home); home agents need certificates of the
    same CA. SIGINT and SIGTERM stop it cleanly (its Mosquitto child too) with exit code 0;
    killed with SIGKILL, its Mosquitto is stopped by the broker's guard.
    """
    from sef.gateway import run_gateway

    restart_s = parse_backoff(backoff)
    if log_dir is not None:
        log_dir = log_dir.expanduser().absolute()
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise typer.BadParameter(
                f"cannot create {log_dir}: {exc.strerror}", param_hint="--log-dir"
            ) from None
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
            keepalive_s=keepalive,
            restart_s=restart_s,
            queue_limit=queue_limit,
            log_dir=log_dir,
        ),
        name=f"gateway {home}",
    )


def _usage(message: str) -> NoReturn:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print("[red]error:[/] " + escape(message), highlight=False)
    raise typer.Exit(EXIT_USAGE)

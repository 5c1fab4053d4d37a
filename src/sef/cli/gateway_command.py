"""``sef gateway``: the home-side broker bridged to the control server (``sef.gateway``)."""

from __future__ import annotations

import typer

from sef.bus import BrokerURL, BusError
from sef.cli._signals import run_service, until_stopped


def gateway(
    uplink: str = typer.Option(
        ..., "--uplink", "-u", help="The control server's broker: mqtt://HOST[:PORT]."
    ),
    listen: str = typer.Option(
        "127.0.0.1:1883",
        "--listen",
        help="Local listener HOST:PORT (PORT 0 = a free port; 0.0.0.0 for the whole home network).",
    ),
    home_id: str = typer.Option(
        "home", "--id", help="Id of this home (bridge client id, mDNS name)."
    ),
    advertise: bool = typer.Option(
        True, "--advertise/--no-advertise", help="Advertise the local broker over mDNS."
    ),
    root: str = typer.Option("sef", "--root", help="Topic root."),
) -> None:
    """Run a home gateway: a local broker for the home's agents with one uplink bridge that
    forwards only the DER interfaces. Needs Mosquitto.

    SIGINT and SIGTERM stop it cleanly (its Mosquitto child too) with exit code 0.
    """
    from sef.gateway import run_gateway

    try:
        url = BrokerURL.parse(uplink)
    except BusError as exc:
        raise typer.BadParameter(str(exc), param_hint="--uplink") from None
    host, _, port_text = listen.rpartition(":")
    if not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise typer.BadParameter(f"expected HOST:PORT, got {listen!r}", param_hint="--listen")
    run_service(
        run_gateway(
            url,
            home_id,
            listen_host=host or "127.0.0.1",
            listen_port=int(port_text),
            advertise=advertise,
            root=root,
            until=until_stopped,
        ),
        name=f"gateway {home_id}",
    )

"""``sef pki``: the deployment CA, certificates, enrollment and the broker's TLS + ACL.

Operator: ``init`` makes the CA; ``issue`` a certificate (and key) for an identity;
``revoke`` one (re-signs the CRL); ``crl`` re-signs the CRL (daily: it is valid for 7
days and an expired one makes Mosquitto refuse everyone); ``list`` what was issued;
``pending`` / ``approve`` / ``reject`` enrollment requests; ``token`` a one-time claim
token; ``broker-config`` writes a Mosquitto mutual-TLS + ACL configuration.

The CA directory is ``--dir``, else ``$SEF_PKI_DIR``, else ``./pki``. A refused action
(bad name, no CA, unknown request, ...) prints one line and exits with code 2.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sef.security import (
    LEAF_DAYS,
    BrokerFiles,
    CertificateAuthority,
    Role,
    SecurityError,
    identity_of,
    reload_broker,
    write_broker_acl,
    write_broker_config,
)

__all__ = ["app"]

app = typer.Typer(
    help="The deployment PKI: CA, certificates, revocation, enrollment, broker TLS + ACL.",
    no_args_is_help=True,
)
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

EXIT_REFUSED = 2

DirOption = Annotated[
    Path,
    typer.Option(
        "--dir",
        envvar="SEF_PKI_DIR",
        help="The CA directory (default: $SEF_PKI_DIR, else ./pki).",
    ),
]
GroupOption = Annotated[
    list[str] | None,
    typer.Option("--group", help="A group of the agent (repeat for several)."),
]
HomeOption = Annotated[
    str | None, typer.Option("--home", help="The home an agent sits in or a gateway serves.")
]
DaysOption = Annotated[int, typer.Option("--days", help="Certificate lifetime, days.")]
BrokerDirOption = Annotated[
    Path | None,
    typer.Option(
        "--broker-dir",
        help="A broker directory of `sef pki broker-config`: rewrite its ACL and CRL and "
        "send SIGHUP to its running Mosquitto.",
    ),
]


@app.callback()
def _main() -> None:
    """The deployment PKI: CA, certificates, revocation, enrollment, broker TLS + ACL."""


@contextmanager
def _refusals() -> Iterator[None]:
    """Print a refused action as one line and exit 2."""
    try:
        yield
    except (SecurityError, OSError, ValueError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_REFUSED) from None


def _open(directory: Path) -> CertificateAuthority:
    return CertificateAuthority.open(directory)


def _check_broker_dir(broker_dir: Path | None) -> None:
    """Refuse a ``--broker-dir`` that is not one (before anything is changed)."""
    if broker_dir is not None and not BrokerFiles(broker_dir).conf.is_file():
        raise SecurityError(f"{broker_dir} is not a broker directory (no mosquitto.conf)")


def _update_broker(ca: CertificateAuthority, broker_dir: Path | None) -> None:
    """Rewrite ``broker_dir``'s ACL and CRL and reload its Mosquitto (when given)."""
    if broker_dir is None:
        return
    _check_broker_dir(broker_dir)
    acl = write_broker_acl(ca, broker_dir)
    pid = reload_broker(broker_dir)
    if pid is None:
        console.print(
            f"broker ACL and CRL rewritten ({escape(str(acl))}); no running Mosquitto "
            "found for it: they take effect at its next start"
        )
    else:
        console.print(
            f"broker ACL and CRL rewritten; Mosquitto (pid {pid}) sent SIGHUP to reload them"
        )


def _warn_crl_expiry(ca: CertificateAuthority) -> None:
    console.print(
        f"The CRL is valid until {_crl_expiry(ca)}: re-sign it before then with "
        "`sef pki crl --broker-dir ...` (Mosquitto refuses every client once it expired)."
    )


@app.command()
def init(
    directory: DirOption = Path("pki"),
    name: Annotated[str, typer.Option("--name", help="The CA's name.")] = "SEF deployment CA",
) -> None:
    """Create a deployment CA (ECDSA P-256; the key file is mode 0600)."""
    with _refusals():
        ca = CertificateAuthority.init(directory, name)
    console.print(f"CA [bold]{escape(name)}[/] created in {escape(str(directory))}")
    console.print(f"  certificate  {escape(str(ca.ca_path))}  (give it to every component)")
    console.print(f"  key          {escape(str(directory / 'ca.key'))}  (keep it offline)")
    console.print(f"  CRL          {escape(str(ca.crl_path))}")


@app.command()
def issue(
    identity: Annotated[str, typer.Argument(help="The identity (the bus id).")],
    role: Annotated[Role, typer.Option("--role", help="What the identity may do.")],
    directory: DirOption = Path("pki"),
    group: GroupOption = None,
    home: HomeOption = None,
    days: DaysOption = LEAF_DAYS,
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="DNS name or IP address for TLS (brokers, servers)."),
    ] = None,
    broker_dir: BrokerDirOption = None,
) -> None:
    """Issue a certificate and a new key for an identity."""
    with _refusals():
        _check_broker_dir(broker_dir)
        ca = _open(directory)
        cert, key_path = ca.issue(
            identity,
            role,
            groups=tuple(group or ()),
            home=home,
            days=days,
            hosts=tuple(host or ()),
        )
        issued = identity_of(cert)
        console.print(
            f"issued [bold]{escape(issued.id)}[/] ({issued.role.value}), valid until "
            f"{issued.not_after:%Y-%m-%d %H:%M} UTC"
        )
        console.print(f"  certificate  {escape(str(ca.cert_path(identity)))}")
        console.print(f"  key          {escape(str(key_path))}  (mode 0600)")
        console.print(f"  CA           {escape(str(ca.ca_path))}")
        if issued.role is Role.GATEWAY and issued.home is None:
            err.print(
                "[yellow]warning:[/] a gateway without --home gets no rights at the broker "
                "(its ACL lists the agents of its home)"
            )
        _update_broker(ca, broker_dir)


@app.command()
def revoke(
    identity: Annotated[str, typer.Argument(help="The identity whose certificates to revoke.")],
    directory: DirOption = Path("pki"),
    broker_dir: BrokerDirOption = None,
) -> None:
    """Revoke every certificate of an identity and re-sign the CRL."""
    with _refusals():
        _check_broker_dir(broker_dir)
        ca = _open(directory)
        serials = ca.revoke(identity)
        if not serials:
            raise SecurityError(f"{identity!r} has no unrevoked certificate")
        console.print(
            f"revoked {len(serials)} certificate(s) of [bold]{escape(identity)}[/]; "
            f"CRL re-signed: {escape(str(ca.crl_path))}"
        )
        console.print(
            "Components read the CRL at start: give them the new one and reload them "
            "(the broker: --broker-dir, or copy it and send Mosquitto SIGHUP)."
        )
        _update_broker(ca, broker_dir)
        _warn_crl_expiry(ca)
        if broker_dir is not None:
            console.print(
                "A client still connected with the revoked certificate stays connected "
                "but has no rights left (no publish, no delivery); restart the broker to "
                "disconnect it."
            )


def _crl_expiry(ca: CertificateAuthority) -> str:
    crl = x509.load_pem_x509_crl(ca.crl_path.read_bytes())
    next_update = crl.next_update_utc
    return f"{next_update:%Y-%m-%d %H:%M} UTC" if next_update is not None else "never"


@app.command()
def crl(
    directory: DirOption = Path("pki"),
    broker_dir: BrokerDirOption = None,
) -> None:
    """Re-sign the revocation list (run it daily: it is valid for 7 days, and Mosquitto
    refuses every client once its CRL has expired)."""
    with _refusals():
        _check_broker_dir(broker_dir)
        ca = _open(directory)
        ca.refresh_crl()
        console.print(f"CRL re-signed: {escape(str(ca.crl_path))}, valid until {_crl_expiry(ca)}")
        _update_broker(ca, broker_dir)


def _state(not_after: str, revoked: bool) -> str:
    if revoked:
        return "[red]revoked[/]"
    if dt.datetime.fromisoformat(not_after) < dt.datetime.now(dt.UTC):
        return "[yellow]expired[/]"
    return "[green]valid[/]"


@app.command("list")
def list_certificates(directory: DirOption = Path("pki")) -> None:
    """List every certificate the CA issued."""
    with _refusals():
        ca = _open(directory)
        records = ca.records()
    table = Table(title=f"certificates of {escape(str(directory))}")
    for column in ("id", "role", "groups", "home", "expires (UTC)", "state", "serial"):
        table.add_column(column)
    for record in records:
        table.add_row(
            escape(record.id),
            record.role.value,
            escape(",".join(record.groups)),
            escape(record.home or ""),
            record.not_after[:16].replace("T", " "),
            _state(record.not_after, record.revoked),
            f"{record.serial:x}"[:16],
        )
    console.print(table)
    if not records:
        console.print("no certificates issued yet")


@app.command()
def pending(directory: DirOption = Path("pki")) -> None:
    """List enrollment requests waiting for approval."""
    with _refusals():
        requests = _open(directory).pending()
    if not requests:
        console.print("no pending enrollment requests")
        return
    table = Table(title="pending enrollment requests")
    for column in ("id", "role", "groups", "home", "received (UTC)", "key SHA-256"):
        table.add_column(column)
    for request in requests:
        table.add_row(
            escape(request.id),
            request.role.value,
            escape(",".join(request.groups)),
            escape(request.home or ""),
            request.received[:19].replace("T", " "),
            request.key_fingerprint[:16],
        )
    console.print(table)


@app.command()
def approve(
    identity: Annotated[str, typer.Argument(help="The pending request's identity.")],
    directory: DirOption = Path("pki"),
    group: GroupOption = None,
    home: HomeOption = None,
    days: DaysOption = LEAF_DAYS,
    broker_dir: BrokerDirOption = None,
) -> None:
    """Approve an enrollment request (--group and --home replace what it asked for)."""
    with _refusals():
        _check_broker_dir(broker_dir)
        ca = _open(directory)
        cert = ca.approve(identity, groups=tuple(group) if group else None, home=home, days=days)
        issued = identity_of(cert)
        console.print(
            f"approved [bold]{escape(issued.id)}[/] (groups {escape(','.join(issued.groups))}"
            f"{', home ' + escape(issued.home) if issued.home else ''}): "
            f"{escape(str(ca.cert_path(identity)))}"
        )
        _update_broker(ca, broker_dir)


@app.command()
def reject(
    identity: Annotated[str, typer.Argument(help="The pending request's identity.")],
    directory: DirOption = Path("pki"),
) -> None:
    """Drop an enrollment request."""
    with _refusals():
        if not _open(directory).reject(identity):
            raise SecurityError(f"no pending enrollment request for {identity!r}")
    console.print(f"rejected the enrollment request of [bold]{escape(identity)}[/]")


@app.command()
def token(
    identity: Annotated[str, typer.Argument(help="The agent the token is for.")],
    directory: DirOption = Path("pki"),
    group: GroupOption = None,
    home: HomeOption = None,
    days: Annotated[int, typer.Option("--days", help="Days the token stays valid.")] = 7,
) -> None:
    """Create a one-time claim token: the first CSR of IDENTITY with it is approved."""
    with _refusals():
        if not 1 <= days <= 365:
            raise SecurityError(f"token lifetime {days} days is outside 1..365")
        value = _open(directory).create_token(
            identity, groups=tuple(group or ()), home=home, days=days
        )
    err.print(f"one-time claim token for {escape(identity)} (valid {days} days; shown only once):")
    print(value)


@app.command("broker-config")
def broker_config(
    out: Annotated[Path, typer.Option("--out", help="The broker directory to write.")],
    directory: DirOption = Path("pki"),
    port: Annotated[int, typer.Option("--port", help="TLS listener port.")] = 8883,
    host: Annotated[
        list[str] | None,
        typer.Option(
            "--host",
            help="Name or address in the broker certificate (default: localhost, 127.0.0.1, "
            "::1 and this machine's host name).",
        ),
    ] = None,
    root: Annotated[str, typer.Option("--root", help="SEF topic root.")] = "sef",
    bind: Annotated[
        str | None, typer.Option("--bind", help="Address to listen on (default: all).")
    ] = None,
    broker_id: Annotated[
        str, typer.Option("--id", help="Identity of the broker certificate.")
    ] = "broker",
    user: Annotated[
        str | None,
        typer.Option("--user", help="Account Mosquitto runs as (default: mosquitto)."),
    ] = None,
    days: Annotated[
        int, typer.Option("--days", help="Lifetime of a newly issued broker certificate, days.")
    ] = LEAF_DAYS,
) -> None:
    """Write a Mosquitto mutual-TLS + per-identity ACL configuration into --out.

    Run it again to renew the broker certificate (renewed when it expires within 30 days
    or lacks a --host); a Mosquitto running from --out is sent SIGHUP to reload."""
    with _refusals():
        ca = _open(directory)
        files = write_broker_config(
            ca,
            out,
            port=port,
            hosts=tuple(host or ()),
            root=root,
            bind=bind,
            broker_id=broker_id,
            log_file=out / "mosquitto.log",
            user=user,
            days=days,
        )
        pid = reload_broker(out)
    console.print(f"broker configuration written to {escape(str(out))}:")
    for path in (files.conf, files.acl, files.ca, files.crl, files.cert, files.key):
        console.print(f"  {escape(str(path))}")
    if pid is not None:
        console.print(f"the running Mosquitto (pid {pid}) was sent SIGHUP to reload it")
    else:
        console.print(f"run it: mosquitto -c {escape(str(files.conf))}   (TLS on port {port})")
    console.print(
        "after issue/approve/revoke pass --broker-dir to rewrite the ACL and CRL and reload it"
    )
    _warn_crl_expiry(ca)

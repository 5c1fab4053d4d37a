"""``--cert/--key/--ca/--crl/--insecure``: the security options of every command that
connects to the broker, and the one rule that turns them into credentials.

The rule (``docs/operations.md``, "Secure by default"):

* Without ``--insecure`` a command needs ``--cert``, ``--key`` and ``--ca`` (or
  ``SEF_CERT``, ``SEF_KEY``, ``SEF_CA``); they are loaded and checked with
  :meth:`sef.security.Security.load` (``--crl``/``SEF_CRL`` adds the revocation list).
  The broker URL must be ``mqtts://`` (default ``mqtts://127.0.0.1:8883``; an agent may
  also discover it over mDNS, TLS only); an ``mqtt://`` URL is refused. The certificate's
  role must fit the command (``ems`` for ``sef ems``, ``agent`` for agents, ``gateway``
  for ``sef gateway``, ``operator`` or ``ems`` for read-only tools) and an agent's or the
  EMS's ``--id`` must be the certificate's identity. The broker must prove, in the TLS
  handshake, a certificate of the deployment CA with the role ``broker`` (or, for an
  agent, the ``gateway`` of its home).
* With ``--insecure`` nothing is checked: plain-text MQTT with no identity (default
  ``mqtt://127.0.0.1:1883``), and a WARNING at start names what is unprotected.

Every refusal is one line on stderr and exit code 2 (:data:`EXIT_USAGE`): nothing started.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from sef.bus import BrokerURL, BusClient, BusError, is_url_list, parse_url_list
from sef.cli._signals import EXIT_USAGE
from sef.discovery import MdnsResolver, is_mdns_url, verified_broker_tls
from sef.security import Role, Security, SecurityError, start_renewal

__all__ = [
    "CA_OPTION",
    "CERT_OPTION",
    "CRL_OPTION",
    "DEFAULT_INSECURE_BROKER",
    "DEFAULT_SECURE_BROKER",
    "ENROLL_URL_OPTION",
    "INSECURE_OPTION",
    "KEY_OPTION",
    "Credentials",
    "Secured",
    "agent_groups",
    "secure_connection",
]

DEFAULT_SECURE_BROKER = "mqtts://127.0.0.1:8883"
"""The broker of a command given no ``--broker`` (an EMS, a tool)."""
DEFAULT_INSECURE_BROKER = "mqtt://127.0.0.1:1883"
"""The same with ``--insecure``."""

CERT_OPTION: Any = typer.Option(
    None,
    "--cert",
    envvar="SEF_CERT",
    help="This component's certificate (PEM), from `sef pki issue` or `sef enroll`.",
)
KEY_OPTION: Any = typer.Option(
    None, "--key", envvar="SEF_KEY", help="Its private key (PEM, mode 0600)."
)
CA_OPTION: Any = typer.Option(
    None, "--ca", envvar="SEF_CA", help="The deployment CA certificate (ca.crt)."
)
CRL_OPTION: Any = typer.Option(
    None, "--crl", envvar="SEF_CRL", help="The CA's revocation list (crl.pem), if kept here."
)
INSECURE_OPTION: Any = typer.Option(
    False,
    "--insecure",
    envvar="SEF_INSECURE",
    help="LAB ONLY: plain-text MQTT, no certificates, unsigned commands.",
)


SIGN_TELEMETRY_OPTION: Any = typer.Option(
    False,
    "--sign-telemetry",
    envvar="SEF_SIGN_TELEMETRY",
    help="Seal telemetry in signed windows (docs/protocol.md §11) for an EMS that does not "
    "trust the broker (needs credentials).",
)


def _check_enroll_url(value: str | None) -> str | None:
    parts = urllib.parse.urlsplit(value or "")
    if value is not None and (parts.scheme != "https" or not parts.hostname):
        raise typer.BadParameter(f"expected https://HOST:PORT, got {value!r}")
    return value


ENROLL_URL_OPTION: Any = typer.Option(
    None,
    "--enroll-url",
    envvar="SEF_ENROLL_URL",
    callback=_check_enroll_url,
    help="Enrollment server (https://HOST:PORT of `sef enroll-server`): renew the certificate "
    "there at two thirds of its lifetime (written over --cert/--key, no reconnection) and "
    "fetch its revocation list hourly.",
)

T = TypeVar("T")

_err = Console(stderr=True)


@dataclass(frozen=True)
class Credentials:
    """The security options as given on the command line (or by their variables)."""

    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    crl: Path | None = None
    insecure: bool = False


@dataclass(frozen=True)
class Secured:
    """What :func:`secure_connection` decided.

    Attributes:
        broker: the broker URL to use (``mdns://...`` for discovery).
        security: the credentials, ``None`` with ``--insecure``.
        peer_roles: roles the broker's certificate may have.
        home: for an agent: the home in its certificate (a gateway must serve it).
    """

    broker: str
    security: Security | None
    peer_roles: tuple[Role, ...] = (Role.BROKER,)
    home: str | None = None

    @property
    def identity(self) -> str | None:
        """The certificate's identity, or ``None`` when insecure."""
        return None if self.security is None else self.security.identity.id

    def harden(self, bus: BusClient) -> None:
        """Make ``bus`` (an agent's or the EMS's client, built with this ``security``)
        accept only a broker that proves a certificate of our CA with a fitting role;
        for mDNS, skip advertised brokers that cannot (see :class:`MdnsResolver`)."""
        if self.security is None:
            return
        discovered = isinstance(bus.resolver, MdnsResolver)
        bus.tls = verified_broker_tls(
            self.security,
            roles=self.peer_roles,
            home=self.home,
            check_hostname=not discovered,
        )
        if isinstance(bus.resolver, MdnsResolver):
            bus.resolver.tls = bus.tls

    async def with_renewal(
        self, main: Coroutine[Any, Any, T], bus: BusClient, enroll_url: str | None
    ) -> T:
        """Run ``main`` with certificate renewal at ``enroll_url`` (``--enroll-url``; none
        when not given or insecure): each renewal rebuilds ``bus``'s TLS context
        (:meth:`harden`), so the next connection presents the new certificate."""
        if enroll_url is None or self.security is None:
            return await main
        task = start_renewal(self.security, enroll_url, on_renewed=lambda _: self.harden(bus))
        try:
            return await main
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _fail(message: str) -> NoReturn:
    _err.print("[red]error:[/] " + escape(message), highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_USAGE)


def _warn_insecure(command: str, broker: str, creds: Credentials) -> None:
    ignored = [
        name
        for name, value in (("--cert", creds.cert), ("--key", creds.key), ("--ca", creds.ca))
        if value is not None
    ]
    _err.print(
        "[bold red]WARNING:[/] "
        + escape(
            f"{command} runs INSECURE (--insecure): plain-text MQTT to {broker}, no client "
            "certificate, the broker is not authenticated, commands are not signed: anyone "
            "who reaches the broker can read everything, pose as any agent or EMS and "
            "command every device. For a lab only."
            + (f" Ignored: {', '.join(ignored)}." if ignored else "")
        ),
        highlight=False,
        soft_wrap=True,
    )


def _hint(roles: Sequence[Role]) -> str:
    role = roles[0].value
    return (
        f"issue one with `sef pki issue --role {role} ID` (or `sef enroll` on the device), "
        "or run with --insecure (lab only)"
    )


def secure_connection(
    command: str,
    broker: str | None,
    creds: Credentials,
    *,
    roles: Sequence[Role],
    identity: str | None = None,
    discover: bool = False,
) -> Secured:
    """Apply the rule (module docstring) for ``command`` (e.g. ``"sef bis"``).

    Args:
        command: the command's name, for messages.
        broker: ``--broker`` as given (``None``: the default); a comma-separated list
            names several brokers (failover, :mod:`sef.bus._url_list`).
        creds: the security options.
        roles: roles the certificate may have (the first is named in hints).
        identity: the ``--id`` the command will use on the bus, if it has one; must be
            the certificate's identity.
        discover: an agent: no ``--broker`` means mDNS discovery (``mdns://``).

    Raises:
        typer.Exit: code 2 after a one-line error when something does not fit.
    """
    default = DEFAULT_INSECURE_BROKER if creds.insecure else DEFAULT_SECURE_BROKER
    url = broker or ("mdns://" if discover else default)
    parsed: BrokerURL | None = None
    if not is_mdns_url(url):
        try:  # a comma list is several brokers (failover), all of one scheme
            parsed = parse_url_list(url)[0] if is_url_list(url) else BrokerURL.parse(url)
        except BusError as exc:
            _fail(f"--broker: {exc}")
    if creds.insecure:
        if parsed is not None and parsed.tls:
            _fail(
                f"--insecure connects in plain text, but {url} is a TLS broker: give "
                "an mqtt:// URL, or --cert/--key/--ca instead of --insecure"
            )
        _warn_insecure(command, url, creds)
        return Secured(url, None)
    if parsed is not None and not parsed.tls:
        _fail(
            f"{command}: {url} is plain-text MQTT; a secure component connects only over "
            f"TLS: use mqtts://{parsed.host}:8883 (or --insecure, lab only)"
        )
    missing = [
        f"{flag} (or {var})"
        for flag, var, value in (
            ("--cert", "SEF_CERT", creds.cert),
            ("--key", "SEF_KEY", creds.key),
            ("--ca", "SEF_CA", creds.ca),
        )
        if value is None
    ]
    if missing:
        _fail(f"{command} needs {', '.join(missing)}: {_hint(roles)}")
    assert creds.cert is not None and creds.key is not None and creds.ca is not None
    try:
        security = Security.load(creds.cert, creds.key, creds.ca, creds.crl)
    except (SecurityError, OSError, ValueError) as exc:
        _fail(f"{command}: credentials refused: {exc}")
    me = security.identity
    if me.role not in roles:
        allowed = " or ".join(role.value for role in roles)
        _fail(
            f"{command}: the certificate of {me.id!r} has role {me.role.value}; this command "
            f"needs a certificate of role {allowed}"
        )
    if identity is not None and identity != me.id:
        _fail(
            f"{command}: --id {identity!r} is not the certificate's identity {me.id!r} "
            "(the identity is fixed when the certificate is issued)"
        )
    peer_roles = (Role.BROKER, Role.GATEWAY) if me.role is Role.AGENT else (Role.BROKER,)
    return Secured(url, security, peer_roles, me.home if me.role is Role.AGENT else None)


def agent_groups(secured: Secured, groups: Sequence[str]) -> list[str]:
    """An agent's groups: ``--group`` as given, or (secure, none given) the certificate's
    groups. A group the certificate lacks is refused (exit 2): the broker would not
    deliver its calls and the EMS's signed calls to it would be refused."""
    if secured.security is None:
        return list(groups)
    mine = secured.security.identity.groups
    if not groups:
        return list(mine)
    extra = [group for group in groups if group not in mine]
    if extra:
        _fail(
            f"--group {', '.join(extra)}: not in the certificate of "
            f"{secured.security.identity.id!r} (its groups: {', '.join(mine) or 'none'}); "
            "the groups are set when the certificate is issued"
        )
    return list(groups)

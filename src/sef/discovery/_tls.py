"""Secure discovery: accept only a broker that proves the deployment CA's identity.

:func:`verified_broker_tls` is a TLS client context whose handshake also checks the
peer's certificate role (and, for a gateway, its home); :func:`verified_candidate` tries
an advertised broker with it before discovery returns it (``docs/discovery.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import TYPE_CHECKING

from cryptography import x509

from sef.security import Role, Security, SecurityError, TrustStore

if TYPE_CHECKING:
    from sef.discovery import DiscoveredBroker

__all__ = ["verified_broker_tls", "verified_candidate"]

log = logging.getLogger("sef.discovery")

PROBE_TIMEOUT_S = 2.0
"""Longest TLS handshake with one advertised address, s."""


def _check_peer(
    der: bytes | None, trust: TrustStore, roles: tuple[Role, ...], home: str | None
) -> None:
    """Refuse (:class:`ssl.SSLCertVerificationError`) a broker whose certificate is not
    from the deployment CA, is revoked or expired, has a role outside ``roles``, or is
    the gateway of another home than ``home``."""
    try:
        if der is None:
            raise SecurityError("the broker presented no certificate")
        identity = trust.verify(x509.load_der_x509_certificate(der))
        if identity.role not in roles:
            raise SecurityError(
                f"the broker's certificate is of {identity.id!r} with role "
                f"{identity.role.value}, not {' or '.join(r.value for r in roles)}"
            )
        if identity.role is Role.GATEWAY and (home is None or identity.home != home):
            raise SecurityError(
                f"gateway {identity.id!r} serves home {identity.home!r}, not this "
                f"agent's home {home!r}"
            )
    except (SecurityError, ValueError) as exc:
        raise ssl.SSLCertVerificationError(f"broker refused: {exc}") from None


def verified_broker_tls(
    security: Security,
    *,
    roles: tuple[Role, ...] = (Role.BROKER,),
    home: str | None = None,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A TLS client context that presents ``security``'s certificate and accepts only a
    broker that proves, in the handshake, a certificate of the deployment CA (not revoked)
    whose role is in ``roles``; a ``gateway`` must serve ``home`` (the agent's home).

    ``check_hostname``: also match the address against the certificate's names (off for
    brokers found over mDNS, whose address is whatever the network gave them: the role
    and home check above is what identifies them).
    """
    context = security.client_tls(check_hostname=check_hostname)
    trust = security.trust

    class PeerCheckedSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            super().do_handshake()
            _check_peer(self.getpeercert(binary_form=True), trust, roles, home)

    context.sslobject_class = PeerCheckedSSLObject
    return context


async def _tls_probe(address: str, port: int, tls: ssl.SSLContext, timeout_s: float) -> str | None:
    """``None`` when a TLS handshake with ``tls`` succeeds at ``address:port``, else why not."""
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(address, port, ssl=tls, ssl_handshake_timeout=timeout_s),
            timeout_s,
        )
    except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
        return str(exc) or type(exc).__name__
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


async def verified_candidate(
    found: DiscoveredBroker, tls: ssl.SSLContext
) -> DiscoveredBroker | None:
    """``found`` at its first address that proves our CA's broker identity over TLS, or
    ``None`` (logged) when it advertises plain text or none of its addresses does."""
    if not found.tls:
        log.warning(
            "skipping broker %r at %s: it advertises plain-text MQTT and this component "
            "connects only over TLS",
            found.name,
            found.url,
        )
        return None
    reasons = []
    for address in found.addresses:
        reason = await _tls_probe(address, found.url.port, tls, PROBE_TIMEOUT_S)
        if reason is None:
            return found.at(address)
        reasons.append(f"{address}: {reason}")
    log.warning(
        "skipping broker %r on port %d: it does not prove the deployment CA's broker identity (%s)",
        found.name,
        found.url.port,
        "; ".join(reasons),
    )
    return None

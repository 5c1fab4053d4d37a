"""Certificate renewal before expiry, and CRL refresh, while the component runs.

:class:`CertificateRenewer` sleeps until ``renew_at_fraction`` (two thirds) of the
certificate's lifetime, makes a new key and CSR, asks the enrollment server's
``POST /renew`` over mutual TLS with the current certificate, writes the new certificate
and key over the files the component was started with, and calls
:meth:`Security.replace`. Open connections are not touched (no outage): the next TLS
connection and every later signature use the new credentials; ``on_renewed`` lets the
owner refresh contexts it built before (e.g. ``agent.bus.tls = security.client_tls()``).
It also fetches the CRL from ``GET /crl`` every ``crl_every_s`` s.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import random
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sef.security._enroll_client import (
    EnrollmentError,
    _base,
    enrollment_request,
    issued_certificate,
    server_tls,
)
from sef.security._identity import SecurityError
from sef.security._keys import key_pem, make_csr, new_private_key, write_private, write_public
from sef.security._trust import Security, load_private_key

__all__ = ["CertificateRenewer", "start_renewal"]

log = logging.getLogger("sef.security.renew")

RETRY_MIN_S = 5.0
RETRY_MAX_S = 600.0
CRL_EVERY_S = 3600.0
MIN_INTERVAL_S = 60.0
"""Shortest time between two renewals, s (a short lifetime at a small fraction is due
again at once: certificates start 5 minutes before they are issued)."""
MAX_SLEEP_S = 3600.0
"""Longest single sleep, s: wall-clock targets are re-checked at least this often (a
suspended machine or a clock step does not make the renewer miss its time)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CertificateRenewer:
    """Renews ``security``'s certificate at ``url`` (``https://HOST:PORT`` of
    ``sef enroll-server``) and keeps its CRL fresh. Run :meth:`run` as a task
    (:func:`start_renewal`).

    Args:
        security: the component's credentials (``cert_path``/``key_path`` are rewritten
            on renewal when set).
        url: the enrollment server.
        renew_at_fraction: renew when this fraction of the lifetime has passed (0 < f < 1);
            at most once every :data:`MIN_INTERVAL_S`.
        crl_every_s: how often to fetch the CRL, s (0 = never).
        on_renewed: called after each renewal (after ``security.replace``).
        clock: the current UTC time (tests).
    """

    def __init__(
        self,
        security: Security,
        url: str,
        *,
        renew_at_fraction: float = 2 / 3,
        crl_every_s: float = CRL_EVERY_S,
        on_renewed: Callable[[Security], None] | None = None,
        clock: Callable[[], dt.datetime] = _now,
        retry_min_s: float = RETRY_MIN_S,
        retry_max_s: float = RETRY_MAX_S,
    ) -> None:
        if not 0.0 < renew_at_fraction < 1.0:
            raise ValueError(f"renew_at_fraction must be in (0, 1), got {renew_at_fraction}")
        self.security = security
        self.url = _base(url)
        self.renew_at_fraction = renew_at_fraction
        self.crl_every_s = crl_every_s
        self.on_renewed = on_renewed
        self.clock = clock
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.renewals = 0
        self.crl_fetches = 0

    def renew_at(self) -> dt.datetime:
        """When the current certificate is due for renewal (UTC)."""
        identity = self.security.identity
        lifetime = identity.not_after - identity.not_before
        return identity.not_before + lifetime * self.renew_at_fraction

    @property
    def _next_key_path(self) -> Path | None:
        path = self.security.key_path
        return path.with_name(path.name + ".next") if path is not None else None

    def _next_key(self) -> ec.EllipticCurvePrivateKey:
        """The key to renew with: kept in ``{key_path}.next`` (0600) until the renewal
        succeeded, so a retry after a lost answer or a restart asks for the same key."""
        path = self._next_key_path
        if path is not None and path.exists():
            try:
                return load_private_key(path)
            except (SecurityError, ValueError) as exc:
                log.warning("ignoring unusable %s: %s", path, exc)
        key = new_private_key()
        if path is not None:
            write_private(path, key_pem(key))
        return key

    def _renew_blocking(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        security = self.security
        key = self._next_key()
        body = {"csr": make_csr(security.identity.id, key).decode()}
        _, raw = enrollment_request(
            f"{self.url}/renew", security.client_tls(), method="POST", body=body
        )
        try:
            answer = json.loads(raw)
        except ValueError:
            raise EnrollmentError("renewal answer is not JSON") from None
        if not isinstance(answer, dict):
            raise EnrollmentError("renewal answer is not a JSON object")
        cert = issued_certificate(answer, security.trust, security.identity.id, key)
        if security.key_path is not None:
            write_private(security.key_path, key_pem(key))
        if security.cert_path is not None:
            write_public(security.cert_path, cert.public_bytes(serialization.Encoding.PEM))
        if (path := self._next_key_path) is not None:
            path.unlink(missing_ok=True)
        return cert, key

    async def renew_once(self) -> x509.Certificate:
        """Renew now; returns the new certificate (already in use).

        Raises:
            EnrollmentError: refused by the server or not reachable.
            SecurityError: the answer is not a certificate for our identity and key.
        """
        old = self.security.identity
        cert, key = await asyncio.to_thread(self._renew_blocking)
        self.security.replace(cert, key)
        self.renewals += 1
        new = self.security.identity
        log.info(
            "renewed the certificate of %r: serial %s -> %s, valid until %s",
            new.id,
            old.serial,
            new.serial,
            new.not_after.isoformat(timespec="seconds"),
        )
        if self.on_renewed is not None:
            self.on_renewed(self.security)
        return cert

    async def refresh_crl(self) -> bool:
        """Fetch the CRL and use it if it is newer; returns whether it was fetched and
        checked (written to ``security.crl_path`` when set)."""
        try:
            # the CRL is public and signed: no client certificate (one that is revoked or
            # expired would fail the handshake)
            ca_pem = self.security.trust.ca.public_bytes(serialization.Encoding.PEM)
            _, raw = await asyncio.to_thread(
                enrollment_request, f"{self.url}/crl", server_tls(ca_pem)
            )
            self.security.trust.set_crl(raw)
        except SecurityError as exc:
            log.warning("CRL refresh from %s failed: %s", self.url, exc)
            return False
        if self.security.crl_path is not None and self.security.trust.crl is not None:
            pem = self.security.trust.crl.public_bytes(serialization.Encoding.PEM)
            if not self.security.crl_path.exists() or self.security.crl_path.read_bytes() != pem:
                write_public(self.security.crl_path, pem)
        self.crl_fetches += 1
        return True

    async def run(self) -> None:
        """Renew at :meth:`renew_at` (retrying with backoff on failure) and refresh the
        CRL, until cancelled."""
        delay = self.retry_min_s
        loop = asyncio.get_running_loop()
        next_crl = loop.time() if self.crl_every_s > 0 else float("inf")
        expired_logged = False
        earliest = loop.time()
        while True:
            now = self.clock()
            identity = self.security.identity
            if now >= identity.not_after:
                if not expired_logged:
                    log.error(
                        "certificate of %r expired at %s: renewal is no longer possible; "
                        "re-enroll it (`sef enroll`)",
                        identity.id,
                        identity.not_after.isoformat(timespec="seconds"),
                    )
                    expired_logged = True
                due_in = MAX_SLEEP_S
            elif now >= self.renew_at() and loop.time() >= earliest:
                try:
                    await self.renew_once()
                    delay = self.retry_min_s
                    earliest = loop.time() + MIN_INTERVAL_S
                    continue
                except SecurityError as exc:
                    log.warning(
                        "renewal of %r failed (%s); retrying in %.0f s (expires %s)",
                        identity.id,
                        exc,
                        delay,
                        identity.not_after.isoformat(timespec="seconds"),
                    )
                    due_in = delay
                    delay = min(self.retry_max_s, delay * 2) * random.uniform(0.9, 1.1)
            else:
                due_in = max((self.renew_at() - now).total_seconds(), earliest - loop.time())
            if loop.time() >= next_crl:
                await self.refresh_crl()
                next_crl = loop.time() + self.crl_every_s
            sleep_s = min(due_in, next_crl - loop.time(), MAX_SLEEP_S)
            await asyncio.sleep(max(0.0, sleep_s))


def start_renewal(
    security: Security,
    url: str,
    *,
    renew_at_fraction: float = 2 / 3,
    on_renewed: Callable[[Security], None] | None = None,
) -> asyncio.Task[None]:
    """Start a :class:`CertificateRenewer` for ``security`` at ``url`` as a task of the
    running loop (cancel it to stop)."""
    renewer = CertificateRenewer(
        security, url, renew_at_fraction=renew_at_fraction, on_renewed=on_renewed
    )
    return asyncio.get_running_loop().create_task(
        renewer.run(), name=f"renew:{security.identity.id}"
    )

"""The agent's side of enrollment (standard library only: agents install no web stack).

:func:`enroll` makes the key (it never leaves the agent's directory), sends a CSR to the
enrollment server (``sef enroll-server``), waits until the operator approves it (or a
claim token approves it at once) and writes ``cert.pem``, ``key.pem`` and ``ca.crt``.
The server's TLS certificate must come from the deployment CA given: there is no trust
on first use.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sef.security._identity import SecurityError
from sef.security._keys import (
    check_identity_name,
    key_fingerprint,
    key_pem,
    make_csr,
    new_private_key,
    write_private,
    write_public,
)
from sef.security._trust import TrustStore, load_certificate, load_private_key

__all__ = [
    "EnrolledFiles",
    "EnrollmentError",
    "EnrollmentPending",
    "enroll",
    "enrollment_request",
    "fetch_crl",
    "server_tls",
]

log = logging.getLogger("sef.security.enroll")

MAX_ANSWER_BYTES = 256 * 1024
"""Largest answer read from the enrollment server, bytes."""
TIMEOUT_S = 15.0
"""Timeout of one HTTP request, s."""


class EnrollmentError(SecurityError):
    """The enrollment server refused a request (``status``: its HTTP status, 0 when it
    could not be reached), or its answer is unusable."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class EnrollmentPending(EnrollmentError):
    """Still waiting for the operator's approval when the wait ended."""


@dataclass(frozen=True)
class EnrolledFiles:
    """Where :func:`enroll` wrote the agent's credentials."""

    cert: Path
    key: Path
    ca: Path

    def options(self) -> str:
        """The options to start an agent with these credentials."""
        return f"--cert {self.cert} --key {self.key} --ca {self.ca}"


def server_tls(ca: Path | bytes) -> ssl.SSLContext:
    """A TLS client context that trusts only the deployment CA (file or PEM bytes) and
    checks the server's host name."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    cadata = ca if isinstance(ca, bytes) else ca.read_bytes()
    context.load_verify_locations(cadata=load_certificate(cadata).public_bytes(
        serialization.Encoding.PEM).decode())  # fmt: skip
    return context


def _base(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise EnrollmentError(f"enrollment URL must be https://HOST:PORT, got {url!r}")
    return url.rstrip("/")


def enrollment_request(
    url: str,
    context: ssl.SSLContext,
    *,
    method: str = "GET",
    body: dict[str, Any] | None = None,
    timeout_s: float = TIMEOUT_S,
) -> tuple[int, bytes]:
    """One HTTPS request; returns (status, answer body) for 2xx.

    Raises:
        EnrollmentError: a 4xx/5xx answer (its JSON ``error`` as the message), or the
            server could not be reached or its TLS certificate is not from our CA.
    """
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(request, timeout=timeout_s) as answer:
            return int(answer.status), answer.read(MAX_ANSWER_BYTES)
    except urllib.error.HTTPError as exc:
        text = exc.read(MAX_ANSWER_BYTES)
        try:
            message = str(json.loads(text)["error"])
        except (ValueError, KeyError, TypeError):
            message = text.decode(errors="replace")[:300] or str(exc.reason)
        raise EnrollmentError(f"{method} {url}: {exc.code} {message}", exc.code) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ssl.SSLError) and "CERTIFICATE_VERIFY_FAILED" not in str(reason):
            # the server ended the handshake on us: with a client certificate that is the
            # server refusing it (revoked, expired, another CA) — some servers send an
            # alert naming it, others just close the connection
            raise EnrollmentError(
                f"{method} {url}: the server refused the TLS handshake (our certificate "
                f"revoked, expired or not from its CA?): {reason}"
            ) from None
        raise EnrollmentError(f"{method} {url}: cannot reach the server: {reason}") from None
    except (ssl.SSLError, ConnectionResetError) as exc:
        raise EnrollmentError(
            f"{method} {url}: the server refused the TLS handshake (our certificate "
            f"revoked, expired or not from its CA?): {exc}"
        ) from None
    except OSError as exc:
        raise EnrollmentError(f"{method} {url}: {exc or type(exc).__name__}") from None


def _json(status: int, raw: bytes, url: str) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except ValueError:
        raise EnrollmentError(f"{url}: answer {status} is not JSON", status) from None
    if not isinstance(obj, dict):
        raise EnrollmentError(f"{url}: answer {status} is not a JSON object", status)
    return obj


def issued_certificate(
    answer: dict[str, Any], trust: TrustStore, identity: str, key: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    """The certificate in an ``issued`` answer, checked: from our CA, valid, for
    ``identity`` and for ``key``."""
    pem = answer.get("certificate")
    if not isinstance(pem, str):
        raise EnrollmentError("answer has no certificate")
    cert = load_certificate(pem.encode())
    got = trust.verify(cert)
    if got.id != identity:
        raise EnrollmentError(f"server issued a certificate for {got.id!r}, not {identity!r}")
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or (
        public.public_numbers() != key.public_key().public_numbers()
    ):
        raise EnrollmentError("server issued a certificate for another key")
    return cert


def fetch_crl(url: str, context: ssl.SSLContext) -> bytes:
    """The CRL that ``GET {url}/crl`` serves (PEM; check it with ``TrustStore.set_crl``)."""
    _, raw = enrollment_request(f"{_base(url)}/crl", context)
    return raw


def _load_or_make_key(path: Path) -> ec.EllipticCurvePrivateKey:
    if path.exists():
        return load_private_key(path)
    key = new_private_key()
    write_private(path, key_pem(key))
    return key


def enroll(
    url: str,
    ca: Path,
    identity: str,
    out: Path,
    *,
    token: str | None = None,
    groups: tuple[str, ...] = (),
    home: str | None = None,
    wait_s: float = 3600.0,
    poll_s: float = 5.0,
    on_pending: Callable[[str], None] | None = None,
) -> EnrolledFiles:
    """Enroll ``identity`` at ``url`` and write its credentials into ``out``.

    The key is ``out/key.pem`` (mode 0600), made here unless it exists (so a second run
    with the same ``out`` resumes a pending request); only the CSR is sent. Without a
    claim ``token`` this waits up to ``wait_s`` s for the operator, polling every
    ``poll_s`` s and calling ``on_pending(key_fingerprint)`` once queued.

    Raises:
        EnrollmentPending: not approved within ``wait_s`` s (run again to keep waiting).
        EnrollmentError: refused (the server's reason), or the answer is unusable.
    """
    check_identity_name("identity", identity)
    base = _base(url)
    trust = TrustStore(load_certificate(ca.read_bytes()))
    context = server_tls(ca)
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    files = EnrolledFiles(out / "cert.pem", out / "key.pem", out / "ca.crt")
    key = _load_or_make_key(files.key)
    fingerprint = key_fingerprint(key.public_key())
    body: dict[str, Any] = {"csr": make_csr(identity, key).decode()}
    if token is not None:
        body["token"] = token
    if groups:
        body["groups"] = list(groups)
    if home is not None:
        body["home"] = home
    status, raw = enrollment_request(f"{base}/enroll", context, method="POST", body=body)
    answer = _json(status, raw, f"{base}/enroll")
    if status == 202:
        log.info("enrollment of %r is pending (key %s)", identity, fingerprint)
        if on_pending is not None:
            on_pending(fingerprint)
        deadline = time.monotonic() + wait_s
        poll_url = f"{base}/enroll/{identity}?key={fingerprint}"
        while status == 202:
            if time.monotonic() >= deadline:
                raise EnrollmentPending(
                    f"enrollment of {identity!r} still waits for approval after {wait_s:.0f} s "
                    f"(key {fingerprint}); run again with the same output directory to wait on",
                    202,
                )
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
            status, raw = enrollment_request(poll_url, context)
            answer = _json(status, raw, poll_url)
    if status != 200 or answer.get("status") != "issued":
        raise EnrollmentError(f"unexpected answer {status} from {base}", status)
    cert = issued_certificate(answer, trust, identity, key)
    write_public(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    write_public(files.ca, trust.ca.public_bytes(serialization.Encoding.PEM))
    log.info("enrolled %r: certificate serial %s", identity, cert.serial_number)
    return files

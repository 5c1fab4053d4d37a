"""Trust decisions: is a certificate from our deployment CA, valid now and not revoked?

And a component's own credentials (:class:`Security`): its certificate, private key and
trust store, from which it builds TLS contexts and signs envelopes.
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sef.security._identity import Identity, Role, SecurityError, identity_of

__all__ = ["Security", "TrustStore", "load_certificate", "load_private_key"]

log = logging.getLogger("sef.security")

MAX_CERT_BYTES = 64 * 1024
"""Largest certificate, key or CRL file or field read (bytes); a certificate is ~0.6 KB."""

CRL_CHECK_S = 5.0
"""How often (at most, s) a trust store looks whether its CRL file changed."""

CLOCK_SKEW = timedelta(seconds=300)
"""Tolerance for certificate validity windows (not for envelope expiry)."""


def load_certificate(data: bytes) -> x509.Certificate:
    """Parse a PEM or DER certificate; :class:`SecurityError` when it is not one."""
    if len(data) > MAX_CERT_BYTES:
        raise SecurityError(f"certificate of {len(data)} bytes is over {MAX_CERT_BYTES}")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except (ValueError, x509.InvalidVersion) as exc:  # InvalidVersion is no ValueError
        raise SecurityError(f"not a certificate: {exc}") from None


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Read an unencrypted PEM ECDSA private key; refuse a file others can read."""
    mode = path.stat().st_mode & 0o077
    if mode:
        raise SecurityError(
            f"private key {path} is readable by group or others (mode {oct(mode)}): chmod 600 it"
        )
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SecurityError(f"{path} is not an ECDSA private key")
    return key


def _load_crl(data: bytes) -> x509.CertificateRevocationList:
    try:
        return x509.load_pem_x509_crl(data)
    except ValueError as exc:
        raise SecurityError(f"not a certificate revocation list: {exc}") from None


class TrustStore:
    """The deployment CA and its revocation list: verifies certificates of peers.

    Verified certificates are cached by fingerprint (the signature check runs once per
    certificate); the validity window and the CRL are checked on every call. Replace the
    CRL with :meth:`set_crl` (e.g. when a newer one is published). A store made by
    :meth:`from_files` also watches its CRL file: when the file changes (checked at most
    every :data:`CRL_CHECK_S` seconds, on use) the newer CRL is taken, so a component
    honours ``sef pki revoke`` once the new ``crl.pem`` is on its disk, without a restart.
    """

    def __init__(
        self, ca: x509.Certificate, crl: x509.CertificateRevocationList | None = None
    ) -> None:
        self.ca = ca
        self._revoked: frozenset[int] = frozenset()
        self.crl: x509.CertificateRevocationList | None = None
        if crl is not None:
            self.set_crl(crl)
        # keyed by the certificate (cryptography hashes and compares its DER in Rust,
        # cheaper than re-encoding it on each message)
        self._verified: dict[x509.Certificate, Identity] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_files(cls, ca: Path, crl: Path | None = None) -> TrustStore:
        store = cls(load_certificate(ca.read_bytes()))
        if crl is not None:
            store._crl_file = crl
            store.reload_crl_file()
        return store

    _crl_file: Path | None = None
    _crl_stamp: tuple[int, int] | None = None
    _crl_checked: float = 0.0

    def reload_crl_file(self) -> bool:
        """Read the watched CRL file again if it changed; whether a CRL was taken. A file
        that is unreadable or not signed by the CA is logged and the current CRL kept."""
        path = self._crl_file
        self._crl_checked = time.monotonic()
        if path is None:
            return False
        try:
            stat = path.stat()
        except OSError:
            return False
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._crl_stamp:
            return False
        self._crl_stamp = stamp
        try:
            self.set_crl(path.read_bytes())
        except (OSError, SecurityError) as exc:
            if self.crl is None and isinstance(exc, SecurityError):
                raise
            log.error("revocation list %s not taken, keeping the current one: %s", path, exc)
            return False
        return True

    def _maybe_reload_crl(self) -> None:
        if self._crl_file is not None and time.monotonic() - self._crl_checked >= CRL_CHECK_S:
            self.reload_crl_file()

    def set_crl(self, crl: x509.CertificateRevocationList | bytes) -> None:
        """Use ``crl`` (signed by the CA, else :class:`SecurityError`) if it is newer."""
        if isinstance(crl, bytes):
            crl = _load_crl(crl)
        public_key = self.ca.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not crl.is_signature_valid(
            public_key
        ):
            raise SecurityError("revocation list is not signed by the deployment CA")
        if self.crl is not None and crl.last_update_utc < self.crl.last_update_utc:
            return
        self.crl = crl
        self._revoked = frozenset(entry.serial_number for entry in crl)

    def is_revoked(self, serial: int) -> bool:
        return serial in self._revoked

    def verify(
        self, cert: x509.Certificate, *, role: Role | None = None, at: datetime | None = None
    ) -> Identity:
        """The identity of ``cert`` if the CA issued it, it is valid at ``at`` (now) and not
        revoked, and (if given) it has ``role``; else :class:`SecurityError` saying why."""
        identity = self._verified.get(cert)
        if identity is None:
            if cert.issuer != self.ca.subject:
                raise SecurityError("certificate is not issued by the deployment CA")
            public_key = self.ca.public_key()
            if not isinstance(public_key, ec.EllipticCurvePublicKey):
                raise SecurityError("deployment CA key is not ECDSA")
            algorithm = cert.signature_hash_algorithm
            if not isinstance(algorithm, hashes.SHA256 | hashes.SHA384 | hashes.SHA512):
                raise SecurityError("certificate signature hash is not SHA-2")
            try:
                public_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algorithm))
            except InvalidSignature:
                raise SecurityError("certificate signature does not verify with the CA") from None
            identity = identity_of(cert)
            with self._lock:
                if len(self._verified) > 100_000:
                    self._verified.clear()
                self._verified[cert] = identity
        self._maybe_reload_crl()
        now = at or datetime.now(UTC)
        if now + CLOCK_SKEW < identity.not_before:
            raise SecurityError(f"certificate of {identity.id!r} is not valid yet")
        if now - CLOCK_SKEW > identity.not_after:
            raise SecurityError(f"certificate of {identity.id!r} expired at {identity.not_after}")
        if identity.serial in self._revoked:
            raise SecurityError(f"certificate of {identity.id!r} is revoked")
        if role is not None and identity.role != role:
            raise SecurityError(
                f"{identity.id!r} has role {identity.role.value}, {role.value} required"
            )
        return identity


@dataclass
class Security:
    """A component's credentials: its certificate and key, and the trust store.

    Build with :meth:`load`. :meth:`replace` swaps in a renewed certificate and key
    (the next TLS connection and every later signature use them).

    Attributes:
        cert: this component's certificate.
        key: its private key (ECDSA P-256); never leaves the process.
        trust: the deployment CA and CRL, for peers' certificates.
        cert_path, key_path, ca_path, crl_path: where they were read from.
    """

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    trust: TrustStore
    cert_path: Path | None = None
    key_path: Path | None = None
    ca_path: Path | None = None
    crl_path: Path | None = None
    identity: Identity = field(init=False)

    def __post_init__(self) -> None:
        self.identity = self.trust.verify(self.cert)
        self._check_pair()

    def _check_pair(self) -> None:
        cert_key = self.cert.public_key()
        if not isinstance(cert_key, ec.EllipticCurvePublicKey) or cert_key.public_numbers() != (
            self.key.public_key().public_numbers()
        ):
            raise SecurityError("private key does not belong to the certificate")

    @classmethod
    def load(cls, cert: Path, key: Path, ca: Path, crl: Path | None = None) -> Security:
        """Read and check credentials: the certificate must be from ``ca``, valid, not
        revoked, and match ``key`` (mode 0600)."""
        for path in (cert, key, ca):
            if not path.is_file():
                raise SecurityError(f"{path} does not exist")
        trust = TrustStore.from_files(ca, crl)
        return cls(
            load_certificate(cert.read_bytes()),
            load_private_key(key),
            trust,
            cert_path=cert,
            key_path=key,
            ca_path=ca,
            crl_path=crl,
        )

    def replace(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        """Use a renewed certificate and key from now on (same identity and role)."""
        identity = self.trust.verify(cert)
        if (identity.id, identity.role) != (self.identity.id, self.identity.role):
            raise SecurityError(
                f"renewed certificate is for {identity.id!r}/{identity.role.value}, "
                f"not {self.identity.id!r}/{self.identity.role.value}"
            )
        old = (self.cert, self.key)
        self.cert, self.key = cert, key
        try:
            self._check_pair()
        except SecurityError:
            self.cert, self.key = old
            raise
        self.identity = identity

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def _context(self, purpose: ssl.Purpose) -> ssl.SSLContext:
        context = ssl.SSLContext(
            ssl.PROTOCOL_TLS_CLIENT
            if purpose is ssl.Purpose.SERVER_AUTH
            else ssl.PROTOCOL_TLS_SERVER
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(
            cadata=self.trust.ca.public_bytes(serialization.Encoding.PEM).decode()
        )
        # ssl loads a key pair (and a CRL) only from files: a private temporary place
        self._load_files(context, crl=purpose is ssl.Purpose.CLIENT_AUTH)
        return context

    def _load_files(self, context: ssl.SSLContext, *, crl: bool) -> None:
        with tempfile.TemporaryDirectory(prefix="sef-tls-") as tmp:
            if crl and self.trust.crl is not None:
                crl_file = Path(tmp) / "crl.pem"
                crl_file.write_bytes(self.trust.crl.public_bytes(serialization.Encoding.PEM))
                context.load_verify_locations(cafile=crl_file)
                context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
            cert_file = Path(tmp) / "cert.pem"
            key_file = Path(tmp) / "key.pem"
            cert_file.write_bytes(self.cert_pem)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(
                    self.key.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    )
                )
            context.load_cert_chain(cert_file, key_file)

    def client_tls(self, *, check_hostname: bool = True) -> ssl.SSLContext:
        """A TLS client context: presents this certificate, trusts only the deployment CA
        (and checks the server's host name against its certificate unless told not to)."""
        context = self._context(ssl.Purpose.SERVER_AUTH)
        context.check_hostname = check_hostname
        return context

    def server_tls(self, *, require_client_cert: bool = True) -> ssl.SSLContext:
        """A TLS server context: this certificate; clients must present one from the CA
        (not revoked) unless ``require_client_cert`` is false."""
        context = self._context(ssl.Purpose.CLIENT_AUTH)
        if not require_client_cert:
            context.verify_mode = ssl.CERT_OPTIONAL
        return context

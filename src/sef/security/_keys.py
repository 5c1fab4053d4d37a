"""Keys, certificate signing requests and the files that hold them (private ones 0600)."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sef.security._identity import SecurityError
from sef.security._trust import MAX_CERT_BYTES

__all__ = [
    "cert_pem",
    "check_identity_name",
    "csr_identity",
    "key_fingerprint",
    "key_pem",
    "load_csr",
    "make_csr",
    "new_private_key",
    "write_private",
    "write_public",
]

_NAME_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


def check_identity_name(kind: str, value: str) -> str:
    """The bus's id rule (1–64 of ``A-Z a-z 0-9 _ . -``, not leading ``.`` or ``-``)."""
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= 64
        or not set(value) <= _NAME_CHARS
        or value[0] in ".-"
    ):
        raise SecurityError(
            f"invalid {kind} {value!r}: use 1-64 characters from A-Z a-z 0-9 _ . - "
            "(not starting with . or -)"
        )
    return value


def new_private_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 key."""
    return ec.generate_private_key(ec.SECP256R1())


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` created with mode 0600 (replacing it atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_fingerprint(key: Any) -> str:
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """Parse a PEM CSR whose self-signature verifies; :class:`SecurityError` otherwise."""
    if len(data) > MAX_CERT_BYTES:
        raise SecurityError(f"CSR of {len(data)} bytes is over {MAX_CERT_BYTES}")
    try:
        csr = x509.load_pem_x509_csr(data)
    except (ValueError, x509.InvalidVersion) as exc:  # InvalidVersion is no ValueError
        raise SecurityError(f"not a PEM certificate signing request: {exc}") from None
    try:
        signature_ok = csr.is_signature_valid
        key = csr.public_key()
    except ValueError as exc:  # e.g. "Invalid key" for a point not on the curve
        raise SecurityError(f"CSR carries an unusable key: {exc}") from None
    if not signature_ok:
        raise SecurityError("CSR signature does not verify (proof of key possession failed)")
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise SecurityError("CSR key is not ECDSA P-256")
    return csr


def csr_identity(csr: x509.CertificateSigningRequest) -> str:
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str):
        raise SecurityError("CSR has no single common name (the identity)")
    return check_identity_name("identity", names[0].value)


def make_csr(identity: str, key: ec.EllipticCurvePrivateKey) -> bytes:
    """A PEM CSR for ``identity`` signed by ``key`` (what an enrolling agent sends)."""
    check_identity_name("identity", identity)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)

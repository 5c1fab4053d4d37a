"""The JWS compact serialization of SEF envelopes (RFC 7515, ES256 only).

What a signature covers and how it travels: the protected header
``{"alg": "ES256", "typ": <kind>, "x5c": [<signer's certificate>]}`` (encoded once per
signer, parsed once per exact header received), the ES256 signature over
``header.payload`` (joserfc's algorithm: raw ``r||s`` <-> DER, SHA-256), and the
refusals. The claims inside the payload are :mod:`sef.security._envelope`'s.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jws
from joserfc.jwk import ECKey
from joserfc.util import json_b64encode, urlsafe_b64decode, urlsafe_b64encode

from sef.security._identity import SecurityError
from sef.security._trust import Security, load_certificate

if TYPE_CHECKING:
    from sef.security._envelope import VerifiedEnvelope

__all__ = [
    "ALGORITHM",
    "MAX_ENVELOPE_BYTES",
    "EnvelopeKind",
    "EnvelopeRefused",
    "json_object",
    "payload_if_signed",
    "sign_compact",
    "signer_of",
]

ALGORITHM = "ES256"
MAX_ENVELOPE_BYTES = 256 * 1024
"""Longest JWS accepted, characters (as the bus's payload limit)."""

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_REGISTRY = jws.JWSRegistry(algorithms=[ALGORITHM])
# joserfc >= 1.1 bounds the header at 512 bytes; one with a certificate is ~0.9 KB
_REGISTRY.max_header_length = 16 * 1024
_REGISTRY.max_payload_length = MAX_ENVELOPE_BYTES
# joserfc's ES256 (raw r||s signature <-> DER, SHA-256): the envelope's header is built and
# checked here, so the JWS framing is done here too and each header is encoded or parsed
# once per signer instead of on every message (see _signing_key and signer_of)
_ES256 = _REGISTRY.get_alg(ALGORITHM)
_KEYS_CACHED = 1024


class EnvelopeKind(StrEnum):
    """What an envelope carries: its JWS ``typ``."""

    CALL = "sef-call+jws"
    REPLY = "sef-reply+jws"


class EnvelopeRefused(SecurityError):
    """An envelope failed a check.

    Attributes:
        reason: a short stable key (``malformed``, ``untrusted``, ``signature``, ``role``,
            ``issuer``, ``audience``, ``topic``, ``expired``, ``not_yet_valid``,
            ``lifetime``, ``replayed``, ``replay_cache_full``), for counting and logs.
        authentic: the signature verified under a valid certificate of the deployment CA
            (the refusal may be answered).
        envelope: the verified contents when ``authentic`` (else ``None``).
    """

    def __init__(self, reason: str, message: str, envelope: VerifiedEnvelope | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.envelope = envelope
        self.authentic = envelope is not None


@dataclass(frozen=True, slots=True)
class _Signer:
    """What signing needs of one :class:`Security`, derived once (see :func:`_signing_key`)."""

    private_key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    key: ECKey
    headers: dict[EnvelopeKind, bytes]
    """The base64url protected header of each kind (its ``x5c`` encoded once)."""


_signing_keys: dict[int, _Signer] = {}


def _signing_key(security: Security) -> _Signer:
    """The joserfc key and encoded headers of ``security`` (cached per key and
    certificate: a renewal via :meth:`Security.replace` builds them again)."""
    cached = _signing_keys.get(id(security))
    if cached is not None and cached.private_key is security.key and cached.cert is security.cert:
        return cached
    pem = security.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key = ECKey.import_key(pem)
    x5c = base64.b64encode(security.cert.public_bytes(serialization.Encoding.DER)).decode()
    headers = {
        kind: json_b64encode({"alg": ALGORITHM, "typ": kind.value, "x5c": [x5c]})
        for kind in EnvelopeKind
    }
    signer = _Signer(security.key, security.cert, key, headers)
    if len(_signing_keys) >= _KEYS_CACHED:
        _signing_keys.clear()
    _signing_keys[id(security)] = signer
    return signer


def sign_compact(security: Security, kind: EnvelopeKind, payload: str) -> str:
    """``payload`` signed by ``security`` as a JWS compact serialization of ``kind``."""
    signer = _signing_key(security)
    # RFC 7515 compact serialization, as jws.serialize_compact builds it
    signing_input = signer.headers[kind] + b"." + urlsafe_b64encode(payload.encode())
    signature = urlsafe_b64encode(_ES256.sign(signing_input, signer.key))
    return (signing_input + b"." + signature).decode("ascii")


_verify_keys: dict[str, tuple[x509.Certificate, ECKey]] = {}
"""Parsed certificate and public key per ``x5c`` string (exactly as received)."""
_headers: dict[tuple[EnvelopeKind, str], tuple[x509.Certificate, ECKey]] = {}
"""The signer's certificate and key per accepted protected header (kind, exact segment)."""


def _b64url_json(segment: str, what: str) -> dict[str, Any]:
    if not _B64URL.fullmatch(segment):
        raise EnvelopeRefused("malformed", f"JWS {what} is not base64url")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except ValueError:  # binascii.Error: e.g. a length of 4n+1
        raise EnvelopeRefused("malformed", f"JWS {what} is not base64url") from None
    return json_object(raw, what)


def json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError, JSONDecodeError too
        raise EnvelopeRefused("malformed", f"JWS {what} is not JSON: {str(exc)[:80]}") from None
    if not isinstance(obj, dict):
        raise EnvelopeRefused("malformed", f"JWS {what} is not a JSON object")
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def _certificate(x5c: str) -> tuple[x509.Certificate, ECKey]:
    """The certificate in ``x5c`` and its public key as a joserfc key (cached)."""
    cached = _verify_keys.get(x5c)
    if cached is not None:
        return cached
    try:
        der = base64.b64decode(x5c, validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeRefused("malformed", "x5c is not base64") from None
    try:
        cert = load_certificate(der)
        public_key = cert.public_key()
    except (SecurityError, ValueError) as exc:
        raise EnvelopeRefused("malformed", f"x5c is not a certificate: {exc}") from None
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != (
        "secp256r1"
    ):
        raise EnvelopeRefused("untrusted", "signer's key is not ECDSA P-256")
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key = ECKey.import_key(pem)
    if len(_verify_keys) >= _KEYS_CACHED:
        _verify_keys.clear()
    _verify_keys[x5c] = (cert, key)
    return cert, key


def signer_of(segment: str, kind: EnvelopeKind) -> tuple[x509.Certificate, ECKey]:
    """The signer's certificate and key from a protected header, which must be exactly
    ``{"alg": "ES256", "typ": kind, "x5c": [one certificate]}`` (cached per exact
    segment: a signer's header is the same on every message)."""
    cached = _headers.get((kind, segment))
    if cached is not None:
        return cached
    header = _b64url_json(segment, "header")
    if set(header) != {"alg", "typ", "x5c"}:
        raise EnvelopeRefused(
            "malformed", f"JWS header must have exactly alg, typ, x5c (has {sorted(header)})"
        )
    if header["alg"] != ALGORITHM:
        raise EnvelopeRefused("malformed", f"algorithm {str(header['alg'])[:20]!r} not ES256")
    if header["typ"] != kind.value:
        raise EnvelopeRefused("malformed", f"typ {str(header['typ'])[:40]!r}, not {kind.value}")
    x5c = header["x5c"]
    if not isinstance(x5c, list) or len(x5c) != 1 or not isinstance(x5c[0], str):
        raise EnvelopeRefused("malformed", "x5c must hold exactly the signer's certificate")
    found = _certificate(x5c[0])
    if len(_headers) >= _KEYS_CACHED:
        _headers.clear()
    _headers[(kind, segment)] = found
    return found


def payload_if_signed(parts: list[str], key: ECKey) -> bytes | None:
    """The decoded payload if the ES256 signature over ``header.payload`` verifies under
    ``key`` (one ECDSA verification), else ``None``."""
    if len(parts[0]) > _REGISTRY.max_header_length:
        return None
    try:
        payload = urlsafe_b64decode(parts[1].encode())
        signature = urlsafe_b64decode(parts[2].encode())
    except ValueError:  # binascii.Error, UnicodeEncodeError
        return None
    signing_input = f"{parts[0]}.{parts[1]}".encode()
    return payload if _ES256.verify(signing_input, signature, key) else None

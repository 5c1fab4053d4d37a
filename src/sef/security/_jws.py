"""The JWS compact serialization of SEF envelopes (RFC 7515, ES256 only).

What a signature covers and how it travels: the protected header
``{"alg": "ES256", "typ": <kind>, "x5c": [<signer's certificate>]}`` (encoded once per
signer, parsed once per exact header received), the ES256 signature over
``header.payload`` (RFC 7518 §3.4: ECDSA P-256 with SHA-256 from ``cryptography``, the
signature as the 64 bytes ``r || s``), and the refusals. The claims inside the payload are
:mod:`sef.security._envelope`'s.

The signature operations call ``cryptography`` directly rather than through joserfc's
algorithm objects: a command is signed and verified once per call on the path to the
device, usually by a process that was idle (cold caches), where every layer of Python
shows in the latency (``bench/security.py``). The tests check the tokens against joserfc
(``jws.deserialize_compact`` and ``jws.serialize_compact``) as the independent
implementation.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

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

MAX_HEADER_CHARS = 16 * 1024
"""Longest protected header accepted, characters (one with a certificate is ~1.2 KB)."""

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_ES256 = ec.ECDSA(hashes.SHA256())
_COORDINATE_BYTES = 32
"""Bytes of ``r`` and of ``s`` in an ES256 signature (RFC 7518 §3.4)."""
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
    headers: dict[EnvelopeKind, bytes]
    """The base64url protected header of each kind (its ``x5c`` encoded once)."""


_signing_keys: dict[int, _Signer] = {}


def _signing_key(security: Security) -> _Signer:
    """The encoded headers of ``security`` (cached per key and certificate: a renewal via
    :meth:`Security.replace` builds them again)."""
    cached = _signing_keys.get(id(security))
    if cached is not None and cached.private_key is security.key and cached.cert is security.cert:
        return cached
    key = security.key
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise SecurityError("envelopes are signed with ES256: the key must be ECDSA P-256")
    x5c = base64.b64encode(security.cert.public_bytes(serialization.Encoding.DER)).decode()
    headers = {
        kind: _b64url(
            json.dumps(
                {"alg": ALGORITHM, "typ": kind.value, "x5c": [x5c]}, separators=(",", ":")
            ).encode()
        )
        for kind in EnvelopeKind
    }
    signer = _Signer(key, security.cert, headers)
    if len(_signing_keys) >= _KEYS_CACHED:
        _signing_keys.clear()
    _signing_keys[id(security)] = signer
    return signer


def sign_compact(security: Security, kind: EnvelopeKind, payload: str) -> str:
    """``payload`` signed by ``security`` as a JWS compact serialization of ``kind``."""
    signer = _signing_key(security)
    # RFC 7515 compact serialization, as jws.serialize_compact builds it
    signing_input = signer.headers[kind] + b"." + _b64url(payload.encode())
    r, s = decode_dss_signature(signer.private_key.sign(signing_input, _ES256))
    signature = r.to_bytes(_COORDINATE_BYTES, "big") + s.to_bytes(_COORDINATE_BYTES, "big")
    return (signing_input + b"." + _b64url(signature)).decode("ascii")


def _b64url(data: bytes) -> bytes:
    """Base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _b64url_decode(segment: str) -> bytes:
    """The bytes of an unpadded base64url ``segment`` (``binascii.Error`` if it is not)."""
    if not _B64URL.fullmatch(segment):
        raise binascii.Error("not base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


_verify_keys: dict[str, tuple[x509.Certificate, ec.EllipticCurvePublicKey]] = {}
"""Parsed certificate and public key per ``x5c`` string (exactly as received)."""
_headers: dict[tuple[EnvelopeKind, str], tuple[x509.Certificate, ec.EllipticCurvePublicKey]] = {}
"""The signer's certificate and key per accepted protected header (kind, exact segment)."""


def _b64url_json(segment: str, what: str) -> dict[str, Any]:
    try:
        raw = _b64url_decode(segment)
    except ValueError:  # binascii.Error: not the alphabet, or e.g. a length of 4n+1
        raise EnvelopeRefused("malformed", f"JWS {what} is not base64url") from None
    return json_object(raw, what)


def json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        obj = _DECODER.decode(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError, JSONDecodeError too
        raise EnvelopeRefused("malformed", f"JWS {what} is not JSON: {str(exc)[:80]}") from None
    if not isinstance(obj, dict):
        raise EnvelopeRefused("malformed", f"JWS {what} is not a JSON object")
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # e.g. 1e400: valid JSON syntax, no finite double
        raise ValueError(f"number {text[:40]} is out of range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)
"""JSON without NaN or Infinity (one decoder: ``json.loads`` with options builds one per
call)."""


def _certificate(x5c: str) -> tuple[x509.Certificate, ec.EllipticCurvePublicKey]:
    """The certificate in ``x5c`` and its public key (cached)."""
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
    if len(_verify_keys) >= _KEYS_CACHED:
        _verify_keys.clear()
    _verify_keys[x5c] = (cert, public_key)
    return cert, public_key


def signer_of(
    segment: str, kind: EnvelopeKind
) -> tuple[x509.Certificate, ec.EllipticCurvePublicKey]:
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


def payload_if_signed(parts: list[str], key: ec.EllipticCurvePublicKey) -> bytes | None:
    """The decoded payload if the ES256 signature over ``header.payload`` verifies under
    ``key`` (one ECDSA verification), else ``None``."""
    if len(parts[0]) > MAX_HEADER_CHARS:
        return None
    try:
        payload = _b64url_decode(parts[1])
        signature = _b64url_decode(parts[2])
    except ValueError:  # binascii.Error
        return None
    if len(signature) != 2 * _COORDINATE_BYTES:
        return None
    der = encode_dss_signature(
        int.from_bytes(signature[:_COORDINATE_BYTES], "big"),
        int.from_bytes(signature[_COORDINATE_BYTES:], "big"),
    )
    try:
        key.verify(der, f"{parts[0]}.{parts[1]}".encode("ascii"), _ES256)
    except InvalidSignature:
        return None
    return payload

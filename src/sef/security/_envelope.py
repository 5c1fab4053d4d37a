"""Signed command envelopes (protocol version 2): JWS compact serialization, ES256.

A signed call or reply is a JWS (RFC 7515) whose protected header is::

    {"alg": "ES256", "typ": "sef-call+jws" | "sef-reply+jws", "x5c": ["<base64 DER>"]}

``x5c`` carries the signer's certificate (checked with :meth:`TrustStore.verify`, which
caches per certificate). The payload is a JSON object of claims:

``iss``  the signer's identity (its certificate's common name)
``aud``  for a call ``agent:<id>`` or ``group:<name>``; for a reply the caller's client id
``iat``, ``exp``  issued-at and expiry, Unix s (real time, not a simulation clock)
``jti``  a random nonce, 128 bits as 32 lowercase hex digits
``top``  what the message is for: a call's ``<interface>/<method>``, a reply's ``reply``
``msg``  the protocol-version-1 call or reply object (``"v": 1`` inside)

:func:`verify_call` and :func:`verify_reply` accept an envelope only when every check
passes and raise :class:`EnvelopeRefused` (a :class:`SecurityError`) naming the first that
failed; its ``authentic`` says whether the signature verified under a certificate of the
deployment CA (only then may the receiver answer: an outsider learns nothing). Only ES256
is accepted. The bus wrapping (``{"v": 2, "jws": ...}``) lives in :mod:`sef.bus`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jws
from joserfc.jwk import ECKey
from joserfc.util import json_b64encode, urlsafe_b64decode, urlsafe_b64encode

from sef.security._identity import Identity, Role, SecurityError
from sef.security._replay import ReplayCache, ReplayError
from sef.security._trust import Security, load_certificate

__all__ = [
    "CLOCK_SKEW_S",
    "DEFAULT_LIFETIME_S",
    "MAX_ENVELOPE_BYTES",
    "MAX_LIFETIME_S",
    "EnvelopeKind",
    "EnvelopeRefused",
    "VerifiedEnvelope",
    "call_audience",
    "sign_call",
    "sign_reply",
    "verify_call",
    "verify_reply",
]

ALGORITHM = "ES256"
MAX_LIFETIME_S = 300.0
"""Longest envelope lifetime (``exp - iat``) a verifier accepts by default, s."""
DEFAULT_LIFETIME_S = 60.0
"""Lifetime of a reply envelope, s (a call's follows its expiry, at most the maximum)."""
CLOCK_SKEW_S = 30.0
"""Allowed difference between signer's and verifier's clocks, s (issued-at and expiry)."""
MAX_ENVELOPE_BYTES = 256 * 1024
"""Longest JWS accepted, characters (as the bus's payload limit)."""

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_NONCE = re.compile(r"[0-9a-f]{32}")
_REGISTRY = jws.JWSRegistry(algorithms=[ALGORITHM])
# joserfc >= 1.1 bounds the header at 512 bytes; one with a certificate is ~0.9 KB
_REGISTRY.max_header_length = 16 * 1024
_REGISTRY.max_payload_length = MAX_ENVELOPE_BYTES
# joserfc's ES256 (raw r||s signature <-> DER, SHA-256): the envelope's header is built and
# checked here, so the JWS framing is done here too and each header is encoded or parsed
# once per signer instead of on every message (see _signing_key and _header)
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
class VerifiedEnvelope:
    """What a verified envelope says.

    Attributes:
        signer: the signer's verified certificate contents.
        issuer: ``iss`` (equal to ``signer.id``).
        audience: ``aud``.
        issued_at, expires_at: ``iat`` and ``exp``, Unix s.
        nonce: ``jti``.
        topic: ``top``.
        message: ``msg``, the protocol-version-1 object (not yet checked as a call/reply).
    """

    signer: Identity
    issuer: str
    audience: str
    issued_at: float
    expires_at: float
    nonce: str
    topic: str
    message: dict[str, Any]


def call_audience(target: str, *, group: bool) -> str:
    """The ``aud`` of a call to agent ``target`` or (``group``) to group ``target``."""
    return f"group:{target}" if group else f"agent:{target}"


# -- signing ------------------------------------------------------------------------------


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


def _sign(
    security: Security,
    kind: EnvelopeKind,
    audience: str,
    topic: str,
    message: dict[str, Any],
    lifetime_s: float,
    now: float | None,
) -> str:
    if not 0 < lifetime_s <= MAX_LIFETIME_S:
        raise SecurityError(f"envelope lifetime {lifetime_s} s is outside (0, {MAX_LIFETIME_S}]")
    signer = _signing_key(security)
    iat = time.time() if now is None else now
    claims = {
        "iss": security.identity.id,
        "aud": audience,
        "iat": round(iat, 3),
        "exp": round(iat + lifetime_s, 3),
        "jti": secrets.token_hex(16),
        "top": topic,
        "msg": message,
    }
    payload = json.dumps(claims, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    # RFC 7515 compact serialization, as jws.serialize_compact builds it
    signing_input = signer.headers[kind] + b"." + urlsafe_b64encode(payload.encode())
    signature = urlsafe_b64encode(_ES256.sign(signing_input, signer.key))
    return (signing_input + b"." + signature).decode("ascii")


def sign_call(
    security: Security,
    topic: str,
    audience: str,
    call: dict[str, Any],
    lifetime_s: float = MAX_LIFETIME_S,
    *,
    now: float | None = None,
) -> str:
    """Sign ``call`` (a protocol-version-1 call object) as ``security``'s identity.

    Args:
        security: the signer's credentials (an EMS).
        topic: ``<interface>/<method>`` the call is published for.
        audience: :func:`call_audience` of the target.
        call: the call object (``"v": 1``).
        lifetime_s: how long the envelope is valid, s (at most :data:`MAX_LIFETIME_S`).
        now: issued-at, Unix s (default: the real time).

    Returns:
        The JWS compact serialization.
    """
    return _sign(security, EnvelopeKind.CALL, audience, topic, call, lifetime_s, now)


def sign_reply(
    security: Security,
    audience: str,
    reply: dict[str, Any],
    lifetime_s: float = DEFAULT_LIFETIME_S,
    *,
    now: float | None = None,
) -> str:
    """Sign ``reply`` (a protocol-version-1 reply object) for the caller with client id
    ``audience``; ``lifetime_s`` and ``now`` as for :func:`sign_call`."""
    return _sign(security, EnvelopeKind.REPLY, audience, "reply", reply, lifetime_s, now)


# -- verification -------------------------------------------------------------------------

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
    return _json_object(raw, what)


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
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


def _header(segment: str, kind: EnvelopeKind) -> tuple[x509.Certificate, ECKey]:
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


def _signature_verifies(parts: list[str], key: ECKey) -> bytes | None:
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


def _number(claims: dict[str, Any], name: str) -> float:
    value = claims.get(name)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise EnvelopeRefused("malformed", f"claim {name!r} must be a Unix time in seconds")
    if not math.isfinite(value) or value < 0:
        raise EnvelopeRefused("malformed", f"claim {name!r} must be a Unix time in seconds")
    return float(value)


def _string(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not 1 <= len(value) <= 256:
        raise EnvelopeRefused("malformed", f"claim {name!r} must be a string of 1-256 characters")
    return value


def _verify(
    security: Security,
    token: object,
    kind: EnvelopeKind,
    role: Role,
    now: float | None,
    max_lifetime_s: float,
) -> VerifiedEnvelope:
    """Signature, certificate, role and timing; returns the claims (audience, topic and
    replay are the callers')."""
    if not isinstance(token, str):
        raise EnvelopeRefused("malformed", "JWS must be a string")
    if len(token) > MAX_ENVELOPE_BYTES:
        raise EnvelopeRefused("malformed", f"JWS of {len(token)} characters is too long")
    parts = token.split(".")
    if len(parts) != 3:
        raise EnvelopeRefused("malformed", "JWS compact serialization has not 3 parts")
    cert, key = _header(parts[0], kind)
    at = time.time() if now is None else now
    try:
        signer = security.trust.verify(
            cert, at=None if now is None else datetime.fromtimestamp(now, UTC)
        )
    except SecurityError as exc:
        raise EnvelopeRefused("untrusted", f"signer's certificate refused: {exc}") from None
    payload = _signature_verifies(parts, key)
    if payload is None:
        raise EnvelopeRefused("signature", f"signature of {signer.id!r} does not verify")
    claims = _json_object(payload, "payload")
    issuer = _string(claims, "iss")
    audience = _string(claims, "aud")
    topic = _string(claims, "top")
    issued_at, expires_at = _number(claims, "iat"), _number(claims, "exp")
    nonce = claims.get("jti")
    if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
        raise EnvelopeRefused("malformed", "claim 'jti' must be 32 lowercase hex digits")
    message = claims.get("msg")
    if not isinstance(message, dict):
        raise EnvelopeRefused("malformed", "claim 'msg' must be an object")
    envelope = VerifiedEnvelope(
        signer, issuer, audience, issued_at, expires_at, nonce, topic, message
    )
    if issuer != signer.id:
        raise EnvelopeRefused(
            "issuer", f"iss {issuer[:64]!r} is not the signer {signer.id!r}", envelope
        )
    if signer.role is not role:
        raise EnvelopeRefused(
            "role",
            f"signer {signer.id!r} has role {signer.role.value}, {role.value} required",
            envelope,
        )
    if expires_at < issued_at or expires_at - issued_at > max_lifetime_s:
        raise EnvelopeRefused(
            "lifetime",
            f"lifetime {expires_at - issued_at:.0f} s is outside 0..{max_lifetime_s:.0f} s",
            envelope,
        )
    if issued_at > at + CLOCK_SKEW_S:
        raise EnvelopeRefused(
            "not_yet_valid", f"issued {issued_at - at:.1f} s in the future", envelope
        )
    if at > expires_at + CLOCK_SKEW_S:
        raise EnvelopeRefused("expired", f"expired {at - expires_at:.1f} s ago", envelope)
    return envelope


def _take_nonce(replay: ReplayCache, envelope: VerifiedEnvelope, now: float | None) -> None:
    try:
        replay.add(
            envelope.issuer,
            envelope.nonce,
            envelope.expires_at,
            time.time() if now is None else now,
            issued_at=envelope.issued_at,
        )
    except ReplayError as exc:
        # a replay is not answered: the original was (or will be)
        raise EnvelopeRefused(exc.reason, str(exc)) from None


def verify_call(
    security: Security,
    token: object,
    *,
    topic: str,
    audience: str,
    replay: ReplayCache,
    now: float | None = None,
    max_lifetime_s: float = MAX_LIFETIME_S,
) -> VerifiedEnvelope:
    """Verify a call envelope received by the holder of ``security``.

    Args:
        security: the receiver's credentials (an agent): its trust store and identity.
        token: the JWS compact serialization (anything: a non-string is refused).
        topic: ``<interface>/<method>`` of the topic it arrived on (``top`` must match).
        audience: what the arrival topic addresses (:func:`call_audience`): ``aud`` must
            equal it, and it must be this identity (``agent:<own id>``) or one of the
            groups in this identity's certificate.
        replay: the receiver's cache; the nonce is recorded when everything else passed.
        now: the time, Unix s (default: the real time).
        max_lifetime_s: longest ``exp - iat`` accepted, s.

    Raises:
        EnvelopeRefused: the first check that failed.
    """
    envelope = _verify(security, token, EnvelopeKind.CALL, Role.EMS, now, max_lifetime_s)
    own = security.identity
    allowed = {call_audience(own.id, group=False)}
    allowed.update(call_audience(g, group=True) for g in own.groups)
    if audience not in allowed:
        raise EnvelopeRefused(
            "audience",
            f"topic addresses {audience!r}: not this agent nor a group in its certificate",
            envelope,
        )
    if envelope.audience != audience:
        raise EnvelopeRefused(
            "audience",
            f"aud {envelope.audience[:80]!r} does not match the topic's {audience!r}",
            envelope,
        )
    if envelope.topic != topic:
        raise EnvelopeRefused(
            "topic", f"signed for {envelope.topic[:160]!r}, arrived on {topic!r}", envelope
        )
    _take_nonce(replay, envelope, now)
    return envelope


def verify_reply(
    security: Security,
    token: object,
    *,
    audience: str,
    replay: ReplayCache,
    now: float | None = None,
    max_lifetime_s: float = MAX_LIFETIME_S,
) -> VerifiedEnvelope:
    """Verify a reply envelope received by the caller with client id ``audience``: signed
    by an agent of the deployment CA, for this caller, not expired, not replayed. Whether
    the signer is the agent the call was addressed to is the caller's check
    (``envelope.signer``)."""
    envelope = _verify(security, token, EnvelopeKind.REPLY, Role.AGENT, now, max_lifetime_s)
    if envelope.audience != audience:
        raise EnvelopeRefused(
            "audience", f"aud {envelope.audience[:80]!r} is not this caller {audience!r}", envelope
        )
    if envelope.topic != "reply":
        raise EnvelopeRefused("topic", f"top {envelope.topic[:80]!r} is not 'reply'", envelope)
    _take_nonce(replay, envelope, now)
    return envelope

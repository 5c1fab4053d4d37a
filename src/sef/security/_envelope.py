"""Signed command envelopes (protocol version 2): JWS compact serialization, ES256.

A signed call or reply is a JWS (RFC 7515) whose protected header is::

    {"alg": "ES256", "typ": "sef-call+jws" | "sef-reply+jws", "x5c": ["<base64 DER>"]}

``x5c`` carries the signer's certificate (checked with :meth:`TrustStore.verify`, which
caches per certificate; the framing is :mod:`sef.security._jws`'s). The payload is a
JSON object of claims:

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

import json
import math
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sef.security._identity import Identity, Role, SecurityError
from sef.security._jws import (
    MAX_ENVELOPE_BYTES,
    EnvelopeKind,
    EnvelopeRefused,
    json_object,
    payload_if_signed,
    sign_compact,
    signer_of,
)
from sef.security._replay import ReplayCache, ReplayError
from sef.security._trust import Security

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

MAX_LIFETIME_S = 300.0
"""Longest envelope lifetime (``exp - iat``) a verifier accepts by default, s."""
DEFAULT_LIFETIME_S = 60.0
"""Lifetime of a reply envelope, s (a call's follows its expiry, at most the maximum)."""
CLOCK_SKEW_S = 30.0
"""Allowed difference between signer's and verifier's clocks, s (issued-at and expiry)."""
_NONCE = re.compile(r"[0-9a-f]{32}")
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
"""The claims' JSON (one encoder: ``json.dumps`` with options builds one per call)."""


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
    payload = _ENCODER.encode(claims)
    return sign_compact(security, kind, payload)


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
    cert, key = signer_of(parts[0], kind)
    at = time.time() if now is None else now
    try:
        signer = security.trust.verify(
            cert, at=None if now is None else datetime.fromtimestamp(now, UTC)
        )
    except SecurityError as exc:
        raise EnvelopeRefused("untrusted", f"signer's certificate refused: {exc}") from None
    payload = payload_if_signed(parts, key)
    if payload is None:
        raise EnvelopeRefused("signature", f"signature of {signer.id!r} does not verify")
    claims = json_object(payload, "payload")
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
    if audience != call_audience(own.id, group=False) and not (
        audience.startswith("group:") and audience.removeprefix("group:") in own.groups
    ):
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

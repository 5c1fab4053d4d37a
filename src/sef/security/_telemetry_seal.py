"""Signed telemetry: an agent seals windows of its telemetry; the EMS checks the seals.

For deployments that do not trust their broker (``docs/protocol.md``, "Signed
telemetry"). Signing every message would cost one ECDSA verification per message at the
EMS (~0.1-0.2 ms: 5 000-10 000 msg/s per core, below the ingest target), so an agent
signs *windows*: every :data:`WINDOW_S` (10) seconds or :data:`WINDOW_MESSAGES` messages,
whichever comes first, it publishes one seal (``{root}/agents/{id}/seal``)::

    {"v": 2, "jws": "<JWS compact, ES256, x5c = [the agent's certificate]>"}

whose payload claims ``{iss, agent, bdseq, from_seq, to_seq, count, digest, iat}``:
the ``count`` telemetry messages (property updates and signals) of session ``bdseq``
whose ``seq`` lies in ``from_seq..to_seq`` hash to ``digest``. Each message hashes to
``SHA-256(len(topic) as 2 bytes || topic || seq as 4 bytes || payload)``
(:func:`message_hash`); the window's digest is the SHA-256 of those hashes concatenated
in ``seq`` order, hex (:func:`window_digest`). Windows chain: the next seal's
``from_seq`` is this one's ``to_seq + 1`` (0 after a birth), so a dropped seal shows.

This module holds the pure parts: hashing, the claims, signing (:func:`sign_seal`),
verification (:class:`SealVerifier`) and the agent's window (:class:`TelemetrySealer`).
The EMS's per-agent bookkeeping is :mod:`sef.ems._seals`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from sef.security._identity import Role, SecurityError
from sef.security._trust import Security, TrustStore, load_certificate

__all__ = [
    "MAX_SEAL_BYTES",
    "SEAL_VERSION",
    "WINDOW_MESSAGES",
    "WINDOW_S",
    "SealClaims",
    "SealVerifier",
    "TelemetrySealer",
    "message_hash",
    "sign_seal",
    "topic_prefix",
    "window_digest",
]

SEAL_VERSION = 2
"""The protocol version of a seal payload (signed payloads are protocol version 2)."""
WINDOW_S = 10.0
"""Default: an agent seals its open window at the latest this long after its first
message, s (real time). The EMS spends ~1.5 µs per message plus one verification
(~0.1 ms) per seal, so an agent reporting once a second costs it ~12 µs per message with
10 s windows (one seal per message would be ~0.1 ms: under 10 000 msg/s per core); a
longer window costs less, and a tampered window is found that much later."""
WINDOW_MESSAGES = 500
"""Default: an agent seals its window once it holds this many messages."""
MAX_SEAL_BYTES = 16 * 1024
"""Largest seal payload read (bytes); a seal is ~1.2 KB (the certificate is most of it)."""
SEQ_LIMIT = 2**32
ALGORITHM = "ES256"
SEAL_TYPE = "sef-seal+jws"
"""The ``typ`` header of a seal (so a seal is never mistaken for a command envelope)."""

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_REGISTRY = jws.JWSRegistry(algorithms=[ALGORITHM])
_REGISTRY.max_header_length = MAX_SEAL_BYTES  # the header carries the certificate (x5c)
_REGISTRY.max_payload_length = MAX_SEAL_BYTES
_signing: dict[int, tuple[x509.Certificate, ec.EllipticCurvePrivateKey, ECKey, str]] = {}


def topic_prefix(topic: str) -> bytes:
    """What a message's hash starts with: the topic's 2-byte length and UTF-8 bytes."""
    name = topic.encode()
    return len(name).to_bytes(2, "big") + name


def message_hash(topic: str, seq: int, payload: bytes) -> bytes:
    """SHA-256 of one telemetry message: 2-byte topic length, topic (UTF-8), 4-byte seq
    (big-endian), payload bytes as published."""
    return hashlib.sha256(topic_prefix(topic) + seq.to_bytes(4, "big") + payload).digest()


def window_digest(hashes: Iterable[bytes]) -> str:
    """Digest of a window: SHA-256 over its message hashes in ``seq`` order, hex."""
    return hashlib.sha256(b"".join(hashes)).hexdigest()


def _int(obj: dict[str, Any], key: str, limit: int) -> int:
    value = obj.get(key)
    if type(value) is not int or not 0 <= value < limit:
        raise SecurityError(f"seal claim {key!r} must be an integer in 0..{limit - 1}")
    return value


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not 1 <= len(value) <= 64:
        raise SecurityError(f"seal claim {key!r} must be a string of 1-64 characters")
    return value


@dataclass(frozen=True, slots=True)
class SealClaims:
    """What a seal says.

    Attributes:
        iss: the signer's identity (its certificate's common name).
        agent: the agent whose telemetry is sealed (equal to ``iss``).
        bdseq: the agent's session.
        from_seq, to_seq: the sealed range of message sequence numbers (inclusive).
        count: telemetry messages in that range.
        digest: :func:`window_digest` of those messages, hex.
        iat: when the seal was made, Unix s.
    """

    iss: str
    agent: str
    bdseq: int
    from_seq: int
    to_seq: int
    count: int
    digest: str
    iat: float

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> SealClaims:
        """Read the claims; :class:`SecurityError` saying what is wrong."""
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise SecurityError(f"seal claims are not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise SecurityError("seal claims must be a JSON object")
        digest = obj.get("digest")
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise SecurityError("seal claim 'digest' must be 64 lower-case hex digits")
        iat = obj.get("iat")
        if isinstance(iat, bool) or not isinstance(iat, int | float) or not 0 <= iat < 1e11:
            raise SecurityError("seal claim 'iat' must be a Unix time in seconds")
        claims = cls(
            _str(obj, "iss"),
            _str(obj, "agent"),
            _int(obj, "bdseq", 2**63),
            _int(obj, "from_seq", SEQ_LIMIT),
            _int(obj, "to_seq", SEQ_LIMIT),
            _int(obj, "count", SEQ_LIMIT),
            digest,
            float(iat),
        )
        if claims.to_seq < claims.from_seq:
            raise SecurityError(f"seal range {claims.from_seq}..{claims.to_seq} is empty")
        if claims.count > claims.to_seq - claims.from_seq + 1:
            raise SecurityError(
                f"seal claims {claims.count} messages in {claims.from_seq}..{claims.to_seq}"
            )
        return claims


def _signing_key(security: Security) -> tuple[ECKey, str]:
    """``security``'s key as a joserfc key and its certificate as ``x5c`` text, cached
    until :meth:`Security.replace` swaps them."""
    cached = _signing.get(id(security))
    if cached is None or cached[0] is not security.cert or cached[1] is not security.key:
        der = security.cert.public_bytes(serialization.Encoding.DER)
        cached = (
            security.cert,
            security.key,
            ECKey.import_key(security.key),
            base64.b64encode(der).decode(),
        )
        _signing[id(security)] = cached
    return cached[2], cached[3]


def sign_seal(security: Security, claims: SealClaims) -> bytes:
    """The seal payload ``{"v": 2, "jws": ...}``: ``claims`` signed ES256 with the
    certificate in ``x5c``."""
    key, x5c = _signing_key(security)
    header = {"alg": ALGORITHM, "typ": SEAL_TYPE, "x5c": [x5c]}
    token = jws.serialize_compact(header, claims.to_json(), key, registry=_REGISTRY)
    return json.dumps({"v": SEAL_VERSION, "jws": token}, separators=(",", ":")).encode()


class SealVerifier:
    """Checks seals against the deployment CA.

    A seal is accepted when it is a version-2 payload whose JWS verifies (ES256) with the
    certificate in its ``x5c``, that certificate is from the CA, valid, not revoked and of
    role agent (:meth:`TrustStore.verify`, which caches the CA signature check), and its
    identity is both ``iss`` and ``agent`` and the agent of the topic it came on. Parsed
    certificates and their keys are cached by DER bytes.
    """

    max_cached = 100_000

    def __init__(self, trust: TrustStore) -> None:
        self.trust = trust
        self._keys: dict[bytes, tuple[x509.Certificate, ECKey]] = {}

    def verify(self, payload: bytes, agent_id: str) -> SealClaims:
        """The claims of the seal ``payload`` received on ``agent_id``'s seal topic;
        :class:`SecurityError` saying why it is refused."""
        if len(payload) > MAX_SEAL_BYTES:
            raise SecurityError(f"seal of {len(payload)} bytes is over {MAX_SEAL_BYTES}")
        try:
            obj = json.loads(payload)
        except (ValueError, RecursionError) as exc:
            raise SecurityError(f"seal is not JSON: {exc}") from None
        if not isinstance(obj, dict) or obj.get("v") != SEAL_VERSION:
            raise SecurityError(f'seal must be a JSON object with "v": {SEAL_VERSION}')
        token = obj.get("jws")
        if not isinstance(token, str):
            raise SecurityError("seal has no 'jws' string")
        try:
            compact = jws.extract_compact(token.encode(), registry=_REGISTRY)
            header = compact.headers()
        except (JoseError, ValueError) as exc:
            raise SecurityError(f"seal is not a JWS compact serialization: {exc}") from None
        if header.get("alg") != ALGORITHM or header.get("typ") != SEAL_TYPE:
            raise SecurityError(
                f"seal header must have alg {ALGORITHM} and typ {SEAL_TYPE}, got "
                f"alg {header.get('alg')!r} typ {header.get('typ')!r}"
            )
        cert, key = self._certificate(header.get("x5c"))
        identity = self.trust.verify(cert, role=Role.AGENT)
        try:
            valid = jws.validate_compact(compact, key, registry=_REGISTRY)
        except (JoseError, ValueError) as exc:
            raise SecurityError(f"seal signature unreadable: {exc}") from None
        if not valid:
            raise SecurityError(f"seal signature does not verify with {identity.id!r}'s key")
        claims = SealClaims.from_json(compact.payload)
        if claims.iss != identity.id or claims.agent != identity.id:
            raise SecurityError(
                f"seal claims iss {claims.iss!r} / agent {claims.agent!r} but is signed by "
                f"{identity.id!r}"
            )
        if identity.id != agent_id:
            raise SecurityError(
                f"seal on the topic of agent {agent_id!r} is signed by agent {identity.id!r}"
            )
        return claims

    def _certificate(self, x5c: object) -> tuple[x509.Certificate, ECKey]:
        if not isinstance(x5c, list) or len(x5c) != 1 or not isinstance(x5c[0], str):
            raise SecurityError("seal header 'x5c' must hold exactly one certificate")
        try:
            der = base64.b64decode(x5c[0], validate=True)
        except (binascii.Error, ValueError):
            raise SecurityError("seal header 'x5c' is not base64") from None
        cached = self._keys.get(der)
        if cached is None:
            cert = load_certificate(der)
            public_key = cert.public_key()
            if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
                public_key.curve, ec.SECP256R1
            ):
                raise SecurityError("seal certificate key is not ECDSA P-256")
            key = ECKey.import_key(public_key)
            if len(self._keys) >= self.max_cached:
                self._keys.clear()
            cached = self._keys[der] = (cert, key)
        return cached


class TelemetrySealer:
    """An agent's open window of telemetry and the seals that close it.

    Call :meth:`start_session` at every birth (before its messages), :meth:`add` for every
    telemetry message published, and :meth:`seal` when :meth:`add` returns true, when
    :meth:`due` says the window is old enough, and before a birth or a clean shutdown.

    Args:
        security: the agent's credentials (its identity signs the seals).
        window_s: longest a window stays open after its first message, real s.
        window_messages: most messages in one window.
    """

    def __init__(
        self,
        security: Security,
        *,
        window_s: float = WINDOW_S,
        window_messages: int = WINDOW_MESSAGES,
    ) -> None:
        if window_s <= 0 or window_messages < 1:
            raise ValueError("window_s must be > 0 and window_messages >= 1")
        self.security = security
        self.window_s = window_s
        self.window_messages = window_messages
        self.bdseq = 0
        self.from_seq = 0
        self.seals = 0
        """Seals made so far."""
        self._hash = hashlib.sha256()
        self._count = 0
        self._last_seq = 0
        self._opened: float | None = None

    @property
    def count(self) -> int:
        """Messages in the open window."""
        return self._count

    def start_session(self, bdseq: int) -> None:
        """A birth: session ``bdseq`` starts at seq 0 (the open window must be sealed
        first, or it is dropped)."""
        self.bdseq = bdseq
        self.from_seq = 0
        self._reset()

    def _reset(self) -> None:
        self._hash = hashlib.sha256()
        self._count = 0
        self._opened = None

    def add(self, topic: str, seq: int, payload: bytes) -> bool:
        """Count a published telemetry message; returns whether the window is full."""
        if seq < self.from_seq:  # seq wrapped after 2**32 messages: a new chain from here
            self._reset()
            self.from_seq = seq
        self._hash.update(message_hash(topic, seq, payload))
        self._count += 1
        self._last_seq = seq
        if self._opened is None:
            self._opened = time.monotonic()
        return self._count >= self.window_messages

    def due(self, now: float | None = None) -> bool:
        """Whether the open window holds messages and is ``window_s`` old (monotonic s)."""
        if self._opened is None:
            return False
        return (time.monotonic() if now is None else now) - self._opened >= self.window_s

    def seal(self) -> bytes | None:
        """The seal payload closing the open window (``None`` when it is empty); the next
        window starts after its last message."""
        if not self._count:
            return None
        claims = SealClaims(
            self.security.identity.id,
            self.security.identity.id,
            self.bdseq,
            self.from_seq,
            self._last_seq,
            self._count,
            self._hash.hexdigest(),
            round(time.time(), 3),
        )
        self.from_seq = self._last_seq + 1
        self._reset()
        self.seals += 1
        return sign_seal(self.security, claims)

"""Signed command envelopes (protocol version 2): the claims checks, one by one.

A real deployment CA issues the certificates; every refusal names its reason, and only a
refusal whose signature verified under a valid certificate of the CA is ``authentic``.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from joserfc import jws
from joserfc.jwk import ECKey

from sef.bus import ErrorName, PayloadError, decode_envelope, decode_object, encode_envelope
from sef.security import (
    MAX_LIFETIME_S,
    CertificateAuthority,
    EnvelopeRefused,
    ReplayCache,
    ReplayError,
    Role,
    Security,
    VerifiedEnvelope,
    new_private_key,
    sign_call,
    sign_reply,
    verify_call,
    verify_reply,
)

CALL = {"v": 1, "id": "c1", "ts": 1.0, "exp": 2.0, "args": [5.0], "sender": "ems-1"}
TOPIC = "org.sef.DER/SetPower"


class Pki:
    """A CA with an EMS, two agents (a1 in group g1), an operator and an outside CA."""

    def __init__(self, root: Path) -> None:
        self.ca = CertificateAuthority.init(root / "ca")
        self.other_ca = CertificateAuthority.init(root / "other")
        self.ems = self.creds(self.ca, "ems-1", Role.EMS)
        self.a1 = self.creds(self.ca, "a1", Role.AGENT, groups=("g1",))
        self.a2 = self.creds(self.ca, "a2", Role.AGENT, groups=("g2",))
        self.operator = self.creds(self.ca, "op-1", Role.OPERATOR)
        self.outsider = self.creds(self.other_ca, "ems-1", Role.EMS)

    @staticmethod
    def creds(
        ca: CertificateAuthority, identity: str, role: Role, groups: tuple[str, ...] = ()
    ) -> Security:
        _, key = ca.issue(identity, role, groups=groups)
        return Security.load(ca.cert_path(identity), key, ca.ca_path, ca.crl_path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def raw_token(
    signer: Security,
    claims: dict[str, Any],
    *,
    header: dict[str, Any] | None = None,
    key: Any = None,
) -> str:
    """A JWS made by hand: ``claims`` as given, signed with ``key`` (default: the
    signer's), the signer's certificate in x5c unless ``header`` says otherwise."""
    x5c = base64.b64encode(signer.cert.public_bytes(serialization.Encoding.DER)).decode()
    protected = header or {"alg": "ES256", "typ": "sef-call+jws", "x5c": [x5c]}
    pem = (key or signer.key).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    registry = jws.JWSRegistry(algorithms=["ES256"])
    return jws.serialize_compact(
        protected, json.dumps(claims).encode(), ECKey.import_key(pem), registry=registry
    )


def claims_of(token: str) -> dict[str, Any]:
    segment = token.split(".")[1]
    obj: dict[str, Any] = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return obj


def call_claims(**changes: Any) -> dict[str, Any]:
    now = time.time()
    claims: dict[str, Any] = {
        "iss": "ems-1",
        "aud": "agent:a1",
        "iat": now,
        "exp": now + 30,
        "jti": "0123456789abcdef0123456789abcdef",
        "top": TOPIC,
        "msg": CALL,
    }
    claims.update(changes)
    return claims


def refused(
    pki: Pki,
    token: str,
    *,
    audience: str = "agent:a1",
    topic: str = TOPIC,
    now: float | None = None,
    receiver: Security | None = None,
) -> EnvelopeRefused:
    with pytest.raises(EnvelopeRefused) as info:
        verify_call(
            receiver or pki.a1,
            token,
            topic=topic,
            audience=audience,
            replay=ReplayCache(),
            now=now,
        )
    return info.value


def test_valid_call_round_trips(pki: Pki) -> None:
    token = sign_call(pki.ems, TOPIC, "agent:a1", CALL, 30)
    got = verify_call(pki.a1, token, topic=TOPIC, audience="agent:a1", replay=ReplayCache())
    assert isinstance(got, VerifiedEnvelope)
    assert got.message == CALL
    assert (got.issuer, got.signer.role, got.audience, got.topic) == (
        "ems-1",
        Role.EMS,
        "agent:a1",
        TOPIC,
    )
    assert got.expires_at - got.issued_at == pytest.approx(30, abs=0.01)
    assert len(got.nonce) == 32


def test_wire_form_is_v2_with_the_jws_only(pki: Pki) -> None:
    token = sign_call(pki.ems, TOPIC, "agent:a1", CALL, 30)
    payload = encode_envelope(token)
    assert json.loads(payload) == {"v": 2, "jws": token}
    assert decode_envelope(payload) == token
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == "ES256" and header["typ"] == "sef-call+jws"
    assert len(header["x5c"]) == 1
    with pytest.raises(PayloadError, match="unsupported protocol version") as info:
        decode_object(payload)  # a version-1 receiver
    assert info.value.name == ErrorName.UNSUPPORTED_VERSION


@pytest.mark.parametrize(
    ("payload", "name", "text"),
    [
        (json.dumps(CALL).encode(), ErrorName.UNAUTHORIZED, "unsigned"),
        (b'{"v":3,"jws":"a.b.c"}', ErrorName.UNSUPPORTED_VERSION, "unsupported protocol"),
        (b'{"v":2,"jws":5}', ErrorName.MALFORMED, "non-empty string"),
        (b'{"v":2,"jws":"a.b.c","x":1}', ErrorName.MALFORMED, "unexpected field"),
        (b'{"v":2}', ErrorName.MALFORMED, "non-empty string"),
        (b"[2]", ErrorName.MALFORMED, "JSON object"),
    ],
)
def test_decode_envelope_refusals(payload: bytes, name: str, text: str) -> None:
    with pytest.raises(PayloadError, match=text) as info:
        decode_envelope(payload)
    assert info.value.name == name


def test_valid_group_call_for_a_group_in_the_certificate(pki: Pki) -> None:
    token = sign_call(pki.ems, TOPIC, "group:g1", CALL, 30)
    got = verify_call(pki.a1, token, topic=TOPIC, audience="group:g1", replay=ReplayCache())
    assert got.audience == "group:g1"


def test_forged_signature(pki: Pki) -> None:
    """The EMS's certificate in x5c, signed with another key."""
    token = raw_token(pki.ems, call_claims(), key=new_private_key())
    exc = refused(pki, token)
    assert exc.reason == "signature" and not exc.authentic


def test_altered_payload(pki: Pki) -> None:
    """The arguments changed after signing: the signature no longer covers them."""
    header, _, signature = sign_call(pki.ems, TOPIC, "agent:a1", CALL, 30).split(".")
    claims = claims_of(".".join((header, _, signature)))
    claims["msg"]["args"] = [8000.0]
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    exc = refused(pki, f"{header}.{body}.{signature}")
    assert exc.reason == "signature" and not exc.authentic


@pytest.mark.parametrize("signer", ["a2", "operator"])
def test_wrong_signer_role(pki: Pki, signer: str) -> None:
    creds: Security = getattr(pki, signer)
    token = sign_call(creds, TOPIC, "agent:a1", {**CALL, "sender": creds.identity.id}, 30)
    exc = refused(pki, token)
    assert exc.reason == "role" and exc.authentic
    assert "ems required" in str(exc)


def test_certificate_of_another_ca(pki: Pki) -> None:
    exc = refused(pki, sign_call(pki.outsider, TOPIC, "agent:a1", CALL, 30))
    assert exc.reason == "untrusted" and not exc.authentic
    assert "does not verify with the CA" in str(exc)  # same CA name, another key


def test_revoked_signer(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    token = sign_call(pki.ems, TOPIC, "agent:a1", CALL, 30)
    verify_call(pki.a1, token, topic=TOPIC, audience="agent:a1", replay=ReplayCache())
    pki.ca.revoke("ems-1")
    pki.a1.trust.set_crl(pki.ca.crl_path.read_bytes())
    exc = refused(pki, sign_call(pki.ems, TOPIC, "agent:a1", CALL, 30))
    assert exc.reason == "untrusted" and "revoked" in str(exc) and not exc.authentic


def test_call_for_another_agent_replayed_onto_this_agents_topic(pki: Pki) -> None:
    exc = refused(pki, sign_call(pki.ems, TOPIC, "agent:a2", CALL, 30))
    assert exc.reason == "audience" and exc.authentic


def test_topic_of_another_agent_is_not_this_agent(pki: Pki) -> None:
    """Even when aud and topic agree, they must name this agent."""
    token = sign_call(pki.ems, TOPIC, "agent:a2", CALL, 30)
    exc = refused(pki, token, audience="agent:a2")
    assert exc.reason == "audience" and "not this agent" in str(exc)


def test_group_not_in_the_agents_certificate(pki: Pki) -> None:
    token = sign_call(pki.ems, TOPIC, "group:g2", CALL, 30)
    exc = refused(pki, token, audience="group:g2")
    assert exc.reason == "audience" and "group in its certificate" in str(exc)


def test_moved_to_another_method(pki: Pki) -> None:
    token = sign_call(pki.ems, TOPIC, "agent:a1", CALL, 30)
    exc = refused(pki, token, topic="org.sef.DER/Stop")
    assert exc.reason == "topic" and exc.authentic


def test_expired(pki: Pki) -> None:
    token = sign_call(pki.ems, TOPIC, "agent:a1", CALL, 30, now=time.time() - 100)
    exc = refused(pki, token)
    assert exc.reason == "expired" and exc.authentic


def test_within_clock_skew_is_accepted(pki: Pki) -> None:
    now = time.time()
    late = sign_call(pki.ems, TOPIC, "agent:a1", CALL, 30, now=now - 50)  # expired 20 s ago
    early = sign_call(pki.ems, TOPIC, "agent:a1", CALL, 30, now=now + 20)
    for token in (late, early):
        verify_call(pki.a1, token, topic=TOPIC, audience="agent:a1", replay=ReplayCache())


def test_issued_in_the_future(pki: Pki) -> None:
    token = sign_call(pki.ems, TOPIC, "agent:a1", CALL, 30, now=time.time() + 120)
    assert refused(pki, token).reason == "not_yet_valid"


def test_lifetime_over_the_bound(pki: Pki) -> None:
    token = raw_token(pki.ems, call_claims(exp=time.time() + MAX_LIFETIME_S + 10))
    assert refused(pki, token).reason == "lifetime"
    with pytest.raises(EnvelopeRefused, match="lifetime"):
        verify_call(
            pki.a1,
            sign_call(pki.ems, TOPIC, "agent:a1", CALL, 60),
            topic=TOPIC,
            audience="agent:a1",
            replay=ReplayCache(),
            max_lifetime_s=30,
        )
    with pytest.raises(Exception, match="lifetime"):
        sign_call(pki.ems, TOPIC, "agent:a1", CALL, MAX_LIFETIME_S + 1)


def test_issuer_is_not_the_certificate(pki: Pki) -> None:
    exc = refused(pki, raw_token(pki.ems, call_claims(iss="ems-2")))
    assert exc.reason == "issuer" and exc.authentic


def test_replayed(pki: Pki) -> None:
    token = sign_call(pki.ems, TOPIC, "agent:a1", CALL, 30)
    cache = ReplayCache()
    verify_call(pki.a1, token, topic=TOPIC, audience="agent:a1", replay=cache)
    with pytest.raises(EnvelopeRefused) as info:
        verify_call(pki.a1, token, topic=TOPIC, audience="agent:a1", replay=cache)
    assert info.value.reason == "replayed" and not info.value.authentic


def test_refused_envelope_is_not_recorded_as_seen(pki: Pki) -> None:
    """A refused envelope (here: on the wrong topic) does not use up its nonce."""
    token = sign_call(pki.ems, TOPIC, "agent:a1", CALL, 30)
    cache = ReplayCache()
    with pytest.raises(EnvelopeRefused):
        verify_call(pki.a1, token, topic="x/y", audience="agent:a1", replay=cache)
    assert len(cache) == 0
    verify_call(pki.a1, token, topic=TOPIC, audience="agent:a1", replay=cache)


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "none", "typ": "sef-call+jws", "x5c": ["AA=="]},
        {"alg": "HS256", "typ": "sef-call+jws", "x5c": ["AA=="]},
        {"alg": "ES256", "typ": "sef-reply+jws", "x5c": ["AA=="]},
        {"alg": "ES256", "typ": "sef-call+jws", "x5c": []},
        {"alg": "ES256", "typ": "sef-call+jws"},
        {"alg": "ES256", "typ": "sef-call+jws", "x5c": ["AA=="], "jku": "http://evil"},
    ],
)
def test_header_other_than_es256_with_one_certificate(pki: Pki, header: dict[str, Any]) -> None:
    segment = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    token = sign_call(pki.ems, TOPIC, "agent:a1", CALL, 30)
    exc = refused(pki, segment + token[token.index(".") :])
    assert exc.reason == "malformed" and not exc.authentic


def test_alg_none_token_is_refused(pki: Pki) -> None:
    x5c = base64.b64encode(pki.ems.cert.public_bytes(serialization.Encoding.DER)).decode()
    header = {"alg": "none", "typ": "sef-call+jws", "x5c": [x5c]}
    parts = [
        base64.urlsafe_b64encode(json.dumps(p).encode()).rstrip(b"=").decode()
        for p in (header, call_claims())
    ]
    assert refused(pki, f"{parts[0]}.{parts[1]}.").reason == "malformed"


@pytest.mark.parametrize(
    "change",
    [
        {"jti": "short"},
        {"jti": 5},
        {"iat": "now"},
        {"exp": True},
        {"exp": -1},
        {"msg": [1]},
        {"aud": ""},
        {"top": None},
    ],
)
def test_claims_of_the_wrong_shape(pki: Pki, change: dict[str, Any]) -> None:
    exc = refused(pki, raw_token(pki.ems, call_claims(**change)))
    assert exc.reason == "malformed" and not exc.authentic


def test_reply_round_trip_and_checks(pki: Pki) -> None:
    reply = {"v": 1, "id": "c1", "agent": "a1", "ok": True, "result": []}
    token = sign_reply(pki.a1, "ems-1", reply)
    got = verify_reply(pki.ems, token, audience="ems-1", replay=ReplayCache())
    assert got.message == reply and got.signer.id == "a1" and got.topic == "reply"
    with pytest.raises(EnvelopeRefused) as info:  # for another caller
        verify_reply(pki.ems, token, audience="ems-2", replay=ReplayCache())
    assert info.value.reason == "audience"
    with pytest.raises(EnvelopeRefused) as info:  # an EMS signing a reply
        verify_reply(
            pki.ems, sign_reply(pki.ems, "ems-1", reply), audience="ems-1", replay=ReplayCache()
        )
    assert info.value.reason == "role"
    with pytest.raises(EnvelopeRefused) as info:  # a call is not a reply
        verify_reply(
            pki.ems,
            sign_call(pki.ems, TOPIC, "ems-1", reply, 30),
            audience="ems-1",
            replay=ReplayCache(),
        )
    assert info.value.reason == "malformed"


def test_replay_cache_forgets_after_expiry_and_is_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = ReplayCache(max_entries=2, keep_after_s=30)
    cache.add("ems", "n1", expires_at=100.0, now=50.0)
    cache.add("ems", "n2", expires_at=200.0, now=50.0)
    with pytest.raises(ReplayError, match="seen before"):
        cache.add("ems", "n1", expires_at=100.0, now=60.0)
    caplog.set_level(logging.WARNING, "sef.security.replay")
    for _ in range(3):
        with pytest.raises(ReplayError, match="full") as info:
            cache.add("ems", "n3", expires_at=150.0, now=60.0)
        assert info.value.reason == "replay_cache_full"
    full = [r for r in caplog.records if "replay cache full" in r.getMessage()]
    assert len(full) == 1 and full[0].levelno == logging.ERROR  # once, not per message
    assert cache.refused_full == 3
    cache.add("ems", "n3", expires_at=150.0, now=131.0)  # n1 kept until 130: gone now
    assert ("ems", "n1") not in cache and len(cache) == 2
    assert any("room again" in r.getMessage() for r in caplog.records)

"""The envelope's own JWS framing (header encoded once per signer, parsed once per header):
standard RFC 7515 compact JWS both ways, and the caches never change a decision.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from joserfc import jws
from joserfc.jwk import ECKey

from sef.security import (
    CertificateAuthority,
    EnvelopeRefused,
    ReplayCache,
    Role,
    Security,
    sign_call,
    sign_reply,
    verify_call,
    verify_reply,
)

TOPIC = "org.sef.DER/SetPower"
CALL = {"v": 1, "id": "c1", "ts": 1.0, "exp": 2.0, "args": [5.0]}
REGISTRY = jws.JWSRegistry(algorithms=["ES256"])
REGISTRY.max_header_length = 16 * 1024  # a header with a certificate is ~0.9 KB


class Pki:
    def __init__(self, root: Path) -> None:
        self.ca = CertificateAuthority.init(root / "ca")
        self.ems = self.creds("ems-1", Role.EMS)
        self.agent = self.creds("a1", Role.AGENT)

    def creds(self, identity: str, role: Role) -> Security:
        _, key = self.ca.issue(identity, role)
        return Security.load(self.ca.cert_path(identity), key, self.ca.ca_path, self.ca.crl_path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("framing"))


def public_key(security: Security) -> ECKey:
    pem = security.cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return ECKey.import_key(pem)


def x5c(security: Security) -> str:
    return base64.b64encode(security.cert.public_bytes(serialization.Encoding.DER)).decode()


def test_a_signed_call_is_a_standard_jws(pki: Pki) -> None:
    """The library (joserfc) verifies it with the EMS's key; header and claims as specified."""
    token = sign_call(pki.ems, TOPIC, "agent:a1", CALL, 30)
    verified = jws.deserialize_compact(token, public_key(pki.ems), registry=REGISTRY)
    assert verified.protected == {"alg": "ES256", "typ": "sef-call+jws", "x5c": [x5c(pki.ems)]}
    claims: dict[str, Any] = json.loads(verified.payload)
    assert (claims["iss"], claims["aud"], claims["top"], claims["msg"]) == (
        "ems-1",
        "agent:a1",
        TOPIC,
        CALL,
    )
    with pytest.raises(Exception, match="signature"):  # not under another key
        jws.deserialize_compact(token, public_key(pki.agent), registry=REGISTRY)


def test_a_jws_made_by_joserfc_verifies(pki: Pki) -> None:
    """The other way round: a reply framed by joserfc (its own header encoding) passes."""
    reply = {"v": 1, "id": "c1", "agent": "a1", "ok": True, "result": []}
    ours = sign_reply(pki.agent, "ems-1", reply)
    claims = json.loads(jws.extract_compact(ours.encode(), registry=REGISTRY).payload)
    pem = pki.agent.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    header = {"x5c": [x5c(pki.agent)], "typ": "sef-reply+jws", "alg": "ES256"}  # other order
    token = jws.serialize_compact(
        header, json.dumps(claims), ECKey.import_key(pem), registry=REGISTRY
    )
    assert token.split(".")[0] != ours.split(".")[0]
    got = verify_reply(pki.ems, token, audience="ems-1", replay=ReplayCache())
    assert got.message == reply and got.signer.id == "a1"


def test_a_cached_header_is_still_checked_for_its_kind(pki: Pki) -> None:
    """A reply header accepted (and cached) before does not make a call out of a reply."""
    reply = {"v": 1, "id": "c1", "agent": "a1", "ok": True, "result": []}
    token = sign_reply(pki.agent, "ems-1", reply)
    verify_reply(pki.ems, token, audience="ems-1", replay=ReplayCache())
    with pytest.raises(EnvelopeRefused) as info:
        verify_call(pki.ems, token, topic=TOPIC, audience="agent:ems-1", replay=ReplayCache())
    assert info.value.reason == "malformed" and "typ" in str(info.value)


def test_a_cached_header_does_not_vouch_for_another_signature(pki: Pki) -> None:
    """Same header (cached), payload of one token with the signature of another: refused."""
    first = sign_call(pki.ems, TOPIC, "agent:a1", CALL, 30)
    second = sign_call(pki.ems, TOPIC, "agent:a1", {**CALL, "args": [8000.0]}, 30)
    verify_call(pki.agent, first, topic=TOPIC, audience="agent:a1", replay=ReplayCache())
    h1, p1, s1 = first.split(".")
    h2, p2, s2 = second.split(".")
    assert h1 == h2
    for forged in (f"{h1}.{p2}.{s1}", f"{h1}.{p1}.{s2}", f"{h1}.{p1}.{s1[:-2]}", f"{h1}.{p1}."):
        with pytest.raises(EnvelopeRefused) as info:
            verify_call(pki.agent, forged, topic=TOPIC, audience="agent:a1", replay=ReplayCache())
        assert info.value.reason == "signature" and not info.value.authentic


def test_revocation_applies_to_a_cached_signer(tmp_path: Path) -> None:
    """The header and certificate are cached, the CRL is consulted on every message."""
    pki = Pki(tmp_path)
    cache = ReplayCache()
    verify_call(
        pki.agent,
        sign_call(pki.ems, TOPIC, "agent:a1", CALL, 30),
        topic=TOPIC,
        audience="agent:a1",
        replay=cache,
    )
    pki.ca.revoke("ems-1")
    pki.agent.trust.set_crl(pki.ca.crl_path.read_bytes())
    with pytest.raises(EnvelopeRefused) as info:
        verify_call(
            pki.agent,
            sign_call(pki.ems, TOPIC, "agent:a1", CALL, 30),
            topic=TOPIC,
            audience="agent:a1",
            replay=cache,
        )
    assert info.value.reason == "untrusted" and "revoked" in str(info.value)


def test_a_renewed_certificate_is_sent_after_replace(tmp_path: Path) -> None:
    """The encoded header is cached per certificate: a renewal puts the new one in x5c."""
    pki = Pki(tmp_path)
    before = sign_call(pki.ems, TOPIC, "agent:a1", CALL, 30)
    fresh = pki.creds("ems-1", Role.EMS)  # a new certificate and key, same identity
    pki.ems.replace(fresh.cert, fresh.key)
    after = sign_call(pki.ems, TOPIC, "agent:a1", CALL, 30)
    header = jws.extract_compact(after.encode(), registry=REGISTRY).protected
    assert (
        header["x5c"]
        == [x5c(fresh)]
        != jws.extract_compact(before.encode(), registry=REGISTRY).protected["x5c"]
    )
    got = verify_call(pki.agent, after, topic=TOPIC, audience="agent:a1", replay=ReplayCache())
    assert got.signer.serial == fresh.identity.serial


def test_a_number_beyond_a_double_is_malformed(pki: Pki) -> None:
    """A validly signed call whose JSON holds 1e400 (read as infinity by Python's json) is
    refused before anything uses it."""
    pem = pki.ems.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    claims = json.loads(
        jws.extract_compact(
            sign_call(pki.ems, TOPIC, "agent:a1", CALL, 30).encode(), registry=REGISTRY
        ).payload
    )
    payload = json.dumps(claims).replace('"args": [5.0]', '"args": [1e400]')
    assert "1e400" in payload
    header = {"alg": "ES256", "typ": "sef-call+jws", "x5c": [x5c(pki.ems)]}
    token = jws.serialize_compact(header, payload, ECKey.import_key(pem), registry=REGISTRY)
    with pytest.raises(EnvelopeRefused, match="out of range") as info:
        verify_call(pki.agent, token, topic=TOPIC, audience="agent:a1", replay=ReplayCache())
    assert info.value.reason == "malformed"

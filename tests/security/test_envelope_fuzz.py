"""Hypothesis on envelope parsing: whatever arrives, the receiver raises only
``PayloadError`` (the bus wrapping) or ``SecurityError`` (the JWS and its claims), and a
valid envelope round-trips.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc import jws
from joserfc.jwk import ECKey

from sef.bus import PayloadError, decode_envelope, encode_envelope
from sef.security import (
    CertificateAuthority,
    ReplayCache,
    Role,
    Security,
    SecurityError,
    sign_call,
    sign_reply,
    verify_call,
    verify_reply,
)

SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


class Keys:
    def __init__(self, root: Path) -> None:
        ca = CertificateAuthority.init(root / "ca")
        self.ems = self._creds(ca, "ems-1", Role.EMS)
        self.agent = self._creds(ca, "a1", Role.AGENT, ("g1",))
        self.x5c = base64.b64encode(self.ems.cert.public_bytes(serialization.Encoding.DER))

    @staticmethod
    def _creds(
        ca: CertificateAuthority, identity: str, role: Role, groups: tuple[str, ...] = ()
    ) -> Security:
        _, key = ca.issue(identity, role, groups=groups)
        return Security.load(ca.cert_path(identity), key, ca.ca_path, ca.crl_path)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(tmp_path_factory.mktemp("fuzz-pki"))


def raw_token(signer: Security, claims: dict[str, Any]) -> str:
    """A JWS with ``claims`` as given, validly signed by ``signer`` (its certificate in x5c)."""
    x5c = base64.b64encode(signer.cert.public_bytes(serialization.Encoding.DER)).decode()
    pem = signer.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return jws.serialize_compact(
        {"alg": "ES256", "typ": "sef-call+jws", "x5c": [x5c]},
        json.dumps(claims).encode(),
        ECKey.import_key(pem),
        registry=jws.JWSRegistry(algorithms=["ES256"]),
    )


def receive(keys: Keys, payload: bytes) -> None:
    """What an agent does with a call payload: unwrap, then verify."""
    token = decode_envelope(payload)
    verify_call(keys.agent, token, topic="I/M", audience="agent:a1", replay=ReplayCache())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@SETTINGS
@given(payload=st.binary(max_size=2000))
def test_arbitrary_bytes(keys: Keys, payload: bytes) -> None:
    with pytest.raises((PayloadError, SecurityError)):
        receive(keys, payload)


@SETTINGS
@given(obj=st.dictionaries(st.sampled_from(["v", "jws", "cose", "x"]), json_values, max_size=4))
def test_arbitrary_json_objects(keys: Keys, obj: dict[str, Any]) -> None:
    with pytest.raises((PayloadError, SecurityError)):
        receive(keys, json.dumps(obj).encode())


@SETTINGS
@given(
    token=st.one_of(
        st.text(max_size=300),
        st.text(alphabet="AZaz09-_.", max_size=300),
        st.text(alphabet='"\\\u2028\x00.a', max_size=40),
    )
)
def test_envelope_wire_form_is_the_json_object(keys: Keys, token: str) -> None:
    """The wire form (built without a JSON encoder when nothing needs escaping) parses back
    as exactly ``{"v": 2, "jws": token}`` whatever the string."""
    wire = encode_envelope(token)
    assert json.loads(wire) == {"v": 2, "jws": token}
    if token:
        assert decode_envelope(wire) == token


@SETTINGS
@given(token=st.one_of(st.text(max_size=300), json_values))
def test_arbitrary_tokens(keys: Keys, token: Any) -> None:
    with pytest.raises(SecurityError):
        verify_call(keys.agent, token, topic="I/M", audience="agent:a1", replay=ReplayCache())
    with pytest.raises((PayloadError, SecurityError)):
        receive(keys, encode_envelope(token) if isinstance(token, str) and token else b"{}")


@SETTINGS
@given(
    header=st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"alg": st.sampled_from(["ES256", "none", "HS256", "RS256"]), "typ": json_values},
            optional={"x5c": json_values, "crit": json_values, "b64": json_values},
        ),
    ),
    payload=st.one_of(json_values, st.binary(max_size=64)),
    signature=st.binary(max_size=80),
    with_x5c=st.booleans(),
)
def test_three_part_tokens_with_arbitrary_parts(
    keys: Keys, header: Any, payload: Any, signature: bytes, with_x5c: bool
) -> None:
    if with_x5c and isinstance(header, dict):
        header = {**header, "typ": "sef-call+jws", "x5c": [keys.x5c.decode()]}
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    token = ".".join((b64(json.dumps(header).encode()), b64(body), b64(signature)))
    with pytest.raises(SecurityError):
        verify_call(keys.agent, token, topic="I/M", audience="agent:a1", replay=ReplayCache())


@SETTINGS
@given(
    claims=st.dictionaries(
        st.sampled_from(["iss", "aud", "iat", "exp", "jti", "top", "msg", "other"]),
        json_values,
        max_size=8,
    )
)
def test_validly_signed_arbitrary_claims(keys: Keys, claims: dict[str, Any]) -> None:
    """The signature verifies; whatever the claims say, only SecurityError comes out."""
    token = raw_token(keys.ems, claims)
    with pytest.raises(SecurityError):
        verify_call(keys.agent, token, topic="I/M", audience="agent:a1", replay=ReplayCache())


@SETTINGS
@given(
    msg=st.dictionaries(st.text(max_size=10), json_values, max_size=6),
    method=st.text(min_size=1, max_size=40),
    group=st.booleans(),
    lifetime=st.floats(min_value=0.001, max_value=300),
)
def test_valid_envelope_round_trips(
    keys: Keys, msg: dict[str, Any], method: str, group: bool, lifetime: float
) -> None:
    audience = "group:g1" if group else "agent:a1"
    topic = f"I/{method}"
    payload = encode_envelope(sign_call(keys.ems, topic, audience, msg, lifetime))
    got = verify_call(
        keys.agent,
        decode_envelope(payload),
        topic=topic,
        audience=audience,
        replay=ReplayCache(),
    )
    assert got.message == msg and got.topic == topic and got.issuer == "ems-1"
    assert got.expires_at - got.issued_at <= lifetime + 0.002
    reply = encode_envelope(sign_reply(keys.agent, "ems-1", msg))
    back = verify_reply(keys.ems, decode_envelope(reply), audience="ems-1", replay=ReplayCache())
    assert back.message == msg and back.signer.id == "a1"
    assert back.issued_at <= time.time() + 1

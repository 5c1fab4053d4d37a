"""Hypothesis against a real enrollment server: whatever the CSR field, the token, the
groups or the polled id and key hold, the answer is 202 or a 4xx with a JSON message,
never a 500, and the server keeps serving."""

from __future__ import annotations

import base64
import urllib.parse
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from enroll_stack import GENEROUS, csr_for, enrollment_server, request
from sef.enrollment import EnrollmentServer
from sef.security import CertificateAuthority

_, VALID_CSR = csr_for("fuzz-1")
VALID_DER = base64.b64decode("".join(VALID_CSR.strip().splitlines()[1:-1]))
BEGIN, END = "-----BEGIN CERTIFICATE REQUEST-----", "-----END CERTIFICATE REQUEST-----"


def _pem(der: bytes) -> str:
    return f"{BEGIN}\n{base64.encodebytes(der).decode()}{END}\n"


@st.composite
def mutated_der(draw: st.DrawFn) -> str:
    """The valid CSR with some bytes changed, cut or inserted."""
    der = bytearray(VALID_DER)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert"]))
        at = draw(st.integers(0, len(der) - 1))
        if kind == "flip":
            der[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del der[at:]
            if not der:
                break
        else:
            der[at:at] = draw(st.binary(min_size=1, max_size=8))
    return _pem(bytes(der))


CSR_FIELD = st.one_of(
    st.text(max_size=2000),
    st.binary(max_size=1500).map(_pem),
    mutated_der(),
    st.sampled_from([VALID_CSR.replace("\n", "\r\n"), VALID_CSR * 2, BEGIN, END, ""]),
)
NAMES = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=0, max_size=80
)


def _check(status: int, body: dict[str, Any]) -> None:
    assert status == 202 or 400 <= status < 500, (status, body)
    if status >= 400:
        assert isinstance(body.get("error"), str) and body["error"], body


def test_fuzzed_enrollment_requests_never_crash_the_server(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "pki", "SEF test CA")
    with enrollment_server(ca.root, GENEROUS) as server:

        @settings(
            max_examples=150,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(
            csr=CSR_FIELD,
            token=st.one_of(st.none(), NAMES),
            groups=st.one_of(st.just([]), st.lists(NAMES, max_size=3), NAMES),
            home=st.one_of(st.none(), NAMES, st.integers()),
        )
        def enroll_field(csr: str, token: str | None, groups: Any, home: Any) -> None:
            body: dict[str, Any] = {"csr": csr, "groups": groups, "home": home}
            if token is not None:
                body["token"] = token
            _check(*request(server, "POST", "/enroll", body)[:2])

        enroll_field()
        _still_serving(server)


def test_fuzzed_polls_never_crash_the_server(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "pki", "SEF test CA")
    with enrollment_server(ca.root, GENEROUS) as server:

        @settings(
            max_examples=100,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(identity=NAMES.filter(bool), key=NAMES)
        @example(identity="/", key="")  # /enroll/%2F was a 307 redirect (seen in CI)
        def poll(identity: str, key: str) -> None:
            path = f"/enroll/{urllib.parse.quote(identity, safe='')}"
            status, body, _ = request(server, "GET", f"{path}?key={urllib.parse.quote(key)}")
            assert 400 <= status < 500, (status, body)
            assert body["error"]

        poll()
        _still_serving(server)


def _still_serving(server: EnrollmentServer) -> None:
    _, csr = csr_for("fuzz-after")
    status, body, _ = request(server, "POST", "/enroll", {"csr": csr})
    assert status == 202 and body["status"] == "pending"

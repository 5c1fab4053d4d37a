"""The enrollment server over real HTTPS with a real CA: queue → approve → certificate,
claim tokens, bad input (4xx with a message, never a 500), limits and the CRL."""

from __future__ import annotations

import base64
import datetime as dt
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

import sef.enrollment._server as enrollment_server_module
from enroll_stack import GENEROUS, csr_for, enrollment_server, request
from sef.enrollment import EnrollLimits, EnrollmentServer, key_fingerprint
from sef.security import (
    CertificateAuthority,
    EnrolledFiles,
    EnrollmentError,
    Role,
    Security,
    TrustStore,
    enroll,
    load_certificate,
)
from sef.security._enroll_client import server_tls


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path / "pki", "SEF test CA")


def _private_markers(key_path: Path) -> list[bytes]:
    """Byte strings that only a copy of this private key would contain."""
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    pem_lines = key_path.read_bytes().splitlines()
    # the PEM's first base64 line starts with the PKCS#8 header every P-256 key shares
    return [scalar, scalar.hex().encode(), base64.b64encode(scalar), pem_lines[2]]


def test_queued_request_is_approved_and_the_key_never_reaches_the_server(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    out = tmp_path / "agent"
    with enrollment_server(ca.root) as server:
        result: list[EnrolledFiles | BaseException] = []
        fingerprints: list[str] = []

        def run() -> None:
            try:
                result.append(
                    enroll(
                        server.url,
                        ca.ca_path,
                        "bat-1",
                        out,
                        groups=("heaters",),
                        home="home-7",
                        poll_s=0.1,
                        wait_s=30,
                        on_pending=fingerprints.append,
                    )
                )
            except BaseException as exc:
                result.append(exc)

        client = threading.Thread(target=run)
        client.start()
        deadline = time.monotonic() + 20
        while not ca.pending() and time.monotonic() < deadline:
            time.sleep(0.02)
        (request_,) = ca.pending()
        assert request_.id == "bat-1"
        assert (request_.groups, request_.home) == (("heaters",), "home-7")
        # the server queues the request before its answer reaches the client's thread
        while not fingerprints and time.monotonic() < deadline:
            time.sleep(0.02)
        assert fingerprints == [request_.key_fingerprint]
        # while pending, the poll answers 202 only to whoever knows the key's fingerprint
        status, body, _ = request(server, "GET", f"/enroll/bat-1?key={request_.key_fingerprint}")
        assert (status, body["status"]) == (202, "pending")
        status, body, _ = request(server, "GET", f"/enroll/bat-1?key={'0' * 64}")
        assert status == 404 and "no enrollment request" in body["error"]
        status, body, _ = request(server, "GET", "/enroll/bat-1")
        assert status == 400 and "fingerprint" in body["error"]
        ca.approve("bat-1")
        client.join(30)
    (files,) = result
    assert isinstance(files, EnrolledFiles), files
    assert files.options() == f"--cert {out}/cert.pem --key {out}/key.pem --ca {out}/ca.crt"
    assert (files.key.stat().st_mode & 0o777) == 0o600
    security = Security.load(files.cert, files.key, files.ca)
    assert security.identity.id == "bat-1"
    assert (security.identity.groups, security.identity.home) == (("heaters",), "home-7")
    assert key_fingerprint(security.cert.public_key()) == request_.key_fingerprint
    # no copy of the agent's private key anywhere under the PKI directory
    assert not ca.key_path("bat-1").exists()
    markers = _private_markers(files.key)
    for path in ca.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(marker in data for marker in markers), path


def test_a_second_run_with_the_same_directory_resumes_and_gets_the_certificate(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    out = tmp_path / "agent"
    with enrollment_server(ca.root) as server:
        with pytest.raises(EnrollmentError, match="still waits for approval") as pending:
            enroll(server.url, ca.ca_path, "bat-2", out, wait_s=0.2, poll_s=0.05)
        assert pending.value.status == 202
        key_before = (out / "key.pem").read_bytes()
        ca.approve("bat-2")
        files = enroll(server.url, ca.ca_path, "bat-2", out, wait_s=5, poll_s=0.05)
    assert files.key.read_bytes() == key_before
    assert Security.load(files.cert, files.key, files.ca).identity.id == "bat-2"


def test_claim_token_approves_at_once_only_once_and_only_for_its_identity(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    token = ca.create_token("bat-3", groups=("g1",), home="h1")
    other = ca.create_token("bat-4")
    with enrollment_server(ca.root) as server:
        files = enroll(server.url, ca.ca_path, "bat-3", tmp_path / "a", token=token, wait_s=0)
        identity = Security.load(files.cert, files.key, files.ca).identity
        assert (identity.groups, identity.home) == (("g1",), "h1")
        _, csr = csr_for("bat-3")
        status, body, _ = request(server, "POST", "/enroll", {"csr": csr, "token": token})
        assert status == 403 and "already used" in body["error"]
        _, csr = csr_for("bat-3")
        status, body, _ = request(server, "POST", "/enroll", {"csr": csr, "token": other})
        assert status == 403 and "is for 'bat-4'" in body["error"]
        _, csr = csr_for("bat-5")
        status, body, _ = request(server, "POST", "/enroll", {"csr": csr, "token": "x" * 20})
        assert status == 403 and "unknown" in body["error"]
    assert not ca.pending()
    assert set(ca.current()) == {"bat-3", "enroll-server"}


def _bad_signature_csr() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bat-9")]))
        .sign(key, hashes.SHA256())
    )
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # inside the ECDSA signature's last integer
    body = base64.encodebytes(bytes(der)).decode()
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"


def _rsa_csr() -> str:
    key = rsa.generate_private_key(65537, 2048)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bat-9")]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"csr": "garbage"}, 400, "not a PEM"),
        ({"csr": "BAD_SIGNATURE"}, 400, ""),
        ({"csr": "RSA"}, 400, "P-256"),
        ({}, 400, "'csr'"),
        ({"csr": "x", "extra": 1}, 400, "unknown fields"),
        ({"csr": "x", "groups": "g1"}, 400, "'groups'"),
        ({"csr": "VALID", "groups": ["bad/group"]}, 400, "invalid group"),
        ({"csr": "VALID", "home": "-h"}, 400, "invalid home"),
        ({"csr": "x", "token": 5}, 400, "'token'"),
        ([1, 2], 400, "JSON object"),
    ],
)
def test_bad_enrollment_requests_get_4xx_with_a_message(
    ca: CertificateAuthority, body: object, status: int, words: str
) -> None:
    if isinstance(body, dict) and body.get("csr") == "BAD_SIGNATURE":
        body["csr"] = _bad_signature_csr()
    if isinstance(body, dict) and body.get("csr") == "RSA":
        body["csr"] = _rsa_csr()
    if isinstance(body, dict) and body.get("csr") == "VALID":
        body["csr"] = csr_for("bat-9")[1]
    with enrollment_server(ca.root) as server:
        got, answer, _ = request(server, "POST", "/enroll", body)
    assert got == status, answer
    assert words in answer["error"]
    assert not ca.pending()


def test_bad_signature_is_refused_as_such(ca: CertificateAuthority) -> None:
    with enrollment_server(ca.root) as server:
        status, body, _ = request(server, "POST", "/enroll", {"csr": _bad_signature_csr()})
    assert status == 400
    assert "signature" in body["error"] or "PEM" in body["error"]


def test_oversized_and_malformed_bodies(ca: CertificateAuthority) -> None:
    with enrollment_server(ca.root) as server:
        status, body, _ = request(server, "POST", "/enroll", raw=b"x" * (1024 * 1024))
        assert status == 413 and "16384" in body["error"]
        status, body, _ = request(server, "POST", "/enroll", raw=b"{not json")
        assert status == 400 and "not JSON" in body["error"]
        status, body, _ = request(server, "GET", "/nowhere")
        assert status == 404 and body["error"]
        status, body, _ = request(server, "DELETE", "/enroll")
        assert status == 405 and body["error"]
        status, body, _ = request(server, "GET", "/enroll/..%2Fca?key=" + "0" * 64)
        assert status in (400, 404) and body["error"]
        status, body, _ = request(server, "GET", "/enroll/bat-1?key=zz")
        assert status == 400 and "fingerprint" in body["error"]
        # still serving
        _, csr = csr_for("bat-10")
        status, body, _ = request(server, "POST", "/enroll", {"csr": csr})
        assert status == 202


def test_another_key_for_a_pending_identity_is_refused(ca: CertificateAuthority) -> None:
    with enrollment_server(ca.root) as server:
        _, first = csr_for("bat-11")
        assert request(server, "POST", "/enroll", {"csr": first})[0] == 202
        assert request(server, "POST", "/enroll", {"csr": first})[0] == 202  # same key: fine
        _, second = csr_for("bat-11")
        status, body, _ = request(server, "POST", "/enroll", {"csr": second})
    assert status == 409 and "reject it first" in body["error"]
    (pending,) = ca.pending()
    assert pending.csr_pem.strip() == first.strip()


def test_identities_of_other_roles_cannot_be_enrolled(ca: CertificateAuthority) -> None:
    ca.issue("ems-1", Role.EMS)
    with enrollment_server(ca.root) as server:
        for identity, role in (("ems-1", "ems"), ("enroll-server", "broker")):
            _, csr = csr_for(identity)
            status, body, _ = request(server, "POST", "/enroll", {"csr": csr})
            assert status == 409 and f"identity of a {role}" in body["error"]
    assert not ca.pending()


def test_requests_beyond_the_rate_limit_get_429(ca: CertificateAuthority) -> None:
    limits = EnrollLimits(enroll_burst=3, enroll_per_s=0.01, poll_burst=2, poll_per_s=0.01)
    with enrollment_server(ca.root, limits) as server:
        statuses = [request(server, "POST", "/enroll", {"csr": "x"})[0] for _ in range(4)]
        assert statuses == [400, 400, 400, 429]
        status, body, headers = request(server, "POST", "/enroll", {"csr": "x"})
        assert status == 429 and "too many requests" in body["error"]
        assert int(headers["retry-after"]) >= 1
        polls = [request(server, "GET", "/crl")[0] for _ in range(3)]
        assert polls == [200, 200, 429]


def test_crl_endpoint_serves_the_current_signed_list(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    cert, _ = ca.issue("bat-12", Role.AGENT)
    with enrollment_server(ca.root, GENEROUS) as server:
        status, body, headers = request(server, "GET", "/crl")
        assert status == 200 and headers["content-type"].startswith("application/x-pem-file")
        trust = TrustStore(ca.cert)
        trust.set_crl(body["_text"].encode())
        assert not trust.is_revoked(cert.serial_number)
        time.sleep(1.1)  # CRL times have one-second resolution
        ca.revoke("bat-12")
        status, body, _ = request(server, "GET", "/crl")
        trust.set_crl(body["_text"].encode())
        assert trust.is_revoked(cert.serial_number)


def test_client_refuses_a_server_from_another_ca(ca: CertificateAuthority, tmp_path: Path) -> None:
    other = CertificateAuthority.init(tmp_path / "other", "another CA")
    with (
        enrollment_server(ca.root) as server,
        pytest.raises(EnrollmentError, match=r"CERTIFICATE_VERIFY_FAILED|verify failed"),
    ):
        enroll(server.url, other.ca_path, "bat-13", tmp_path / "a", wait_s=0)
    assert not ca.pending()


def test_queue_only_server_without_the_ca_key(ca: CertificateAuthority, tmp_path: Path) -> None:
    """An offline CA: the enrollment host has no ca.key; it queues, the operator approves
    on the CA host and copies the certificate back."""
    token = ca.create_token("bat-14")
    with enrollment_server(ca.root):  # issues the server certificate while the key is here
        pass
    online = tmp_path / "ca-host"
    shutil.copytree(ca.root, online)
    (ca.root / "ca.key").unlink()
    with enrollment_server(ca.root) as server:
        assert not server.service.online
        _, csr = csr_for("bat-14")
        status, body, _ = request(server, "POST", "/enroll", {"csr": csr, "token": token})
        assert status == 503 and "offline CA" in body["error"]
        key, csr = csr_for("bat-15")
        assert request(server, "POST", "/enroll", {"csr": csr})[0] == 202
        # the operator carries the request to the CA host, approves, carries the cert back
        shutil.copy(ca.root / "pending" / "bat-15.json", online / "pending" / "bat-15.json")
        CertificateAuthority.open(online).approve("bat-15")
        shutil.copy(online / "issued" / "bat-15.crt", ca.root / "issued" / "bat-15.crt")
        fingerprint = key_fingerprint(key.public_key())
        status, body, _ = request(server, "GET", f"/enroll/bat-15?key={fingerprint}")
    assert status == 200 and body["status"] == "issued"
    assert load_certificate(body["certificate"].encode()).public_key() == key.public_key()


def _served_serial(server: EnrollmentServer) -> int:
    context = server_tls(server.service.root / "ca.crt")
    with (
        socket.create_connection(("127.0.0.1", server.port)) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return load_certificate(der).serial_number


def test_running_server_reissues_its_certificate_before_it_ends(
    ca: CertificateAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every certificate counts as too close to its end, checked every 0.2 s
    monkeypatch.setattr(enrollment_server_module, "RENEW_BEFORE", dt.timedelta(days=3650))
    monkeypatch.setattr(enrollment_server_module, "CERT_CHECK_S", 0.2)
    with enrollment_server(ca.root) as server:
        first = _served_serial(server)
        deadline = time.monotonic() + 20
        while _served_serial(server) == first:
            assert time.monotonic() < deadline, "the server kept its first certificate"
            time.sleep(0.2)
        _, csr = csr_for("bat-16")
        assert request(server, "POST", "/enroll", {"csr": csr})[0] == 202
    assert ca.current()["enroll-server"].serial != first

"""``sef agent virtual-battery --enroll-url`` and ``sef ems --enroll-url``: a running
process whose certificate is past two thirds of its lifetime renews it at the enrollment
server, writes the new pair over --cert/--key and stays connected to the mutual-TLS
broker."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from enroll_stack import GENEROUS, enrollment_server
from secure_stack import running_secure_broker
from sef.security import (
    CertificateAuthority,
    Role,
    Security,
    load_certificate,
    load_private_key,
    new_private_key,
    profile_uris,
    write_private,
)
from sef.security._keys import key_pem


def aged_certificate(
    ca: CertificateAuthority, identity: str, out: Path, role: Role = Role.AGENT
) -> int:
    """Issue ``identity`` (an agent in group g1, or ``role``) a 90-day certificate that
    started 61 days ago,
    so it is due for renewal now; recorded in the CA's index like any other. Writes
    ``out/cert.pem`` and ``out/key.pem``; returns its serial."""
    ca_key = load_private_key(ca.root / "ca.key")
    key = new_private_key()
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=61)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(u)
                    for u in profile_uris(role, ("g1",) if role is Role.AGENT else ())
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca._record(cert)  # the CA's own bookkeeping, as if it had issued it 61 days ago
    out.mkdir()
    (out / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_private(out / "key.pem", key_pem(key))
    return cert.serial_number


def renews_while_running(
    ca: CertificateAuthority, tmp_path: Path, identity: str, role: Role, args: list[str]
) -> tuple[Path, str]:
    """Run ``sef ARGS`` with an aged certificate of ``identity`` and ``--enroll-url`` until
    its certificate file holds a new one; returns the credentials dir and its stderr."""
    out = tmp_path / identity
    old_serial = aged_certificate(ca, identity, out, role)
    with (
        running_secure_broker(ca, tmp_path) as broker,
        enrollment_server(ca.root, GENEROUS) as server,
    ):
        command = [
            sys.executable, "-m", "sef", "-l", "INFO", *args, "--broker", broker.url,
            "--cert", str(out / "cert.pem"), "--key", str(out / "key.pem"),
            "--ca", str(ca.ca_path), "--enroll-url", server.url,
        ]  # fmt: skip
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "COLUMNS": "300"},
        )
        try:
            deadline = time.monotonic() + 30
            while load_certificate((out / "cert.pem").read_bytes()).serial_number == (old_serial):
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "no renewal within 30 s"
                time.sleep(0.1)
            time.sleep(1.0)
            assert process.poll() is None
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=20)
    return out, " ".join(stderr.split())


def test_agent_process_renews_with_enroll_url(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "pki", "SEF test CA")
    args = ["agent", "virtual-battery", "--id", "bat-v", "--step", "1"]
    agent_dir, text = renews_while_running(ca, tmp_path, "bat-v", Role.AGENT, args)
    renewed = Security.load(agent_dir / "cert.pem", agent_dir / "key.pem", ca.ca_path)
    assert renewed.identity.id == "bat-v" and renewed.identity.groups == ("g1",)
    assert ca.current()["bat-v"].serial == renewed.identity.serial
    assert "renewed the certificate of 'bat-v'" in text
    assert "cannot connect" not in text and "connection lost" not in text.lower()


def test_ems_process_renews_with_enroll_url(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "pki", "SEF test CA")
    ems_dir, text = renews_while_running(ca, tmp_path, "ems-r", Role.EMS, ["ems"])
    renewed = Security.load(ems_dir / "cert.pem", ems_dir / "key.pem", ca.ca_path)
    assert renewed.identity.id == "ems-r" and renewed.identity.role is Role.EMS
    assert ca.current()["ems-r"].serial == renewed.identity.serial
    assert "renewed the certificate of 'ems-r'" in text
    assert "cannot connect" not in text and "connection lost" not in text.lower()

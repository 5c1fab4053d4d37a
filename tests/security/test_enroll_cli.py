"""``sef enroll-server`` and ``sef enroll`` as processes: a claim token enrolls at once;
without one the request waits (exit 2) until ``sef pki approve``, and a second run with
the same directory gets the certificate; a server from another CA is refused (exit 1)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from enroll_stack import enrollment_server
from sef.broker import free_port
from sef.cli import app
from sef.security import CertificateAuthority, Security


def sef(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sef", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "COLUMNS": "200"},
    )


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path / "pki", "SEF test CA")


@pytest.fixture
def server_url(ca: CertificateAuthority) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "sef", "enroll-server", "--pki", str(ca.root), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "enroll-server did not listen"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
        assert process.returncode == 0, stderr
        assert "enrollment server on https://127.0.0.1" in stderr


def test_enroll_with_a_claim_token(
    ca: CertificateAuthority, server_url: str, tmp_path: Path
) -> None:
    token = ca.create_token("bat-1", groups=("g1",), home="h1")
    out = tmp_path / "agent"
    done = sef(
        "enroll", "--url", server_url, "--ca", str(ca.ca_path), "--id", "bat-1",
        "--out", str(out), "--token", token,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (f"--cert {out}/cert.pem --key {out}/key.pem --ca {out}/ca.crt")
    assert "enrolled bat-1" in done.stderr
    identity = Security.load(out / "cert.pem", out / "key.pem", out / "ca.crt").identity
    assert (identity.id, identity.groups, identity.home) == ("bat-1", ("g1",), "h1")
    assert (out / "key.pem").stat().st_mode & 0o777 == 0o600


def test_enroll_waits_for_the_operator_then_resumes(
    ca: CertificateAuthority, server_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "agent"
    args = ("enroll", "--url", server_url, "--ca", str(ca.ca_path), "--id", "bat-2",
            "--out", str(out), "--group", "g2", "--poll-s", "0.1")  # fmt: skip
    waited = sef(*args, "--wait-s", "0.5")
    assert waited.returncode == 2, waited.stderr
    assert "pending" in waited.stderr and "sef pki approve bat-2" in waited.stderr
    (request,) = ca.pending()
    assert request.key_fingerprint in waited.stderr.replace("\n", "")
    approved = sef("pki", "approve", "bat-2", "--dir", str(ca.root))
    assert approved.returncode == 0, approved.stderr + approved.stdout
    done = sef(*args, "--wait-s", "10")
    assert done.returncode == 0, done.stderr
    identity = Security.load(out / "cert.pem", out / "key.pem", out / "ca.crt").identity
    assert (identity.id, identity.groups) == ("bat-2", ("g2",))


def test_enroll_refuses_a_server_of_another_ca(
    ca: CertificateAuthority, server_url: str, tmp_path: Path
) -> None:
    other = CertificateAuthority.init(tmp_path / "other", "another CA")
    done = sef(
        "enroll", "--url", server_url, "--ca", str(other.ca_path), "--id", "bat-3",
        "--out", str(tmp_path / "agent"), "--wait-s", "0",
    )  # fmt: skip
    assert done.returncode == 1
    assert "certificate verify failed" in done.stderr.replace("\n", " ")
    assert not ca.pending()


def test_enroll_server_without_a_ca_says_so(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    done = sef("enroll-server", "--pki", str(tmp_path / "empty"), "--port", "0")
    assert done.returncode == 1
    assert "no CA certificate" in done.stderr


def test_enroll_in_process_pending_then_token(ca: CertificateAuthority, tmp_path: Path) -> None:
    """The same command run in this process (typer's runner) against a server thread."""
    runner = CliRunner()
    env = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    with enrollment_server(ca.root) as server:
        base = ["enroll", "--url", server.url, "--ca", str(ca.ca_path), "--id", "bat-4"]
        waited = runner.invoke(
            app, [*base, "--out", str(tmp_path / "a"), "--wait-s", "0", "--poll-s", "0.1"], env=env
        )
        assert waited.exit_code == 2, waited.output
        assert "still waits for approval" in " ".join(waited.output.split())
        ca.reject("bat-4")
        token = ca.create_token("bat-4")
        done = runner.invoke(app, [*base, "--out", str(tmp_path / "b"), "--token", token], env=env)
        assert done.exit_code == 0, done.output
        assert f"--cert {tmp_path}/b/cert.pem" in done.output
        again = runner.invoke(app, [*base, "--out", str(tmp_path / "c"), "--token", token], env=env)
        assert again.exit_code == 1
        assert "already used" in " ".join(again.output.split())

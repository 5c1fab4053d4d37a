"""``sef pki``: the operator's commands on a real CA directory (typer's CliRunner), and
``revoke --broker-dir`` against a running Mosquitto."""

from __future__ import annotations

import datetime as dt
import signal
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from typer.testing import CliRunner, Result

from secure_stack import Probe, make_pki, running_secure_broker, security_for, wait_until
from sef.cli import app
from sef.security import (
    CertificateAuthority,
    Role,
    SecurityError,
    identity_of,
    load_certificate,
    load_private_key,
    make_csr,
    new_private_key,
)

runner = CliRunner()


def sef(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, ["pki", *map(str, args)], env=env)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def pki_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    result = sef("init", "--dir", directory, "--name", "Test CA")
    assert result.exit_code == 0, result.output
    return directory


def test_init_writes_a_ca_with_a_private_key(pki_dir: Path) -> None:
    assert mode(pki_dir / "ca.key") == 0o600
    ca = CertificateAuthority.open(pki_dir)
    assert ca.cert.subject.rfc4514_string() == "CN=Test CA"
    assert (pki_dir / "crl.pem").is_file()


def test_init_refuses_to_overwrite_a_ca(pki_dir: Path) -> None:
    key = (pki_dir / "ca.key").read_bytes()
    result = sef("init", "--dir", pki_dir)
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0  # one clear line
    assert "already holds a CA" in result.stderr
    assert (pki_dir / "ca.key").read_bytes() == key


def test_issue_prints_the_paths_and_the_certificate_carries_the_profile(pki_dir: Path) -> None:
    result = sef(
        "issue", "--dir", pki_dir, "--role", "agent", "bat-7", "--group", "g1",
        "--group", "g2", "--home", "h3", "--days", "30",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    cert_path = pki_dir / "issued" / "bat-7.crt"
    key_path = pki_dir / "private" / "bat-7.key"
    assert str(cert_path) in result.stdout and str(key_path) in result.stdout
    assert mode(key_path) == 0o600
    identity = identity_of(load_certificate(cert_path.read_bytes()))
    assert (identity.id, identity.role, identity.groups, identity.home) == (
        "bat-7", Role.AGENT, ("g1", "g2"), "h3",
    )  # fmt: skip
    assert 29 <= (identity.not_after - identity.not_before).days <= 31


def test_issue_a_broker_with_host_names(pki_dir: Path) -> None:
    result = sef(
        "issue", "--dir", pki_dir, "--role", "broker", "mqtt-1", "--host", "mqtt.example",
        "--host", "10.0.0.5",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    cert = load_certificate((pki_dir / "issued" / "mqtt-1.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mqtt.example"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--role", "ems", "bad id"], "invalid identity"),
        (["--role", "ems", "ems-1", "--group", "g1"], "only agents have groups"),
        (["--role", "operator", "op", "--home", "h1"], "only agents and gateways have a home"),
        (["--role", "agent", "a", "--group", "no/slash"], "invalid group"),
        (["--role", "agent", "a", "--days", "0"], "lifetime 0 days"),
    ],
)
def test_issue_refusals_print_one_line_and_exit_2(
    pki_dir: Path, args: list[str], message: str
) -> None:
    result = sef("issue", "--dir", pki_dir, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_a_gateway_without_a_home_is_warned_about(pki_dir: Path) -> None:
    result = sef("issue", "--dir", pki_dir, "--role", "gateway", "gw-1")
    assert result.exit_code == 0
    assert "without --home gets no rights" in result.stderr


def test_an_unknown_role_is_a_usage_error(pki_dir: Path) -> None:
    result = sef("issue", "--dir", pki_dir, "--role", "king", "x")
    assert result.exit_code == 2
    assert "king" in result.output


def test_no_ca_in_the_directory(tmp_path: Path) -> None:
    result = sef("list", "--dir", tmp_path / "nothing")
    assert result.exit_code == 2
    assert "no CA in" in result.stderr


def test_the_directory_comes_from_sef_pki_dir(pki_dir: Path) -> None:
    result = sef("issue", "--role", "ems", "ems-1", env={"SEF_PKI_DIR": str(pki_dir)})
    assert result.exit_code == 0, result.output
    assert "ems-1" in CertificateAuthority.open(pki_dir).current()


def test_list_and_revoke(pki_dir: Path) -> None:
    for args in (["--role", "agent", "bat-1", "--group", "g1"], ["--role", "ems", "ems-1"]):
        assert sef("issue", "--dir", pki_dir, *args).exit_code == 0
    listed = sef("list", "--dir", pki_dir)
    assert listed.exit_code == 0
    assert "bat-1" in listed.stdout and "ems-1" in listed.stdout and "g1" in listed.stdout
    assert "revoked" not in listed.stdout

    serial = CertificateAuthority.open(pki_dir).current()["bat-1"].serial
    result = sef("revoke", "--dir", pki_dir, "bat-1")
    assert result.exit_code == 0, result.output
    assert "reload" in result.stdout  # components must be told
    crl = x509.load_pem_x509_crl((pki_dir / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    listed = sef("list", "--dir", pki_dir)
    line = next(line for line in listed.stdout.splitlines() if "bat-1" in line)
    assert "revoked" in line

    again = sef("revoke", "--dir", pki_dir, "bat-1")
    assert again.exit_code == 2
    assert "no unrevoked certificate" in again.stderr


def test_pending_approve_and_reject(pki_dir: Path) -> None:
    ca = CertificateAuthority.open(pki_dir)
    key = new_private_key()
    ca.submit(make_csr("heater-3", key), groups=("asked",), home="h9")
    ca.submit(make_csr("stranger", new_private_key()))
    listed = sef("pending", "--dir", pki_dir)
    assert listed.exit_code == 0
    assert "heater-3" in listed.stdout and "stranger" in listed.stdout

    approved = sef("approve", "--dir", pki_dir, "heater-3", "--group", "heaters")
    assert approved.exit_code == 0, approved.output
    cert = load_certificate((pki_dir / "issued" / "heater-3.crt").read_bytes())
    identity = identity_of(cert)
    assert identity.groups == ("heaters",) and identity.home == "h9"
    public = cert.public_key()
    assert public == key.public_key()  # the agent's own key: it never left the agent
    assert not (pki_dir / "private" / "heater-3.key").exists()

    assert sef("reject", "--dir", pki_dir, "stranger").exit_code == 0
    assert "no pending enrollment requests" in sef("pending", "--dir", pki_dir).stdout
    for command in ("approve", "reject"):
        result = sef(command, "--dir", pki_dir, "stranger")
        assert result.exit_code == 2
        assert "no pending enrollment request" in result.stderr


def test_token_is_one_time(pki_dir: Path) -> None:
    result = sef("token", "--dir", pki_dir, "bat-9", "--group", "g4", "--home", "h1")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert len(token) >= 32 and token not in (pki_dir / "tokens.json").read_text()
    assert mode(pki_dir / "tokens.json") == 0o600
    ca = CertificateAuthority.open(pki_dir)
    csr = make_csr("bat-9", new_private_key())
    identity = identity_of(ca.redeem(csr, token))
    assert (identity.id, identity.groups, identity.home) == ("bat-9", ("g4",), "h1")
    with pytest.raises(SecurityError, match="already used"):
        ca.redeem(csr, token)


def test_broker_config_writes_the_broker_directory(pki_dir: Path, tmp_path: Path) -> None:
    sef("issue", "--dir", pki_dir, "--role", "agent", "bat-1")
    out = tmp_path / "broker"
    result = sef(
        "broker-config", "--dir", pki_dir, "--out", out, "--port", "18999", "--host", "mqtt.lan",
        "--root", "site", "--bind", "127.0.0.1", "--user", "root",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    conf = (out / "mosquitto.conf").read_text().splitlines()
    for line in (
        "listener 18999 127.0.0.1", "require_certificate true", "use_identity_as_username true",
        "use_username_as_clientid true", "allow_anonymous false", "tls_version tlsv1.2",
        f"acl_file {out / 'acl'}", f"crlfile {out / 'crl.pem'}", "per_listener_settings false",
    ):  # fmt: skip
        assert line in conf
    assert "topic write site/agents/bat-1/status" in (out / "acl").read_text()
    assert mode(out / "broker.key") == 0o600
    identity = identity_of(load_certificate((out / "broker.crt").read_bytes()))
    assert identity.role is Role.BROKER

    # run again: the broker keeps its certificate, the ACL follows the CA
    first = (out / "broker.crt").read_bytes()
    assert sef("broker-config", "--dir", pki_dir, "--out", out, "--root", "site").exit_code == 0
    assert (out / "broker.crt").read_bytes() == first

    bad = sef("broker-config", "--dir", pki_dir, "--out", out, "--root", "a/#")
    assert bad.exit_code == 2 and "invalid topic root" in bad.stderr


def test_revoke_with_broker_dir_reloads_the_running_broker(tmp_path: Path) -> None:
    ca = make_pki(tmp_path, [("bat-1", Role.AGENT, (), None)])
    context = security_for(ca, "bat-1", Role.AGENT).client_tls()
    with running_secure_broker(ca, tmp_path) as broker:
        before = Probe(broker.port, context, "bat-1")
        assert before.connect() == "connected"
        before.close()
        result = sef("revoke", "--dir", ca.root, "bat-1", "--broker-dir", broker.files.dir)
        assert result.exit_code == 0, result.output
        assert f"pid {broker.process.pid}" in result.stdout
        assert "user bat-1" not in broker.files.acl.read_text()
        wait_until(lambda: "Reloading config" in broker.log_text)
        after = Probe(broker.port, context, "bat-1")
        outcome = after.connect()
        after.close()
        assert outcome != "connected"


def test_approve_with_broker_dir_rewrites_the_acl(pki_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "broker"
    assert sef("broker-config", "--dir", pki_dir, "--out", out).exit_code == 0
    CertificateAuthority.open(pki_dir).submit(make_csr("heater-1", new_private_key()))
    result = sef("approve", "--dir", pki_dir, "heater-1", "--group", "g5", "--broker-dir", out)
    assert result.exit_code == 0, result.output
    assert "no running Mosquitto" in result.stdout
    assert "topic read sef/groups/g5/call/#" in (out / "acl").read_text()
    bad = sef("issue", "--dir", pki_dir, "--role", "ems", "e", "--broker-dir", tmp_path)
    assert bad.exit_code == 2 and "not a broker directory" in bad.stderr
    assert "e" not in CertificateAuthority.open(pki_dir).current()  # refused before issuing


def test_an_expired_crl_locks_everyone_out_until_sef_pki_crl(tmp_path: Path) -> None:
    """OpenSSL refuses every client certificate once the broker's CRL is past its next
    update (7 days after signing): ``sef pki crl --broker-dir`` re-signs it and reloads."""
    ca = make_pki(tmp_path, [("bat-1", Role.AGENT, (), None)])
    context = security_for(ca, "bat-1", Role.AGENT).client_tls()
    with running_secure_broker(ca, tmp_path) as broker:
        now = dt.datetime.now(dt.UTC)
        expired = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca.cert.subject)
            .last_update(now - dt.timedelta(days=8))
            .next_update(now - dt.timedelta(days=1))
            .sign(load_private_key(ca.root / "ca.key"), hashes.SHA256())
        )
        broker.files.crl.write_bytes(expired.public_bytes(serialization.Encoding.PEM))
        reloads = broker.log_text.count("Reloading config")
        broker.process.send_signal(signal.SIGHUP)
        wait_until(lambda: broker.log_text.count("Reloading config") > reloads)
        locked_out = Probe(broker.port, context, "bat-1")
        assert locked_out.connect() != "connected"
        locked_out.close()

        result = sef("crl", "--dir", ca.root, "--broker-dir", broker.files.dir)
        assert result.exit_code == 0, result.output
        assert "valid until" in result.stdout and f"pid {broker.process.pid}" in result.stdout
        wait_until(lambda: broker.log_text.count("Reloading config") > reloads + 1)
        back = Probe(broker.port, context, "bat-1")
        assert back.connect() == "connected"
        back.close()

"""Every command that connects to the broker is secure by default: without ``--insecure``
it needs ``--cert/--key/--ca`` of the right role and identity and an ``mqtts://`` broker,
and refuses anything else with one line and exit code 2 before it connects anywhere
(typer's CliRunner, in process; the processes that do connect are in
``test_cli_secure_processes.py``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from secure_stack import make_pki
from sef.cli import app
from sef.security import CertificateAuthority, Role

runner = CliRunner()
CLEAN_ENV: dict[str, str | None] = {
    "SEF_CERT": None,
    "SEF_KEY": None,
    "SEF_CA": None,
    "SEF_CRL": None,
    "SEF_INSECURE": None,
    "COLUMNS": "200",
    "NO_COLOR": "1",
}

TLS = "mqtts://127.0.0.1:1"
PLAIN = "mqtt://127.0.0.1:1"


def command(name: str, broker: str) -> list[str]:
    """The command ``name`` without security options, against ``broker`` (never reached:
    every case here is refused before a connection)."""
    return {
        "ems": ["ems", "--broker", broker],
        "bis": ["bis", "--modbus", "tcp://127.0.0.1:1", "--id", "bat-1", "--broker", broker],
        "ucm": ["ucm", "--tcp", "127.0.0.1:1", "--id", "bat-1", "--broker", broker],
        "virtual-battery": ["agent", "virtual-battery", "--id", "bat-1", "--broker", broker],
        "agents": ["agents", "--broker", broker],
        "call": ["call", "bat-1", "edu.pdx.powerlab.demo.EnergyMethod", "--broker", broker],
        "gateway": ["gateway", "--uplink", broker, "--no-advertise"],
    }[name]


COMMANDS = ["ems", "bis", "ucm", "virtual-battery", "agents", "call", "gateway"]
ROLE_OF = {
    "ems": Role.EMS,
    "bis": Role.AGENT,
    "ucm": Role.AGENT,
    "virtual-battery": Role.AGENT,
    "agents": Role.OPERATOR,
    "call": Role.EMS,
    "gateway": Role.GATEWAY,
}


def sef(*args: str) -> Result:
    return runner.invoke(app, list(args), env=CLEAN_ENV)


def creds(ca: CertificateAuthority, identity: str) -> list[str]:
    return [
        *("--cert", str(ca.cert_path(identity))),
        *("--key", str(ca.key_path(identity))),
        *("--ca", str(ca.ca_path)),
        *("--crl", str(ca.crl_path)),
    ]


def refused(result: Result, *needles: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    text = result.stderr
    assert text.startswith("error:") and text.strip().count("\n") == 0, text  # one line
    for needle in needles:
        assert needle in text, (needle, text)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    ca = make_pki(
        tmp_path_factory.mktemp("cli-pki"),
        [
            ("ems-1", Role.EMS, (), None),
            ("bat-1", Role.AGENT, ("batteries",), "home-1"),
            ("ops-1", Role.OPERATOR, (), None),
            ("gw-1", Role.GATEWAY, (), "home-1"),
        ],
    )
    return ca


IDENTITY_OF = {Role.EMS: "ems-1", Role.AGENT: "bat-1", Role.OPERATOR: "ops-1"}
IDENTITY_OF[Role.GATEWAY] = "gw-1"


@pytest.mark.parametrize("name", COMMANDS)
def test_plain_text_broker_is_refused_without_insecure(name: str, ca: CertificateAuthority) -> None:
    identity = IDENTITY_OF[ROLE_OF[name]]
    refused(sef(*command(name, PLAIN), *creds(ca, identity)), PLAIN, "plain-text", "mqtts://")
    refused(sef(*command(name, PLAIN)), "plain-text", "--insecure")


@pytest.mark.parametrize("name", COMMANDS)
def test_missing_credentials_are_named(name: str, ca: CertificateAuthority) -> None:
    refused(sef(*command(name, TLS)), "--cert", "--key", "--ca", "sef pki issue", "--insecure")
    partial = creds(ca, IDENTITY_OF[ROLE_OF[name]])[:4]  # --cert and --key, no --ca
    result = sef(*command(name, TLS), *partial)
    refused(result, "--ca (or SEF_CA)")
    assert "--cert" not in result.stderr


@pytest.mark.parametrize("name", COMMANDS)
def test_a_certificate_of_the_wrong_role_is_refused(name: str, ca: CertificateAuthority) -> None:
    wrong = Role.AGENT if ROLE_OF[name] is not Role.AGENT else Role.EMS
    if name == "bis" or name == "ucm" or name == "virtual-battery":
        wrong = Role.GATEWAY
    identity = IDENTITY_OF[wrong]
    refused(
        sef(*command(name, TLS), *creds(ca, identity)),
        f"role {wrong.value}",
        ROLE_OF[name].value,
    )


@pytest.mark.parametrize("name", ["bis", "ucm", "virtual-battery"])
def test_an_agent_id_other_than_the_certificates_is_refused(
    name: str, ca: CertificateAuthority
) -> None:
    args = command(name, TLS)
    args[args.index("bat-1")] = "bat-2"
    refused(sef(*args, *creds(ca, "bat-1")), "'bat-2'", "'bat-1'")


def test_an_ems_id_other_than_the_certificates_is_refused(ca: CertificateAuthority) -> None:
    refused(sef("ems", "--broker", TLS, "--id", "ems-2", *creds(ca, "ems-1")), "'ems-2'")


def test_groups_outside_the_certificate_are_refused(ca: CertificateAuthority) -> None:
    args = [*command("virtual-battery", TLS), "--group", "batteries", "--group", "heaters"]
    refused(sef(*args, *creds(ca, "bat-1")), "heaters", "batteries")


def test_a_gateway_id_other_than_its_certificates_home_is_refused(
    ca: CertificateAuthority,
) -> None:
    args = [*command("gateway", TLS), "--id", "home-2", *creds(ca, "gw-1")]
    refused(sef(*args), "'home-2'", "'home-1'")


def test_credentials_that_do_not_check_out_are_refused(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    other = make_pki(tmp_path / "other", [("bat-1", Role.AGENT, (), None)])
    foreign = [
        *("--cert", str(other.cert_path("bat-1"))),
        *("--key", str(other.key_path("bat-1"))),
        *("--ca", str(ca.ca_path)),
    ]
    # same CA name, another key: the signature check catches it
    refused(sef(*command("virtual-battery", TLS), *foreign), "does not verify with the CA")
    loose = tmp_path / "loose.key"
    loose.write_bytes(ca.key_path("bat-1").read_bytes())
    os.chmod(loose, 0o644)
    args = creds(ca, "bat-1")
    args[args.index("--key") + 1] = str(loose)
    refused(sef(*command("virtual-battery", TLS), *args), "readable by group or others")
    args[args.index("--key") + 1] = str(tmp_path / "missing.key")
    refused(sef(*command("virtual-battery", TLS), *args), "missing.key", "does not exist")


def test_revoked_certificate_is_refused(tmp_path: Path) -> None:
    ca = make_pki(tmp_path, [("bat-9", Role.AGENT, (), None)])
    ca.revoke("bat-9")
    args = [*command("virtual-battery", TLS), *creds(ca, "bat-9")]
    args[args.index("bat-1")] = "bat-9"
    refused(sef(*args), "revoked")


def test_credentials_come_from_the_environment_too(ca: CertificateAuthority) -> None:
    env = {
        **CLEAN_ENV,
        "SEF_CERT": str(ca.cert_path("ems-1")),
        "SEF_KEY": str(ca.key_path("ems-1")),
        "SEF_CA": str(ca.ca_path),
    }
    result = runner.invoke(app, ["ems", "--broker", PLAIN], env=env)
    refused(result, "plain-text")
    result = runner.invoke(app, ["ems", "--broker", TLS, "--id", "ems-9"], env=env)
    refused(result, "'ems-9'", "'ems-1'")  # the certificate was loaded from SEF_*


def test_insecure_refuses_a_tls_url(ca: CertificateAuthority) -> None:
    refused(sef("ems", "--insecure", "--broker", TLS), "--insecure connects in plain text")

"""Real ``sef`` processes on a real Mosquitto in mutual-TLS + ACL mode: a secure ``sef ems``,
``sef agent virtual-battery`` and ``sef bis`` (with its battery emulator) come online with
their certificates, ``sef agents`` (operator certificate) lists them, and ``sef call``
(an EMS certificate of its own) commands both and gets their replies. And ``--insecure``
still works against a plain broker, saying so."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proc_support import SefProcess
from secure_stack import make_pki, running_secure_broker
from sef.broker import Mosquitto
from sef.security import CertificateAuthority, Role

DEMO = "edu.pdx.powerlab.demo"


def creds(ca: CertificateAuthority, identity: str) -> list[str]:
    return [
        *("--cert", str(ca.cert_path(identity))),
        *("--key", str(ca.key_path(identity))),
        *("--ca", str(ca.ca_path)),
        *("--crl", str(ca.crl_path)),
    ]


def sef_run(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sef", *args], capture_output=True, text=True, timeout=timeout_s
    )


@pytest.fixture
def procs() -> Iterator[list[SefProcess]]:
    started: list[SefProcess] = []
    yield started
    for proc in reversed(started):
        proc.kill()


def listed(broker: str, ca: CertificateAuthority) -> dict[str, dict[str, object]]:
    out = sef_run("agents", "--broker", broker, "--json", "--wait", "1", *creds(ca, "ops-1"))
    assert out.returncode == 0, out.stderr
    return {entry["id"]: entry for entry in json.loads(out.stdout)}


@pytest.mark.timeout(120)
def test_secure_ems_agents_and_call_over_mutual_tls(
    tmp_path: Path, procs: list[SefProcess]
) -> None:
    ca = make_pki(
        tmp_path,
        [
            ("ems-1", Role.EMS, (), None),
            ("ems-cli", Role.EMS, (), None),
            ("ops-1", Role.OPERATOR, (), None),
            ("vb-1", Role.AGENT, ("fleet",), None),
            ("bis-1", Role.AGENT, ("fleet",), None),
        ],
    )
    with running_secure_broker(ca, tmp_path) as broker:
        ems = SefProcess("ems", "--broker", broker.url, *creds(ca, "ems-1"))
        procs.append(ems)
        ems.wait_line(r"EMS ems-1 running on mqtts://")  # --id defaults to the identity
        vb = SefProcess(
            "agent", "virtual-battery", "--id", "vb-1", "--broker", broker.url,
            "--step", "0.2", *creds(ca, "vb-1"),
        )  # fmt: skip
        emulator = SefProcess("emulate", "battery", "--port", "0")
        procs += [vb, emulator]
        port = emulator.wait_line(r"listening on [\d.]+:(\d+)").group(1)
        bis = SefProcess(
            "bis", "--modbus", f"tcp://127.0.0.1:{port}", "--id", "bis-1",
            "--broker", broker.url, "--poll", "0.2", *creds(ca, "bis-1"),
        )  # fmt: skip
        procs.append(bis)
        for proc in (ems, vb, bis):
            assert "INSECURE" not in proc.output()

        deadline = time.monotonic() + 30
        while True:
            agents = listed(broker.url, ca)
            if all(agents.get(a, {}).get("status") == "online" for a in ("vb-1", "bis-1")):
                break
            assert time.monotonic() < deadline, agents
            time.sleep(0.5)
        assert agents["vb-1"]["groups"] == ["fleet"]  # from the certificate

        called = sef_run(
            "call", "group:fleet", f"{DEMO}.EnergyMethod", '[[["charge",1,60]]]',
            "--broker", broker.url, "--json", *creds(ca, "ems-cli"),
        )  # fmt: skip
        assert called.returncode == 0, called.stdout + called.stderr
        replies = json.loads(called.stdout)
        assert sorted(r["agent"] for r in replies if r["ok"]) == ["bis-1", "vb-1"]

        # only the EMS role sends calls: sef call refuses an agent certificate
        forged = sef_run(
            "call", "vb-1", f"{DEMO}.EnergyMethod", '[[["charge",1,60]]]', "--broker",
            broker.url, "--timeout", "2", *creds(ca, "bis-1"),
        )  # fmt: skip
        assert forged.returncode == 2 and "role agent" in forged.stderr


@pytest.mark.timeout(60)
def test_insecure_agent_says_so_and_works(mosquitto: Mosquitto, procs: list[SefProcess]) -> None:
    vb = SefProcess(
        "agent", "virtual-battery", "--insecure", "--id", "vb-open", "--broker", mosquitto.url,
        "--step", "0.2",
    )  # fmt: skip
    procs.append(vb)
    warning = vb.wait_line(r"WARNING.*INSECURE").group(0)
    assert "plain-text MQTT" in vb.output() and "For a lab only" in vb.output(), warning
    vb.wait_line(r"agent vb-open starting on mqtt://")
    deadline = time.monotonic() + 20
    while True:
        out = sef_run("agents", "--insecure", "--broker", mosquitto.url, "--json", "--wait", "1")
        assert out.returncode == 0, out.stderr
        assert "INSECURE" in out.stderr
        status = {e["id"]: e["status"] for e in json.loads(out.stdout)}
        if status.get("vb-open") == "online":
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.5)


@pytest.mark.timeout(60)
def test_an_agent_refuses_a_broker_of_another_ca(tmp_path: Path, procs: list[SefProcess]) -> None:
    """A TLS broker that cannot prove our CA's identity (its certificate is from another
    CA) is refused in the handshake, with the reason logged; the agent keeps retrying."""
    ours = make_pki(tmp_path / "ours", [("vb-2", Role.AGENT, (), None)])
    theirs = make_pki(tmp_path / "theirs")
    with running_secure_broker(theirs, tmp_path / "theirs") as foreign:
        vb = SefProcess(
            "agent", "virtual-battery", "--id", "vb-2", "--broker", foreign.url,
            *creds(ours, "vb-2"),
        )  # fmt: skip
        procs.append(vb)
        vb.wait_line(r"cannot connect vb-2 to mqtts://")
        assert "CERTIFICATE_VERIFY_FAILED" in vb.output() or "certificate verify" in vb.output()
        assert vb.process.poll() is None  # still running, retrying
        assert "New client connected" not in foreign.log_text


@pytest.mark.timeout(120)
def test_signed_telemetry_between_processes(tmp_path: Path, procs: list[SefProcess]) -> None:
    """``sef agent --sign-telemetry`` seals its telemetry; ``sef ems
    --require-signed-telemetry`` verifies the seals and stores the verdicts."""
    from sef.ems.store import Store

    ca = make_pki(tmp_path, [("ems-1", Role.EMS, (), None), ("vb-1", Role.AGENT, ("fleet",), None)])
    db = f"sqlite:///{tmp_path / 'ems.db'}"
    with running_secure_broker(ca, tmp_path) as broker:
        ems = SefProcess(
            "ems", "--broker", broker.url, "--db", db, "--require-signed-telemetry",
            *creds(ca, "ems-1"),
        )  # fmt: skip
        procs.append(ems)
        ems.wait_line(r"EMS ems-1 running on mqtts://")
        vb = SefProcess(
            "agent", "virtual-battery", "--id", "vb-1", "--broker", broker.url,
            "--step", "0.2", "--sign-telemetry", *creds(ca, "vb-1"),
        )  # fmt: skip
        procs.append(vb)
        store = Store.open(db)
        try:
            deadline = time.monotonic() + 40.0
            kinds: list[str] = []
            while time.monotonic() < deadline and "seal_ok" not in kinds:
                time.sleep(0.5)
                kinds = [event["kind"] for event in store.agent_events("vb-1")]
            assert "seal_ok" in kinds, kinds
            assert "seal_failed" not in kinds and "seal_refused" not in kinds, kinds
        finally:
            store.close()


def test_signed_telemetry_needs_credentials(mosquitto: Mosquitto) -> None:
    agent = sef_run(
        "agent", "virtual-battery", "--id", "vb-1", "--broker", mosquitto.url, "--insecure",
        "--sign-telemetry",
    )  # fmt: skip
    assert agent.returncode == 2 and "--sign-telemetry needs credentials" in agent.stderr
    ems = sef_run("ems", "--broker", mosquitto.url, "--insecure", "--require-signed-telemetry")
    assert ems.returncode == 2 and "checking seals needs the" in ems.stderr, ems.stderr

"""A secure agent on a list of two mutual-TLS brokers (``sef pki broker-config``, one CA):
its certificate, the CA and the hostname check serve both; SIGKILL of its broker -> it is
online on the other one, as ``sef agents`` (operator certificate) lists there."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proc_support import SefProcess
from secure_stack import make_pki, running_secure_broker
from sef.bus import start_index
from sef.security import CertificateAuthority, Role


def creds(ca: CertificateAuthority, identity: str) -> list[str]:
    return [
        *("--cert", str(ca.cert_path(identity))),
        *("--key", str(ca.key_path(identity))),
        *("--ca", str(ca.ca_path)),
    ]


def status_on(broker: str, ca: CertificateAuthority, agent_id: str) -> object:
    out = subprocess.run(
        [sys.executable, "-m", "sef", "agents", "--broker", broker, "--json", "--wait", "1",
         *creds(ca, "ops-1")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return {entry["id"]: entry for entry in json.loads(out.stdout)}.get(agent_id, {}).get("status")


@pytest.mark.timeout(120)
def test_a_secure_agent_fails_over_between_tls_brokers(tmp_path: Path) -> None:
    ca = make_pki(
        tmp_path, [("ops-1", Role.OPERATOR, (), None), ("vb-1", Role.AGENT, ("fleet",), None)]
    )
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        running_secure_broker(ca, tmp_path / "a") as a,
        running_secure_broker(ca, tmp_path / "b") as b,
    ):
        brokers = [a, b]
        first = start_index("vb-1", 2)
        agent = SefProcess(
            "agent", "virtual-battery", "--id", "vb-1", "--broker", f"{a.url},{b.url}",
            "--keepalive", "2", *creds(ca, "vb-1"),
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while status_on(brokers[first].url, ca, "vb-1") != "online":
                assert time.monotonic() < deadline, agent.output()
                time.sleep(0.3)
            assert "INSECURE" not in agent.output()
            brokers[first].process.kill()
            brokers[first].process.wait(5)
            other = brokers[1 - first].url
            deadline = time.monotonic() + 30
            while status_on(other, ca, "vb-1") != "online":
                assert time.monotonic() < deadline, agent.output()
                time.sleep(0.3)
            assert "fails over from mqtts://" in agent.output()
        finally:
            agent.kill()

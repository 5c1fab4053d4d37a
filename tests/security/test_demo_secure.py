"""``sef demo`` is secure by default: its own throwaway CA, Mosquitto in mutual-TLS + ACL
mode, a certificate per process, a dashboard that needs the printed admin token.
``--insecure`` runs plain text and says so."""

from __future__ import annotations

import re
import signal
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proc_support import SefProcess
from sef.security import CertificateAuthority, Role, identity_of, load_certificate


def demo(out: Path, *extra: str) -> SefProcess:
    return SefProcess(
        "demo", "--hours", "1", "--batteries", "1", "--waterheaters", "1", "--headless",
        "--no-browser", "--api", "127.0.0.1:0", "--out", str(out), *extra,
    )  # fmt: skip


@pytest.fixture
def procs() -> Iterator[list[SefProcess]]:
    started: list[SefProcess] = []
    yield started
    for proc in started:
        proc.kill()


@pytest.mark.timeout(180)
@pytest.mark.xdist_group("fleet")  # several processes: not beside the other fleet tests
def test_demo_runs_secure_by_default(procs: list[SefProcess], tmp_path: Path) -> None:
    out = tmp_path / "report"
    proc = demo(out)
    procs.append(proc)
    broker = proc.wait_line(r"broker: mosquitto, mutual TLS \+ ACL, on (mqtts://\S+)").group(1)
    url = proc.wait_line(r"dashboard: (http://\S+)/login with the admin token").group(1)
    token = proc.wait_line(r"^\s+(\S{40,})\s*$").group(1)
    proc.wait_line(r"all 3 agents online", timeout_s=120.0)
    assert "INSECURE" not in proc.output()

    # a CA of this run, one certificate per process, the token kept 0600
    ca = CertificateAuthority.open(out / "pki")
    issued = {r.id: r.role for r in ca.current().values()}
    assert issued == {
        "demo-ems": Role.EMS,
        "battery-1": Role.AGENT,
        "waterheater-1": Role.AGENT,
        "meter-1": Role.AGENT,
        "broker": Role.BROKER,
    }
    battery = identity_of(load_certificate(ca.cert_path("battery-1").read_bytes()))
    assert battery.groups == ("batteries",)
    assert (out / "dashboard-token").read_text().strip() == token
    assert stat.S_IMODE((out / "dashboard-token").stat().st_mode) == 0o600
    conf = (out / "broker" / "mosquitto.conf").read_text()
    assert "require_certificate true" in conf and "allow_anonymous false" in conf
    for agent in ("battery-1", "waterheater-1"):
        log = (out / "logs" / f"{agent}.log").read_text()
        assert f"agent {agent} starting on mqtts://" in log and "INSECURE" not in log, log

    # the dashboard's API needs the token
    assert httpx.get(f"{url}/agents", timeout=10).status_code == 401
    agents = httpx.get(f"{url}/agents", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert agents.status_code == 200
    assert {a["id"] for a in agents.json()} == {"battery-1", "waterheater-1", "meter-1"}

    # a plain-text MQTT CONNECT to the demo's broker gets no CONNACK
    port = int(broker.rsplit(":", 1)[1].split("?")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 10, 0, 0]))
        try:
            answer = sock.recv(16)
        except OSError:
            answer = b""
    assert not answer.startswith(b"\x20"), answer

    assert proc.signal_and_wait(signal.SIGTERM, 60.0) == 0, proc.output()[-2000:]


@pytest.mark.timeout(180)
@pytest.mark.xdist_group("fleet")
def test_demo_insecure_says_so(procs: list[SefProcess], tmp_path: Path) -> None:
    proc = demo(tmp_path / "report", "--insecure")
    procs.append(proc)
    proc.wait_line(r"WARNING.*sef demo runs INSECURE")
    proc.wait_line(r"broker: \S+ on mqtt://\S+ \(INSECURE: plain text\)")
    proc.wait_line(r"dashboard: http://\S+ \(no login: INSECURE\)")
    proc.wait_line(r"all 3 agents online", timeout_s=120.0)
    assert not (tmp_path / "report" / "pki").exists()
    log = (tmp_path / "report" / "logs" / "battery-1.log").read_text()
    assert re.search(r"WARNING.*INSECURE", log), log
    assert proc.signal_and_wait(signal.SIGTERM, 60.0) == 0, proc.output()[-2000:]


def test_demo_refuses_an_external_broker_without_insecure(tmp_path: Path) -> None:
    proc = SefProcess("demo", "--broker", "mqtt://127.0.0.1:1883", "--out", str(tmp_path))
    try:
        assert proc.process.wait(60) == 2, proc.output()
        assert "--insecure only" in proc.output()
    finally:
        proc.kill()


def test_demo_never_replaces_a_ca_that_is_not_its_own(tmp_path: Path) -> None:
    """``sef pki`` keeps its CA in ./pki by default: ``sef demo --out .`` must not wipe it."""
    real = CertificateAuthority.init(tmp_path / "pki", "Utility CA")
    key = (tmp_path / "pki" / "ca.key").read_bytes()
    proc = SefProcess("demo", "--out", str(tmp_path), "--headless", "--no-browser")
    try:
        assert proc.process.wait(60) == 2, proc.output()
        assert "is not a previous sef demo's" in proc.output()
    finally:
        proc.kill()
    assert (tmp_path / "pki" / "ca.key").read_bytes() == key
    assert CertificateAuthority.open(tmp_path / "pki").cert.subject == real.cert.subject

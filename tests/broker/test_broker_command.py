"""``sef broker``: the production configuration it prints (sized for the fleet, each
setting with its reason) and the real Mosquitto it runs, insecure and with mutual TLS."""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from proc_support import SefProcess
from secure_stack import Probe, make_pki, security_for, tls_of
from sef.broker import DEFAULT_BUDGET, BrokerLimits, Mosquitto, free_port
from sef.broker_fleet import FleetSizing
from sef.cli import app
from sef.security import Role

ROOT_USER = ["--user", "root"] if os.geteuid() == 0 else []
"""As root Mosquitto would drop to its own account, which cannot enter pytest's 0700
temporary directories: the test broker keeps root (as `sef demo`'s does)."""


def print_config(*args: str) -> tuple[str, str]:
    result = CliRunner().invoke(app, ["broker", "--print-config", *args])
    assert result.exit_code == 0, result.output
    return result.stdout, result.stderr


def settings(text: str) -> dict[str, str]:
    """``name -> value`` of a mosquitto.conf (the last setting wins)."""
    found = {}
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(None, 1)
        if words:
            found[words[0]] = words[1] if len(words) > 1 else ""
    return found


def test_print_config_is_sized_for_the_fleet_with_a_reason_per_setting(tmp_path: Path) -> None:
    text, said = print_config("--insecure", "--agents", "50000", "--broker-dir", str(tmp_path))
    limits = BrokerLimits.parse(text)
    fleet = FleetSizing(agents=50_000)
    assert fleet.shortfall(limits) is None
    assert limits.shortfall(DEFAULT_BUDGET) is None  # `sef ems --broker-config` accepts it
    assert limits.max_queued_messages >= 50_000 * 6 + DEFAULT_BUDGET.messages
    assert limits.max_queued_bytes >= 50_000 * 4500
    # the same check refuses the throwaway broker's limits for such a fleet
    assert fleet.shortfall(BrokerLimits.parse(Mosquitto().config_text())) is not None
    conf = settings(text)
    assert conf["allow_duplicate_messages"] == "true"
    assert conf["set_tcp_nodelay"] == "true"
    assert conf["retain_available"] == "true"
    assert conf["persistence"] == "true"
    assert conf["persistence_location"] == f"{tmp_path}/data/"
    assert conf["listener"] == "1883 127.0.0.1"  # insecure: loopback unless told
    assert 10 <= int(conf["max_keepalive"]) <= 300
    assert int(conf["max_packet_size"]) > 256 * 1024
    # every tuning setting comes right after a comment line giving its reason
    lines = text.splitlines()
    tuned = (
        "max_queued_messages", "max_inflight_messages", "allow_duplicate_messages",
        "max_keepalive", "set_tcp_nodelay", "retain_available", "max_packet_size",
        "persistence",
    )  # fmt: skip
    for name in tuned:
        index = next(i for i, line in enumerate(lines) if line.startswith(name + " "))
        above = lines[index - 1]
        assert above.startswith("#") or lines[index - 1].split()[0] in tuned, name
    # 50 000 agents need more sockets than this machine's hard limit gives one process
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 50_000:
        assert re.search(r"--agents 50000 exceeds.*room for \d+ agents", said, re.S), said


def test_print_config_secure_is_the_mutual_tls_config_with_the_fleet_tuning(
    tmp_path: Path,
) -> None:
    make_pki(tmp_path, [("ems-1", Role.EMS, (), None)])
    broker_dir = tmp_path / "broker"
    text, _ = print_config(
        "--pki", str(tmp_path / "pki"), "--agents", "2000", "--broker-dir", str(broker_dir),
        "--no-persistence",
    )  # fmt: skip
    conf = settings(text)
    assert conf["require_certificate"] == "true"
    assert conf["allow_anonymous"] == "false"
    assert conf["acl_file"] == str(broker_dir / "acl")
    assert conf["listener"] == "8883"
    assert conf["persistence"] == "false"
    assert FleetSizing(agents=2000).shortfall(BrokerLimits.parse(text)) is None
    assert (broker_dir / "broker.crt").is_file() and (broker_dir / "acl").is_file()
    assert text == (broker_dir / "mosquitto.conf").read_text()


def test_no_ca_is_refused_with_a_hint(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["broker", "--pki", str(tmp_path / "none"), "--broker-dir", str(tmp_path / "b")]
    )
    assert result.exit_code == 2
    assert "sef pki init" in result.stderr and "--insecure" in result.stderr


def test_bad_keepalive_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["broker", "--insecure", "--max-keepalive", "5", "--broker-dir", str(tmp_path)],
    )
    assert result.exit_code == 2 and "max_keepalive" in result.stderr


def stop(process: SefProcess, port: int, signum: int = signal.SIGINT) -> None:
    """Ctrl-C (or a service manager's SIGTERM) stops sef broker and its Mosquitto."""
    process.process.send_signal(signum)
    assert process.process.wait(15) == 0, process.output()
    assert "stopped" in process.output()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass  # the broker is gone with it


@pytest.mark.timeout(60)
def test_sef_broker_insecure_serves_clients_until_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    process = SefProcess(
        "broker", "--insecure", "--port", str(port), "--agents", "1000",
        "--broker-dir", str(tmp_path / "broker"), *ROOT_USER,
    )  # fmt: skip
    try:
        process.wait_line(rf"sef broker running on mqtt://127\.0\.0\.1:{port} for 1000 agents")
        assert "INSECURE" in process.output()
        probe = Probe(port, None, "probe-1", v5=False)
        assert probe.connect() == "connected"
        try:
            assert probe.subscribe("sef/t") in (0, 1)
            assert probe.publish("sef/t", b"hello") == 0
            probe.wait_for("sef/t", b"hello")
        finally:
            probe.close()
        running = settings((tmp_path / "broker" / "mosquitto.conf").read_text())
        assert running["allow_duplicate_messages"] == "true"
    finally:
        if process.process.poll() is None:
            stop(process, port)


@pytest.mark.timeout(60)
def test_sef_broker_secure_takes_certificates_and_refuses_a_client_without(
    tmp_path: Path,
) -> None:
    ca = make_pki(tmp_path, [("ems-1", Role.EMS, (), None)])
    port = free_port()
    process = SefProcess(
        "broker", "--pki", str(tmp_path / "pki"), "--port", str(port), "--bind", "127.0.0.1",
        "--agents", "1000", "--broker-dir", str(tmp_path / "broker"), *ROOT_USER,
    )  # fmt: skip
    try:
        process.wait_line(rf"sef broker running on mqtts://127\.0\.0\.1:{port}")
        assert "INSECURE" not in process.output()
        ems = Probe(port, tls_of(security_for(ca, "ems-1", Role.EMS)), "ems-1")
        try:
            assert ems.connect() == "connected"
        finally:
            ems.close()
        anonymous = Probe(port, tls_of(None, ca), "nobody")
        try:
            assert anonymous.connect() != "connected"
        finally:
            anonymous.close()
        plain = Probe(port, None, "plain")
        try:
            assert plain.connect() != "connected"
        finally:
            plain.close()
    finally:
        if process.process.poll() is None:
            stop(process, port, signal.SIGTERM)


def test_a_broker_that_cannot_start_is_an_error_with_its_reason(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            app,
            [
                "broker", "--insecure", "--port", str(port), "--agents", "10",
                "--broker-dir", str(tmp_path), "--no-persistence", *ROOT_USER,
            ],
        )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "mosquitto exited with" in result.stderr

"""``sef gateway``'s operations flags (``--keepalive``, ``--backoff``, ``--queue-limit``,
``--log-dir``), its broker log, and its signals, on real ``python -m sef gateway``
processes against a real control broker (``docs/operations.md``, "Gateway")."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from proc_support import Retained, SefProcess, alive, children_of, command_name
from sef.broker import Mosquitto
from sef.cli import app
from sef.cli.gateway_command import parse_backoff

STOP_S = 10.0
"""Longest time the gateway may take to stop after SIGINT/SIGTERM, s."""


@pytest.fixture
def procs() -> Iterator[list[SefProcess]]:
    started: list[SefProcess] = []
    yield started
    for proc in started:
        proc.kill()


def start_gateway(procs: list[SefProcess], uplink: str, *extra: str) -> SefProcess:
    home = f"home-{uuid.uuid4().hex[:6]}"
    proc = SefProcess(
        "gateway",
        "--insecure",
        "--uplink",
        uplink,
        "--listen",
        "127.0.0.1:0",
        "--id",
        home,
        "--no-advertise",
        *extra,
    )
    procs.append(proc)
    return proc


def mosquitto_children(pid: int) -> list[int]:
    return [child for child in children_of(pid) if command_name(child) == "mosquitto"]


# -- validation: usage errors (exit 2), nothing started -----------------------------------
@pytest.mark.parametrize(
    ("text", "expected"), [("1,5", (1, 5)), ("2,2", (2, 2)), (" 3 , 3600 ", (3, 3600))]
)
def test_backoff_parses(text: str, expected: tuple[int, int]) -> None:
    assert parse_backoff(text) == expected


@pytest.mark.parametrize("text", ["0,5", "5,1", "1,3601", "-1,5", "1", "a,b", "1.5,3", ""])
def test_backoff_refused(text: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_backoff(text)


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--keepalive", "1"], "--keepalive"),
        (["--keepalive", "3601"], "--keepalive"),
        (["--backoff", "0,5"], "--backoff"),
        (["--backoff", "5,1"], "--backoff"),
        (["--backoff", "1,4000"], "--backoff"),
        (["--backoff", "fast"], "--backoff"),
        (["--queue-limit", "99"], "--queue-limit"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v,
)
def test_bad_operations_flags_are_usage_errors(flags: list[str], named: str) -> None:
    result = CliRunner().invoke(
        app,
        ["gateway", "--insecure", "--uplink", "mqtt://127.0.0.1:1", "--no-advertise", *flags],
    )
    assert result.exit_code == 2, result.output
    assert named in result.output, result.output
    assert "listening on" not in result.output


def test_a_log_dir_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("")
    for log_dir in (taken, taken / "below"):
        result = CliRunner().invoke(
            app,
            ["gateway", "--insecure", "--uplink", "mqtt://127.0.0.1:1", "--log-dir", str(log_dir)],
        )
        assert result.exit_code == 2, result.output
        assert "--log-dir" in result.output, result.output


# -- real processes -------------------------------------------------------------------------
def test_flags_reach_the_uplink_and_the_log_is_where_printed(
    mosquitto: Mosquitto, procs: list[SefProcess], tmp_path: Path
) -> None:
    """--keepalive 3 is the keepalive the control broker sees; --queue-limit is the limit
    in the gateway's statistics; --log-dir holds a log with content, and the printed
    path is that file (the gateway runs as root here: its Mosquitto drops to the
    mosquitto account, below pytest's root-only tmp directory)."""
    log_dir = tmp_path / "logs" / "gw"
    gateway = start_gateway(
        procs,
        mosquitto.url,
        "--keepalive",
        "3",
        "--backoff",
        "1,2",
        "--queue-limit",
        "1000",
        "--log-dir",
        str(log_dir),
    )
    printed = gateway.wait_line(r"gateway (\S+) listening on .*broker log (\S+)")
    log_path = Path(printed.group(2).rstrip(","))
    assert log_path == log_dir / "mosquitto.log"
    stats_topic = f"sef/gateways/{printed.group(1)}/stats"
    stats = Retained(mosquitto.port, stats_topic)
    try:
        assert stats.wait(stats_topic, lambda s: "queue_limit" in s, 10.0)["queue_limit"] == 1000
    finally:
        stats.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not re.search(
        r"New client connected .*\bk3\)", mosquitto.log_path.read_text()
    ):
        time.sleep(0.05)
    control_log = mosquitto.log_path.read_text()
    assert re.search(r"New client connected .*\bk3\)", control_log), control_log
    assert log_path.exists() and "New connection from 127.0.0.1" in log_path.read_text()
    assert gateway.signal_and_wait(signal.SIGTERM, STOP_S) == 0, gateway.output()
    assert "New connection from 127.0.0.1" in log_path.read_text()  # kept after the stop


class RefusingUplink:
    """A TCP listener that notes the time of every connection and closes it at once: an
    uplink whose broker never answers CONNECT, so the gateway keeps retrying."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.attempts: list[float] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.server.accept()
                self.attempts.append(time.monotonic())
                conn.close()

    def close(self) -> None:
        self.server.close()


def test_backoff_spaces_the_uplink_reconnects(procs: list[SefProcess]) -> None:
    """--backoff 1,2: retries after 1 s, then 2 s (doubled, capped), then 2 s."""
    uplink = RefusingUplink()
    try:
        gateway = start_gateway(procs, f"mqtt://127.0.0.1:{uplink.port}", "--backoff", "1,2")
        deadline = time.monotonic() + 15
        while len(uplink.attempts) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(uplink.attempts) >= 4, (uplink.attempts, gateway.output())
        gaps = [b - a for a, b in zip(uplink.attempts[:3], uplink.attempts[1:4], strict=True)]
        print("reconnect gaps, s:", [round(g, 2) for g in gaps])
        assert 0.8 <= gaps[0] <= 1.6, gaps
        assert all(1.8 <= gap <= 2.8 for gap in gaps[1:]), gaps
        assert gateway.signal_and_wait(signal.SIGTERM, STOP_S) == 0, gateway.output()
    finally:
        uplink.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["term", "int"])
def test_a_stop_signal_exits_0_and_leaves_no_mosquitto(
    mosquitto: Mosquitto, procs: list[SefProcess], signum: signal.Signals
) -> None:
    """Without --log-dir the log lies in the gateway's temporary directory, removed when
    the gateway stops."""
    gateway = start_gateway(procs, mosquitto.url)
    printed = gateway.wait_line(r"gateway \S+ listening on .*broker log (\S+)")
    log_path = Path(printed.group(1).rstrip(","))
    assert log_path.exists()
    brokers = mosquitto_children(gateway.pid)
    assert len(brokers) == 1, [command_name(p) for p in children_of(gateway.pid)]
    try:
        code = gateway.signal_and_wait(signum, STOP_S)
        assert code == 0, f"exit {code} after {signum.name}:\n{gateway.output()[-3000:]}"
        assert not alive(brokers[0]), f"mosquitto {brokers[0]} left running"
        assert not log_path.parent.exists(), "the temporary directory was left behind"
    finally:
        if alive(brokers[0]):
            os.kill(brokers[0], signal.SIGKILL)


def test_a_gateway_killed_with_sigkill_leaves_no_mosquitto(
    mosquitto: Mosquitto, procs: list[SefProcess]
) -> None:
    """No clean-up runs on SIGKILL: the broker's guard (``sef.broker``) stops it. As root
    (here) the broker changes its user, so ``PR_SET_PDEATHSIG`` alone would not."""
    gateway = start_gateway(procs, mosquitto.url)
    gateway.wait_line(r"gateway \S+ listening on")
    brokers = mosquitto_children(gateway.pid)
    assert len(brokers) == 1, [command_name(p) for p in children_of(gateway.pid)]
    try:
        gateway.process.kill()
        gateway.process.wait(5)
        deadline = time.monotonic() + 3.0
        while alive(brokers[0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(brokers[0]), f"mosquitto {brokers[0]} outlived its killed gateway"
    finally:
        if alive(brokers[0]):
            os.kill(brokers[0], signal.SIGKILL)


def test_sigterm_while_the_broker_starts_leaves_no_mosquitto(
    mosquitto: Mosquitto, procs: list[SefProcess]
) -> None:
    """SIGTERM as soon as the Mosquitto child exists, before the gateway is up: the
    cancelled start never got to own the broker (it was starting in a worker thread), so
    only the broker's guard stops it. Without the guard 7 of 12 such runs left an orphan
    broker. The gateway still exits 0 (its relay's stop waits for a start in progress)."""
    gateway = start_gateway(procs, mosquitto.url)
    brokers: list[int] = []
    deadline = time.monotonic() + 30
    while not brokers and gateway.process.poll() is None and time.monotonic() < deadline:
        brokers = mosquitto_children(gateway.pid)
    assert brokers, gateway.output()
    try:
        gateway.signal_and_wait(signal.SIGTERM, 30.0)
        assert gateway.process.poll() is not None, "still running 30 s after SIGTERM"
        assert gateway.process.returncode == 0, gateway.output()
        deadline = time.monotonic() + 3.0
        while alive(brokers[0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(brokers[0]), f"mosquitto {brokers[0]} left running"
    finally:
        if alive(brokers[0]):
            os.kill(brokers[0], signal.SIGKILL)

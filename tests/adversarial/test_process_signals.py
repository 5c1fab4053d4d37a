"""Defect 16 of issue 11: SIGTERM and SIGINT stop every long-running ``sef`` process cleanly.

Each command runs as a real process (``python -m sef ...``) against a real Mosquitto. On
SIGTERM (or SIGINT) it must exit with code 0 within a few seconds; a bus process must
leave its retained status offline with reason ``shutdown`` (not the broker's ``will``);
``sef gateway`` must leave no Mosquitto child behind; and a process started with SIGINT
ignored (as ``nohup`` or a supervisor may start it) must still stop on SIGINT and SIGTERM.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from proc_support import (
    Retained,
    SefProcess,
    alive,
    children_of,
    command_name,
    descendants_of,
    ignore_sigint,
    is_online,
    stop_all,
)
from sef.broker import Mosquitto

STOP_S = 10.0
"""Longest time a process may take to stop after the signal, s."""


@pytest.fixture
def procs() -> Iterator[list[SefProcess]]:
    started: list[SefProcess] = []
    yield started
    stop_all(started)


def assert_clean_shutdown(
    proc: SefProcess, signum: signal.Signals, watch: Retained | None = None, topic: str = ""
) -> None:
    code = proc.signal_and_wait(signum, STOP_S)
    assert code == 0, f"exit {code} after {signum.name}:\n{proc.output()[-3000:]}"
    if watch is not None:
        status = watch.wait(topic, lambda s: s.get("state") == "offline", 5.0)
        assert status.get("reason") == "shutdown", status


def agent_status(agent_id: str) -> str:
    return f"sef/agents/{agent_id}/status"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["term", "int"])
def test_virtual_battery_stops_with_shutdown_status(
    mosquitto: Mosquitto, procs: list[SefProcess], signum: signal.Signals
) -> None:
    agent = f"vb-{uuid.uuid4().hex[:6]}"
    watch = Retained(mosquitto.port, agent_status(agent))
    try:
        proc = SefProcess(
            "agent", "virtual-battery", "--insecure", "--id", agent, "--broker", mosquitto.url
        )
        procs.append(proc)
        watch.wait(agent_status(agent), is_online)
        assert_clean_shutdown(proc, signum, watch, agent_status(agent))
    finally:
        watch.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["term", "int"])
def test_sigint_ignored_by_the_parent_cannot_make_an_agent_unstoppable(
    mosquitto: Mosquitto, procs: list[SefProcess], signum: signal.Signals
) -> None:
    agent = f"vb-{uuid.uuid4().hex[:6]}"
    watch = Retained(mosquitto.port, agent_status(agent))
    try:
        proc = SefProcess(
            "agent",
            "virtual-battery",
            "--insecure",
            "--id",
            agent,
            "--broker",
            mosquitto.url,
            preexec_fn=ignore_sigint,
        )
        procs.append(proc)
        watch.wait(agent_status(agent), is_online)
        assert_clean_shutdown(proc, signum, watch, agent_status(agent))
    finally:
        watch.close()


def test_bis_and_battery_emulator_stop_on_sigterm(
    mosquitto: Mosquitto, procs: list[SefProcess]
) -> None:
    agent = f"bis-{uuid.uuid4().hex[:6]}"
    emulator = SefProcess("emulate", "battery", "--port", "0")
    procs.append(emulator)
    port = emulator.wait_line(r"listening on [\d.]+:(\d+)").group(1)
    watch = Retained(mosquitto.port, agent_status(agent))
    try:
        bis = SefProcess(
            "bis",
            "--insecure",
            "--modbus",
            f"tcp://127.0.0.1:{port}",
            "--id",
            agent,
            "--broker",
            mosquitto.url,
            "--poll",
            "0.2",
        )
        procs.append(bis)
        watch.wait(agent_status(agent), is_online)
        assert_clean_shutdown(bis, signal.SIGTERM, watch, agent_status(agent))
    finally:
        watch.close()
    assert_clean_shutdown(emulator, signal.SIGTERM)


def test_ucm_and_waterheater_emulator_stop_on_sigterm(
    mosquitto: Mosquitto, procs: list[SefProcess]
) -> None:
    agent = f"ucm-{uuid.uuid4().hex[:6]}"
    emulator = SefProcess("emulate", "waterheater", "--tcp", "0", "--no-draws")
    procs.append(emulator)
    where = emulator.wait_line(r"ready on (\S+:\d+)").group(1)
    watch = Retained(mosquitto.port, agent_status(agent))
    try:
        ucm = SefProcess(
            "ucm",
            "--insecure",
            "--tcp",
            where,
            "--id",
            agent,
            "--broker",
            mosquitto.url,
            "--poll",
            "0.2",
        )
        procs.append(ucm)
        watch.wait(agent_status(agent), is_online)
        assert_clean_shutdown(ucm, signal.SIGTERM, watch, agent_status(agent))
    finally:
        watch.close()
    assert_clean_shutdown(emulator, signal.SIGTERM)


def test_waterheater_emulator_on_a_pty_stops_on_sigint_when_sigint_is_ignored(
    procs: list[SefProcess],
) -> None:
    emulator = SefProcess("emulate", "waterheater", "--pty", preexec_fn=ignore_sigint)
    procs.append(emulator)
    emulator.wait_line(r"ready on (\S+)")
    assert_clean_shutdown(emulator, signal.SIGINT)


@pytest.mark.parametrize("ignored", [False, True], ids=["plain", "sigint-ignored"])
def test_ems_stops_with_shutdown_status(
    mosquitto: Mosquitto, procs: list[SefProcess], tmp_path: Path, ignored: bool
) -> None:
    host = f"ems-{uuid.uuid4().hex[:6]}"
    topic = f"sef/hosts/{host}/status"
    watch = Retained(mosquitto.port, topic)
    try:
        ems = SefProcess(
            "ems",
            "--insecure",
            "--broker",
            mosquitto.url,
            "--id",
            host,
            "--db",
            f"sqlite:///{tmp_path / 'ems.db'}",
            preexec_fn=ignore_sigint if ignored else None,
        )
        procs.append(ems)
        ems.wait_line(r"EMS \S+ running")
        watch.wait(topic, is_online)
        assert_clean_shutdown(ems, signal.SIGINT if ignored else signal.SIGTERM, watch, topic)
    finally:
        watch.close()


def test_gateway_sigterm_stops_its_mosquitto(mosquitto: Mosquitto, procs: list[SefProcess]) -> None:
    home = f"home-{uuid.uuid4().hex[:6]}"
    gateway = SefProcess(
        "gateway",
        "--insecure",
        "--uplink",
        mosquitto.url,
        "--listen",
        "127.0.0.1:0",
        "--id",
        home,
        "--no-advertise",
    )
    procs.append(gateway)
    gateway.wait_line(r"gateway \S+ listening on")
    brokers = [pid for pid in children_of(gateway.pid) if command_name(pid) == "mosquitto"]
    assert len(brokers) == 1, [command_name(p) for p in children_of(gateway.pid)]
    try:
        assert_clean_shutdown(gateway, signal.SIGTERM)
        assert not alive(brokers[0]), f"mosquitto {brokers[0]} left running"
    finally:
        if alive(brokers[0]):
            os.kill(brokers[0], signal.SIGKILL)


@pytest.mark.timeout(180)
@pytest.mark.xdist_group("fleet")  # several processes: not beside the other fleet tests
def test_demo_sigterm_stops_every_process(procs: list[SefProcess], tmp_path: Path) -> None:
    demo = SefProcess(
        "demo",
        "--hours",
        "1",
        "--batteries",
        "1",
        "--waterheaters",
        "1",
        "--headless",
        "--no-browser",
        "--api",
        "127.0.0.1:0",
        "--out",
        str(tmp_path / "report"),
    )
    procs.append(demo)
    demo.wait_line(r"all 3 agents online", timeout_s=120.0)
    below = descendants_of(demo.pid)
    names = sorted(command_name(pid) for pid in below)
    assert "mosquitto" in names, names
    assert len(below) >= 7, names  # broker, 3 emulators (with the meter), 3 agents
    try:
        assert_clean_shutdown(demo, signal.SIGTERM, None)
        left = [(pid, command_name(pid)) for pid in below if alive(pid)]
        assert not left, f"left running: {left}"
    finally:
        for pid in below:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(180)
@pytest.mark.xdist_group("fleet")
def test_a_sigkilled_demo_leaves_no_process(procs: list[SefProcess], tmp_path: Path) -> None:
    """``sef demo`` SIGKILLed (no cleanup at all): each child's guard
    (:mod:`sef.process_guard`) stops it, the broker included; before, the broker, the
    emulators and the agents (in sessions of their own) kept running."""
    demo = SefProcess(
        "demo", "--hours", "1", "--batteries", "1", "--waterheaters", "1", "--headless",
        "--no-browser", "--api", "127.0.0.1:0", "--out", str(tmp_path / "report"),
    )  # fmt: skip
    procs.append(demo)
    demo.wait_line(r"all 3 agents online", timeout_s=120.0)
    below = descendants_of(demo.pid)
    names = sorted(command_name(pid) for pid in below)
    assert "mosquitto" in names and len(below) >= 7, names
    try:
        os.kill(demo.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30.0
        while any(alive(pid) for pid in below) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [(pid, command_name(pid)) for pid in below if alive(pid)]
        assert not left, f"left running: {left}"
    finally:
        for pid in below:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(
    "args",
    [
        ("agent", "virtual-battery", "--insecure", "--id", "vb-x", "--broker", "foo://bar"),
        ("ems", "--insecure", "--broker", "foo://bar"),
        ("gateway", "--insecure", "--uplink", "foo://bar", "--no-advertise"),
    ],
    ids=["agent", "ems", "gateway"],
)
def test_a_bad_broker_url_is_a_usage_error(args: tuple[str, ...]) -> None:
    proc = SefProcess(*args)
    try:
        assert proc.process.wait(30) == 2, proc.output()
        assert "Traceback" not in proc.output(), proc.output()
        assert "foo" in proc.output()
    finally:
        proc.kill()

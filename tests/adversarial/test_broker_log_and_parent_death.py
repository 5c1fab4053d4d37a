"""The broker's log is written whatever account Mosquitto runs as, and a broker whose
parent is killed (SIGKILL) does not outlive it.

As root, Mosquitto drops to the ``mosquitto`` account before it opens a ``log_dest
file``; a log in a 0700 root directory then never existed. :class:`~sef.broker.Mosquitto`
hands the broker its log as an already open stderr instead.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proc_support import alive
from sef.broker import LOG_NAME, Mosquitto


def connect_once(port: int) -> None:
    """Open and close a TCP connection to the broker (Mosquitto logs it at notice level)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def wait_for_text(path: Path, text: str, timeout_s: float = 5.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in (content := path.read_text(errors="replace")):
            return content
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in {path}: {path.read_text() if path.exists() else '-'}")


def test_log_in_a_root_only_directory_has_content(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "work").mkdir()
    broker = Mosquitto(workdir=private / "work", log_dir=private / "logs" / "gateway")
    with broker:
        assert broker.log_path == private / "logs" / "gateway" / LOG_NAME
        connect_once(broker.port)
        content = wait_for_text(broker.log_path, "New connection from 127.0.0.1")
    assert content.strip(), content
    assert not (private / "work" / LOG_NAME).exists()


def test_log_defaults_to_the_workdir_and_is_appended(tmp_path: Path) -> None:
    with Mosquitto(workdir=tmp_path) as first:
        connect_once(first.port)
        wait_for_text(first.log_path, "New connection")
    assert first.log_path == tmp_path / LOG_NAME
    before = first.log_path.read_text()
    with Mosquitto(workdir=tmp_path) as second:
        connect_once(second.port)
        wait_for_text(second.log_path, f"on port {second.port}")
    assert second.log_path.read_text().startswith(before)


def test_a_start_up_error_is_reported_from_the_log(tmp_path: Path) -> None:
    broker = Mosquitto(workdir=tmp_path, extra_config="no_such_option 1\n")
    with pytest.raises(RuntimeError, match="no_such_option") as failed:
        broker.start()
    assert "mosquitto exited with" in str(failed.value)
    assert "no_such_option" in (tmp_path / LOG_NAME).read_text()


START_AND_SLEEP = """
import sys, time
from pathlib import Path
from sef.broker import Mosquitto
broker = Mosquitto(workdir=Path(sys.argv[1]), die_with_parent=sys.argv[2] == "1").start()
print(broker.process.pid, broker.guard.pid if broker.guard else 0, flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("die_with_parent", [True, False])
def test_a_killed_parent_takes_its_broker_along(tmp_path: Path, die_with_parent: bool) -> None:
    """The parent SIGKILLed (no cleanup at all): its broker's guard stops the broker.

    Run as root here, the broker changes its user to ``mosquitto``, the case where
    ``PR_SET_PDEATHSIG`` would not work. ``die_with_parent=False``: the broker outlives
    its parent (what this test would see without the guard)."""
    parent = subprocess.Popen(
        [sys.executable, "-c", START_AND_SLEEP, str(tmp_path), "1" if die_with_parent else "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    broker_pid = 0
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline().split()
        broker_pid, guard_pid = int(line[0]), int(line[1])
        assert _parent_of(broker_pid) == parent.pid and alive(broker_pid)
        assert bool(guard_pid) is die_with_parent
        parent.kill()
        parent.wait(5)
        deadline = time.monotonic() + 3.0
        while alive(broker_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert alive(broker_pid) is not die_with_parent, f"mosquitto {broker_pid}"
        if guard_pid:
            assert not alive(guard_pid), "the guard outlived its broker"
    finally:
        if broker_pid and alive(broker_pid):
            os.kill(broker_pid, signal.SIGKILL)
        parent.kill()
        parent.wait(5)


def test_a_stopped_broker_leaves_no_guard(tmp_path: Path) -> None:
    with Mosquitto(workdir=tmp_path) as broker:
        assert broker.guard is not None and broker.process is not None
        guard_pid = broker.guard.pid
        assert alive(guard_pid)
    assert broker.guard is None and not alive(guard_pid)


def _parent_of(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def test_start_up_leaves_stderr_pipe_free(tmp_path: Path) -> None:
    """The broker's stderr is its log file, not a pipe nobody reads (a full pipe would
    block the broker)."""
    with Mosquitto(workdir=tmp_path) as broker:
        assert broker.process is not None and broker.process.stderr is None
        target = os.readlink(f"/proc/{broker.process.pid}/fd/2")
        assert target == str(broker.log_path)

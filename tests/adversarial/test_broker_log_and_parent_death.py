"""The broker's log is written whatever account Mosquitto runs as, and a broker whose
parent is killed (SIGKILL) does not outlive it when the kernel lets us arrange that.

As root, Mosquitto drops to the ``mosquitto`` account before it opens a ``log_dest
file``; a log in a 0700 root directory then never existed. :class:`~sef.broker.Mosquitto`
hands the broker its log as an already open stderr instead.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from proc_support import alive, children_of
from sef.broker import LOG_NAME, Mosquitto

SRC = Path(__file__).resolve().parents[2] / "src"


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
sys.path.insert(0, sys.argv[1])
from sef.broker import Mosquitto
broker = Mosquitto(workdir=Path(sys.argv[2])).start()
print(broker.process.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the parent as 'nobody'")
def test_a_killed_non_root_parent_takes_its_broker_along() -> None:
    """PR_SET_PDEATHSIG: the parent SIGKILLed (no cleanup at all), the broker gets SIGTERM.

    The parent runs as ``nobody`` under the system Python (stdlib only: sef.broker needs
    nothing else): as root Mosquitto changes its user, which clears the setting."""
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    python = "/usr/bin/python3"
    if not Path(runuser).exists() or not Path(python).exists():
        pytest.skip("no runuser or /usr/bin/python3")
    nobody = pwd.getpwnam("nobody")
    # in /tmp itself: pytest's tmp_path lies below a directory only root may enter
    workdir = Path(tempfile.mkdtemp(prefix="sef-pdeathsig-"))
    os.chown(workdir, nobody.pw_uid, nobody.pw_gid)
    env = {**os.environ, "PATH": f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"}
    parent_proc = subprocess.Popen(
        [runuser, "-u", "nobody", "--", python, "-c", START_AND_SLEEP, str(SRC), str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    broker_pid = 0
    try:
        assert parent_proc.stdout is not None
        line = parent_proc.stdout.readline()
        said = parent_proc.stderr.read() if parent_proc.stderr and not line.strip() else ""
        assert line.strip().isdigit(), line + said
        broker_pid = int(line)
        assert alive(broker_pid)
        python_pid = _parent_of(broker_pid)  # runuser may run python as its child
        assert python_pid in (parent_proc.pid, *children_of(parent_proc.pid)), python_pid
        os.kill(python_pid, signal.SIGKILL)
        deadline = time.monotonic() + 3.0
        while alive(broker_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(broker_pid), f"mosquitto {broker_pid} outlived its killed parent"
    finally:
        if broker_pid and alive(broker_pid):
            os.kill(broker_pid, signal.SIGKILL)
        parent_proc.kill()
        parent_proc.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)


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

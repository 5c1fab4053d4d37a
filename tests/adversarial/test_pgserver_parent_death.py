"""A PostgreSQL server started by a test, bench or demo process does not outlive it: the
starting process SIGKILLed (no cleanup at all, as a pytest-xdist worker killed at its
timeout), the server's guard shuts the postmaster down and removes its throwaway data
directory. Before the guard, every such kill left a running server and ~40 MB in /tmp."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sef.ems.store.pgserver import PostgresServer
from support import path_with_system_sbin

START_AND_SLEEP = """
import sys, time
from sef.ems.store.pgserver import PostgresServer
server = PostgresServer().start()
pid = int((server.datadir / "postmaster.pid").read_text().split()[0])
print(pid, server.guard.pid if server.guard else 0, server.datadir, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "Z"
    return stat[stat.rindex(")") + 2 :].split()[0]


def test_a_killed_parent_takes_its_postgres_along() -> None:
    env = {**os.environ, "PATH": path_with_system_sbin(os.environ.get("PATH", ""))}
    parent = subprocess.Popen(
        [sys.executable, "-c", START_AND_SLEEP], stdout=subprocess.PIPE, text=True, env=env
    )
    postmaster = 0
    try:
        assert parent.stdout is not None
        fields = parent.stdout.readline().split()
        assert len(fields) == 3, f"the parent printed {fields}"
        postmaster, guard, datadir = int(fields[0]), int(fields[1]), Path(fields[2])
        assert alive(postmaster) and guard and alive(guard) and datadir.is_dir()
        parent.kill()
        parent.wait(5)
        deadline = time.monotonic() + 30.0
        while (alive(postmaster) or datadir.parent.exists()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(postmaster), f"postgres {postmaster} outlived its parent"
        assert not datadir.parent.exists(), f"{datadir.parent} was left behind"
        assert not alive(guard), "the guard outlived its server"
    finally:
        if postmaster and alive(postmaster):
            os.kill(postmaster, 9)
        parent.kill()
        parent.wait(5)


def test_a_stopped_or_halted_server_leaves_no_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", path_with_system_sbin(os.environ.get("PATH", "")))
    server = PostgresServer().start()
    try:
        assert server.guard is not None
        first = server.guard.pid
        server.halt()
        assert server.guard is None and not alive(first)
        server.resume()  # a new postmaster pid: a new guard
        assert server.guard is not None and alive(server.guard.pid)
        second = server.guard.pid
    finally:
        server.stop()
    assert server.guard is None and not alive(second)
    assert not server.datadir.exists()

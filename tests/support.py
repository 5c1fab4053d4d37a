"""Helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sef.ems import EMS, AgentRecord

SYSTEM_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")
"""Where the system keeps administrator commands (``runuser``), on root's default PATH."""


def path_with_system_sbin(path: str) -> str:
    """``path`` with the system's sbin directories appended when they are missing.

    A root shell with a minimal PATH (``env PATH=/usr/bin:/bin``, some CI runners) does not
    find ``runuser``, which the PostgreSQL test server needs to run as ``postgres``; login
    shells and ``sudo`` put these directories on root's PATH, so we do the same.
    """
    dirs = [d for d in path.split(os.pathsep) if d]
    return os.pathsep.join(dirs + [d for d in SYSTEM_SBIN if d not in dirs])


def record(ems: EMS, agent_id: str) -> AgentRecord:
    """The EMS's registry record of ``agent_id``; fails the test when the EMS has none."""
    found = ems.registry.get(agent_id)
    assert found is not None, f"{agent_id} unknown to the EMS"
    return found


def is_online(ems: EMS, agent_id: str) -> bool:
    """Whether the EMS knows ``agent_id`` and has it online."""
    found = ems.registry.get(agent_id)
    return found is not None and found.online is True


async def wait_for(predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.01) -> float:
    """Wait until ``predicate()`` is true; return the real seconds it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(step_s)
    return time.monotonic() - start


class AgentProcess:
    """A ``sef agent virtual-battery`` process; ``started`` is when it printed its banner."""

    def __init__(self, agent_id: str, broker: str, *extra: str, clock: str = "real") -> None:
        self.agent_id = agent_id
        self.broker = broker
        self.extra = extra
        self.clock = clock
        self.process: subprocess.Popen[str] | None = None
        self.spawned = 0.0
        self.started = 0.0

    def start(self) -> AgentProcess:
        env = {**os.environ, "SEF_CLOCK": self.clock, "PYTHONUNBUFFERED": "1"}
        self.spawned = time.monotonic()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sef",
                "agent",
                "virtual-battery",
                "--insecure",
                "--id",
                self.agent_id,
                "--broker",
                self.broker,
                *self.extra,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "INSECURE" in line:  # --insecure's warning comes first (stderr is merged)
            line = self.process.stdout.readline()
        self.started = time.monotonic()
        assert "starting" in line, line
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(5)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

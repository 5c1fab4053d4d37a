"""SEF's own agents as the certifier's subjects: real processes on the test's Mosquitto.

* :class:`RestartableAgent`: a ``python -m sef ...`` agent started by a shell script that
  writes its pid to a file; :attr:`RestartableAgent.restart_cmd` is a ``--restart-cmd``
  that kills it with SIGKILL (the broker then publishes its will) and starts it again.
* :func:`virtual_battery`, :func:`bis_with_emulator`, :func:`ucm_with_pty_emulator`:
  context managers yielding a started, online agent (plaintext, ``--insecure``); the BIS
  talks Modbus TCP to ``sef emulate battery``, the UCM CTA-2045 over a pty to ``sef emulate
  waterheater --pty``; each joins ``groups``. Everything is stopped on exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from proc_support import SefProcess, alive
from sef.broker import Mosquitto
from sef.bus import BrokerURL

__all__ = [
    "RestartableAgent",
    "bis_with_emulator",
    "new_agent_id",
    "ucm_with_pty_emulator",
    "virtual_battery",
]

REPO = Path(__file__).resolve().parents[2]


def new_agent_id(prefix: str) -> str:
    """A unique agent id for one test."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


class RestartableAgent:
    """A SEF agent process that a shell command can kill and start again.

    Args:
        workdir: where the scripts, the pid file and the log go.
        agent_id: the agent's id (``--id``).
        args: the ``sef`` arguments (``bis --insecure --id ... --broker ...``).
        broker: the broker's URL (to see the agent online).
    """

    def __init__(self, workdir: Path, agent_id: str, args: list[str], broker: str):
        self.workdir = workdir
        self.agent_id = agent_id
        self.broker = BrokerURL.parse(broker)
        workdir.mkdir(parents=True, exist_ok=True)
        self.pidfile = workdir / "agent.pid"
        self.log = workdir / "agent.log"
        command = shlex.join([sys.executable, "-m", "sef", *args])
        self.start_script = workdir / "start.sh"
        self.start_script.write_text(
            f"cd {shlex.quote(str(REPO))}\n"
            f"PYTHONUNBUFFERED=1 nohup {command} >> {shlex.quote(str(self.log))} 2>&1 &\n"
            f"echo $! > {shlex.quote(str(self.pidfile))}\n"
        )
        restart = workdir / "restart.sh"
        restart.write_text(
            f'kill -9 "$(cat {shlex.quote(str(self.pidfile))})"\n'
            f"sh {shlex.quote(str(self.start_script))}\n"
        )
        self.restart_cmd = f"sh {shlex.quote(str(restart))}"
        self.pids: list[int] = []

    @property
    def status_topic(self) -> str:
        return f"sef/agents/{self.agent_id}/status"

    def pid(self) -> int:
        """The pid of the agent's current process."""
        return int(self.pidfile.read_text().strip())

    def start(self, timeout_s: float = 30.0, tls: ssl.SSLContext | None = None) -> RestartableAgent:
        """Start the agent; return once its retained status says online (``tls``: the
        context to watch a TLS broker with)."""
        online = threading.Event()

        def on_message(_c: Any, _u: Any, message: paho.MQTTMessage) -> None:
            if message.payload and json.loads(message.payload).get("state") == "online":
                online.set()

        watch = paho.Client(CallbackAPIVersion.VERSION2, client_id=new_agent_id("watch"))
        if tls is not None:
            watch.tls_set_context(tls)
        watch.on_message = on_message
        watch.on_connect = lambda c, *a: c.subscribe(self.status_topic, 1)
        watch.connect(self.broker.host, self.broker.port)
        watch.loop_start()
        try:
            os.system(f"sh {shlex.quote(str(self.start_script))}")
            self.pids.append(self.pid())
            if not online.wait(timeout_s):
                raise AssertionError(f"agent never online:\n{self.output()[-3000:]}")
        finally:
            watch.disconnect()
            watch.loop_stop()
        return self

    def output(self) -> str:
        """The agent's log (all its processes)."""
        return self.log.read_text() if self.log.exists() else ""

    def stop(self) -> None:
        """SIGTERM every process the agent had (SIGKILL after 5 s)."""
        with contextlib.suppress(OSError, ValueError):
            self.pids.append(self.pid())
        for pid in set(self.pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        for pid in set(self.pids):
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)


def _group_args(groups: tuple[str, ...]) -> list[str]:
    return [arg for group in groups for arg in ("--group", group)]


@contextlib.contextmanager
def virtual_battery(
    mosquitto: Mosquitto, workdir: Path, groups: tuple[str, ...] = ()
) -> Iterator[RestartableAgent]:
    """``sef agent virtual-battery`` (no device behind it)."""
    agent_id = new_agent_id("vbat")
    args = ["agent", "virtual-battery", "--insecure", "--id", agent_id, *_group_args(groups)]
    agent = RestartableAgent(workdir, agent_id, [*args, "--broker", mosquitto.url], mosquitto.url)
    try:
        yield agent.start()
    finally:
        agent.stop()


@contextlib.contextmanager
def bis_with_emulator(
    mosquitto: Mosquitto, workdir: Path, groups: tuple[str, ...] = ()
) -> Iterator[RestartableAgent]:
    """``sef bis`` polling ``sef emulate battery`` over Modbus TCP."""
    emulator = SefProcess("emulate", "battery", "--port", "0")
    try:
        port = emulator.wait_line(r"listening on [\d.]+:(\d+)").group(1)
        agent_id = new_agent_id("bis")
        args = ["bis", "--insecure", "--modbus", f"tcp://127.0.0.1:{port}", "--id", agent_id]
        args += ["--broker", mosquitto.url, "--poll", "0.5", *_group_args(groups)]
        agent = RestartableAgent(workdir, agent_id, args, mosquitto.url)
        try:
            yield agent.start()
        finally:
            agent.stop()
    finally:
        emulator.signal_and_wait(signal.SIGTERM, 5.0)
        emulator.kill()


@contextlib.contextmanager
def ucm_with_pty_emulator(
    mosquitto: Mosquitto, workdir: Path, groups: tuple[str, ...] = ()
) -> Iterator[RestartableAgent]:
    """``sef ucm`` talking CTA-2045 over a pty to ``sef emulate waterheater --pty``."""
    emulator = SefProcess("emulate", "waterheater", "--pty", "--no-draws")
    try:
        pty = emulator.wait_line(r"ready on (\S+)").group(1)
        agent_id = new_agent_id("ucm")
        args = ["ucm", "--insecure", "--serial", pty, "--id", agent_id]
        args += ["--broker", mosquitto.url, "--poll", "0.5", *_group_args(groups)]
        agent = RestartableAgent(workdir, agent_id, args, mosquitto.url)
        try:
            yield agent.start()
        finally:
            agent.stop()
    finally:
        emulator.signal_and_wait(signal.SIGTERM, 5.0)
        emulator.kill()

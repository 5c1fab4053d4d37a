"""Helpers for tests that run ``python -m sef ...`` as real processes and signal them."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


def ignore_sigint() -> None:
    """``preexec_fn`` of a child started the way ``nohup`` or some supervisors do."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class SefProcess:
    """A ``python -m sef ARGS`` child whose output lines are collected by a thread."""

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.args = args
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sef", *args],
            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=preexec_fn,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            self._new.put(line)

    def output(self) -> str:
        """Everything the child printed so far."""
        return "".join(self.lines)

    def wait_line(self, pattern: str, timeout_s: float = 30.0) -> re.Match[str]:
        """The first output line matching regex ``pattern`` (earlier lines included)."""
        regex = re.compile(pattern)
        for line in list(self.lines):
            if match := regex.search(line):
                return match
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or (self.process.poll() is not None and self._new.empty()):
                raise AssertionError(
                    f"no line matching {pattern!r} from sef {' '.join(self.args)} "
                    f"(exit {self.process.poll()}):\n{self.output()[-3000:]}"
                )
            try:
                line = self._new.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            if match := regex.search(line):
                return match

    def signal_and_wait(self, signum: int, timeout_s: float = 10.0) -> int | None:
        """Send ``signum``; the exit code, or ``None`` if still running after ``timeout_s``."""
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL the child if it still runs (test cleanup)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


def children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def descendants_of(pid: int) -> list[int]:
    """Every process below ``pid``."""
    out: list[int] = []
    todo = [pid]
    while todo:
        kids = children_of(todo.pop())
        out += kids
        todo += kids
    return out


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def command_name(pid: int) -> str:
    """The ``comm`` of process ``pid`` ('' when gone)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class Retained:
    """A paho client that keeps the last payload of every topic it is subscribed to."""

    def __init__(self, port: int, *topics: str) -> None:
        self.last: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="")
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe([(t, 1) for t in topics])
        assert subscribed.wait(5), "no SUBACK"

    def _on_message(self, _c: Any, _u: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.last[message.topic] = bytes(message.payload)

    def json(self, topic: str) -> dict[str, Any] | None:
        """The last payload on ``topic`` as JSON, or ``None``."""
        with self._lock:
            payload = self.last.get(topic)
        return None if not payload else json.loads(payload)

    def wait(
        self, topic: str, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 20.0
    ) -> dict[str, Any]:
        """Wait until the last payload on ``topic`` satisfies ``predicate``; return it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = self.json(topic)
            if value is not None and predicate(value):
                return value
            time.sleep(0.05)
        raise AssertionError(f"{topic}: last payload {self.json(topic)!r}")

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def is_online(status: dict[str, Any]) -> bool:
    """A status payload that says online."""
    return status.get("state") == "online"


def stop_all(processes: Sequence[SefProcess]) -> None:
    """SIGKILL whatever is still running (cleanup after a failed assertion)."""
    for process in processes:
        process.kill()

"""Start the demo's processes (emulators and agents), wait until each is ready, stop them all.

Every device and agent runs as its own ``sef`` process, as it would in the field; the
demo reads each process's first line to learn where it listens (a TCP port, a pty path).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sef.process_guard import start_guard, stop_guard

__all__ = ["DemoProcesses", "ProcessFailed"]


class ProcessFailed(RuntimeError):
    """A demo process exited or did not report ready in time."""


@dataclass
class _Child:
    name: str
    process: subprocess.Popen[str]
    log_path: Path
    guard: subprocess.Popen[bytes] | None = None
    """SIGTERM to the child if the demo itself dies without stopping it (SIGKILL)."""


@dataclass
class DemoProcesses:
    """The demo's child processes; their output goes to ``log_dir/NAME.log``.

    Args:
        env: environment for every child (``SEF_CLOCK`` makes them share one clock).
        log_dir: where each child's output is kept.
    """

    env: dict[str, str]
    log_dir: Path
    children: list[_Child] = field(default_factory=list)
    stopped: bool = field(default=False, init=False)
    """Set by :meth:`stop_all`: a start still under way (in another thread) is undone."""
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def start(
        self,
        name: str,
        args: Sequence[str],
        ready: str,
        timeout_s: float = 30.0,
        env: Mapping[str, str] | None = None,
    ) -> str:
        """Start ``sef ARGS`` (with ``env`` added to its environment: e.g. a secret kept off
        the command line); return the first match of regex ``ready`` in its output."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "sef", *args],
            env={**os.environ, **self.env, **(env or {}), "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )  # Ctrl-C reaches the demo only; it stops the children
        child = _Child(name, process, log_path, start_guard(process.pid, name="sef-demo-guard"))
        with self._lock:
            stopped = self.stopped
            if not stopped:
                self.children.append(child)
        if stopped:  # the demo is shutting down (a signal) while this one was starting
            _stop([child], timeout_s=5.0)
            raise ProcessFailed(f"{name}: the demo is stopping")
        pattern = re.compile(ready)
        found: list[str] = []
        done = threading.Event()

        def pump() -> None:
            assert process.stdout is not None
            with log_path.open("w") as log:
                for line in process.stdout:
                    log.write(line)
                    log.flush()
                    match = pattern.search(line)
                    if match and not done.is_set():
                        found.append(match.group(1) if match.groups() else line.strip())
                        done.set()
            done.set()

        threading.Thread(target=pump, name=f"log:{name}", daemon=True).start()
        if not done.wait(timeout_s) or not found:
            raise ProcessFailed(f"{name} did not become ready (see {log_path})")
        return found[0]

    def stop_all(self, timeout_s: float = 5.0) -> None:
        """SIGTERM every child (agents publish their ``shutdown`` status and disconnect),
        then SIGKILL what remains after ``timeout_s``; every child is waited for."""
        with self._lock:
            self.stopped = True
            children = list(self.children)
        _stop(children, timeout_s)


def _stop(children: Sequence[_Child], timeout_s: float) -> None:
    for child in reversed(children):
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for child in children:
        try:
            child.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()
        stop_guard(child.guard)
        child.guard = None

"""Start a local Mosquitto broker on a free port (for the demo, tests and benches)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BrokerNotFound", "Mosquitto", "find_mosquitto", "free_port"]


class BrokerNotFound(RuntimeError):
    """No Mosquitto executable on this machine."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def find_mosquitto() -> str:
    """Path of the ``mosquitto`` executable, or raise :class:`BrokerNotFound` with a hint."""
    candidates = (shutil.which("mosquitto"), "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    raise BrokerNotFound(
        "mosquitto is not installed: run 'apt-get install mosquitto' "
        "(make test and make demo do it when run as root)"
    )


@dataclass
class Mosquitto:
    """A Mosquitto process listening on ``host:port`` with a throwaway config directory."""

    port: int = 0
    host: str = "127.0.0.1"
    workdir: Path | None = None
    extra_config: str = ""
    """Extra ``mosquitto.conf`` lines, appended (so they override the defaults above them)."""
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        """The broker's URL, ``mqtt://127.0.0.1:PORT``."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        """Where the broker writes its log."""
        assert self.workdir is not None
        return self.workdir / "mosquitto.log"

    def start(self, timeout_s: float = 10.0) -> Mosquitto:
        """Start the broker and wait until it accepts connections."""
        exe = find_mosquitto()
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="sef-mosquitto-")
            self.workdir = Path(self._tmp.name)
        if not self.port:
            self.port = free_port(self.host)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "max_inflight_messages 1000\n"
            # without it a small publish can wait for the peer's delayed ACK (up to 40 ms)
            "set_tcp_nodelay true\n"
            "max_queued_messages 100000\n"
            "message_size_limit 0\n"
            f"log_dest file {self.log_path}\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            + (self.extra_config.rstrip("\n") + "\n" if self.extra_config else "")
        )
        self.process = subprocess.Popen(
            [exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"mosquitto exited with {self.process.returncode}: {stderr}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.host}:{self.port}")

    def stop(self) -> None:
        """Stop the broker and remove its directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

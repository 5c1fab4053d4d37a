"""Start a local Mosquitto broker on a free port (for the demo, tests and benches), and
the sizing of a broker's limits: packet size and the queue that carries an outage.

**Packet size.** The bus refuses payloads over 256 KiB (``docs/protocol.md`` §5); the
broker refuses, and disconnects, a client whose packet exceeds :data:`MAX_PACKET_BYTES`
(that limit plus room for the topic and the MQTT header), so an oversized publish never
reaches a subscriber.

**Outage budget.** The EMS acknowledges a message only once its store committed it;
meanwhile the broker keeps the message for the EMS's session, up to
``max_inflight_messages`` unacknowledged plus ``max_queued_messages`` queued (and at most
``max_queued_bytes`` of payload). Past that the broker *drops* messages for the EMS
(Mosquitto logs "Outgoing messages are being dropped"). To ride out a store outage or
an EMS restart of ``outage_s`` seconds at an ingest rate of ``rate_per_s`` messages per
second the queue must hold ``rate_per_s × outage_s`` messages: :class:`QueueBudget`
sizes the shipped configuration, :class:`BrokerLimits` reads a configuration and checks
it against a budget (``sef ems --broker-config``).
"""

from __future__ import annotations

import math
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from sef.process_guard import start_guard, stop_guard

__all__ = [
    "DEFAULT_BUDGET",
    "LOG_NAME",
    "MAX_PACKET_BYTES",
    "BrokerLimits",
    "BrokerNotFound",
    "Mosquitto",
    "QueueBudget",
    "find_mosquitto",
    "free_port",
]

MAX_PACKET_BYTES = 256 * 1024 + 4 * 1024
"""Largest MQTT packet the shipped broker accepts: the bus's 262 144-byte payload limit
plus 4 KiB for the fixed header, the topic (a few hundred bytes at most), the packet id
and MQTT 5 properties."""


@dataclass(frozen=True)
class QueueBudget:
    """What the broker must hold for the EMS while it cannot acknowledge.

    Args:
        rate_per_s: messages per second the agents publish to the EMS (its ingest rate).
        outage_s: the longest store outage or EMS restart to ride out without loss, s.
        message_bytes: assumed payload size per message, for ``max_queued_bytes``
            (telemetry is about 700 bytes; 2 KiB leaves a margin).
    """

    rate_per_s: float = 2000.0
    outage_s: float = 60.0
    message_bytes: int = 2048

    @property
    def messages(self) -> int:
        """Messages the queue must hold: ``rate_per_s × outage_s``."""
        return math.ceil(self.rate_per_s * self.outage_s)

    @property
    def queued_bytes(self) -> int:
        """Payload bytes the queue must hold: ``messages × message_bytes``."""
        return self.messages * self.message_bytes

    def mosquitto_config(self) -> str:
        """The ``mosquitto.conf`` lines that size the per-client queue for this budget."""
        return f"max_queued_messages {self.messages}\nmax_queued_bytes {self.queued_bytes}\n"


DEFAULT_BUDGET = QueueBudget()
"""The shipped sizing: 2 000 msg/s for 60 s (120 000 messages, 234 MiB of payload)."""


@dataclass(frozen=True)
class BrokerLimits:
    """The queue limits of a Mosquitto configuration (Mosquitto's defaults when absent).

    ``0`` means unlimited for ``max_queued_messages`` and ``max_queued_bytes``.
    """

    max_queued_messages: int = 1000
    max_queued_bytes: int = 0
    max_inflight_messages: int = 20

    @classmethod
    def parse(cls, text: str) -> BrokerLimits:
        """The limits set by the text of a ``mosquitto.conf`` (the last setting wins)."""
        found: dict[str, int] = {}
        for raw in text.splitlines():
            words = raw.split("#", 1)[0].split()
            if len(words) == 2 and words[0] in (
                "max_queued_messages",
                "max_queued_bytes",
                "max_inflight_messages",
            ):
                try:
                    found[words[0]] = int(words[1])
                except ValueError:
                    raise ValueError(f"{words[0]}: not an integer: {words[1]!r}") from None
        return cls(**found)

    @classmethod
    def read(cls, path: Path | str) -> BrokerLimits:
        """The limits of the ``mosquitto.conf`` at ``path`` (``include_dir`` not followed)."""
        return cls.parse(Path(path).read_text())

    def holds(self, budget: QueueBudget) -> float:
        """Messages of ``budget``'s size the broker keeps for one client (``inf``: no limit)."""
        limits = []
        if self.max_queued_messages > 0:
            limits.append(float(self.max_queued_messages))
        if self.max_queued_bytes > 0:
            limits.append(float(self.max_queued_bytes // budget.message_bytes))
        return (min(limits) if limits else math.inf) + max(0, self.max_inflight_messages)

    def shortfall(self, budget: QueueBudget) -> str | None:
        """Why these limits cannot hold ``budget`` (with the numbers), or ``None``."""
        holds = self.holds(budget)
        if holds >= budget.messages:
            return None
        seconds = holds / budget.rate_per_s if budget.rate_per_s > 0 else math.inf
        return (
            f"the broker keeps at most {holds:.0f} messages for the EMS "
            f"(max_queued_messages {self.max_queued_messages}, max_queued_bytes "
            f"{self.max_queued_bytes} at {budget.message_bytes} B/message, "
            f"max_inflight_messages {self.max_inflight_messages}), {seconds:.1f} s at "
            f"{budget.rate_per_s:g} msg/s; the outage budget needs {budget.rate_per_s:g} "
            f"msg/s x {budget.outage_s:g} s = {budget.messages} messages. Past that the "
            f"broker drops messages. Set max_queued_messages >= {budget.messages} and "
            f"max_queued_bytes >= {budget.queued_bytes} (or 0), or lower the budget"
        )


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


LOG_NAME = "mosquitto.log"
"""File name of a broker's log, in its log directory."""


def _start_guard(broker_pid: int) -> subprocess.Popen[bytes] | None:
    """Start the guard of broker ``broker_pid`` (:mod:`sef.process_guard`): SIGTERM when
    the process that started it ends without stopping it."""
    return start_guard(broker_pid, name="sef-broker-guard")


@dataclass
class Mosquitto:
    """A Mosquitto process listening on ``host:port`` with a throwaway config directory.

    **Log.** The broker logs to ``mosquitto.log`` in :attr:`log_dir` (default: the work
    directory). The file is opened here, by the starting process, and handed to Mosquitto
    as its stderr (``log_dest stderr``): Mosquitto started as root drops to the
    ``mosquitto`` account before it opens a ``log_dest file``, which then fails in a
    directory (or below one) only root may enter, such as a 0700 temporary directory or
    ``/root``; an inherited descriptor is writable whatever account it runs as.
    Start-up errors Mosquitto prints land in the same file.
    """

    port: int = 0
    host: str = "127.0.0.1"
    workdir: Path | None = None
    extra_config: str = ""
    """Extra ``mosquitto.conf`` lines, appended (so they override the defaults above them)."""
    budget: QueueBudget = DEFAULT_BUDGET
    """The outage budget the per-client queue is sized for."""
    max_packet_bytes: int | None = MAX_PACKET_BYTES
    """Largest packet accepted (``None``: Mosquitto's own limit, for tests that need an
    oversized payload to reach its receiver)."""
    log_dir: Path | None = None
    """Directory of the broker's log :data:`LOG_NAME` (created if missing); ``None``: the
    work directory."""
    tuning: str | None = None
    """``mosquitto.conf`` lines that replace the default tuning (persistence, in-flight
    and queue limits, packet size, TCP_NODELAY): the production settings of
    :class:`sef.broker_fleet.FleetSizing`. With it the broker also gets this process's
    RLIMIT_NOFILE raised to the hard limit (one socket per agent). ``None``: the
    defaults below, for the demo, tests and benches."""
    config_file: Path | None = None
    """Run with this configuration as it is (written elsewhere, e.g. the mutual-TLS +
    ACL one of :func:`sef.security.write_broker_config`, whose listener must be
    ``host:port``) instead of writing one into the work directory."""
    die_with_parent: bool = True
    """The broker gets SIGTERM when the process that started it ends without stopping it
    (killed with SIGKILL, crashed): a guard process watches it (:func:`_start_guard`)."""
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    guard: subprocess.Popen[bytes] | None = field(default=None, init=False)
    """The guard process (:mod:`sef.process_guard`), while the broker runs."""
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        """The broker's URL, ``mqtt://127.0.0.1:PORT``."""
        return f"mqtt://{self.host}:{self.port}"

    def config_text(self) -> str:
        """The ``mosquitto.conf`` :meth:`start` writes (``port`` as set, ``0`` before a
        free one was chosen): a plain listener, the tuning, logging to stderr."""
        tuning = self.tuning
        if tuning is None:
            tuning = (
                "persistence false\n"
                "max_inflight_messages 1000\n"
                # without it a small publish can wait for the peer's delayed ACK (up to 40 ms)
                "set_tcp_nodelay true\n"
                # an oversized packet is refused (its client disconnected), never forwarded
                + (f"max_packet_size {self.max_packet_bytes}\n" if self.max_packet_bytes else "")
                # what the EMS's session can fall behind by before the broker drops messages
                + self.budget.mosquitto_config()
            )
        return (
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            + tuning.rstrip("\n")
            + "\n"
            # stderr is self.log_path, opened by start (see the class docstring)
            + "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            + (self.extra_config.rstrip("\n") + "\n" if self.extra_config else "")
        )

    @property
    def config_path(self) -> Path:
        """The broker's ``mosquitto.conf`` (written by :meth:`start`)."""
        if self.config_file is not None:
            return self.config_file
        assert self.workdir is not None
        return self.workdir / "mosquitto.conf"

    @property
    def limits(self) -> BrokerLimits:
        """The queue limits of the configuration the broker runs with."""
        return BrokerLimits.read(self.config_path)

    @property
    def log_path(self) -> Path:
        """Where the broker writes its log: :data:`LOG_NAME` in :attr:`log_dir`."""
        directory = self.log_dir if self.log_dir is not None else self.workdir
        assert directory is not None
        return directory / LOG_NAME

    def start(self, timeout_s: float = 10.0) -> Mosquitto:
        """Start the broker and wait until it accepts connections."""
        exe = find_mosquitto()
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="sef-mosquitto-")
            self.workdir = Path(self._tmp.name)
        if not self.port:
            self.port = free_port(self.host)
        conf = self.config_path
        if self.config_file is None:
            conf.write_text(self.config_text())
        if self.tuning is not None:
            from sef.broker_fleet import raise_nofile_limit

            raise_nofile_limit()  # Mosquitto inherits it: one socket per agent
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logged_before = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [exe, "-c", str(conf)],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        if self.die_with_parent:
            self.guard = _start_guard(self.process.pid)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._stop_guard()
                with self.log_path.open("rb") as log:
                    log.seek(logged_before)
                    said = log.read().decode(errors="replace").strip()
                raise RuntimeError(f"mosquitto exited with {self.process.returncode}: {said}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.host}:{self.port}")

    def _stop_guard(self) -> None:
        """Stop the guard first: it must not signal a later process given the broker's pid."""
        guard, self.guard = self.guard, None
        stop_guard(guard)

    def stop(self) -> None:
        """Stop the broker (and its guard) and remove its directory."""
        self._stop_guard()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

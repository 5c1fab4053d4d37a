"""A local cluster for tests and demos (``sef cluster up``): N NATS nodes with MQTT
listeners (:class:`~sef.cluster.BrokerCluster`), a PostgreSQL (unless a store URL is
given) and W EMS worker processes (``sef cluster worker``, :class:`~sef.cluster.WorkerEMS`),
each with its own API port. Plaintext and without authentication: a lab setup.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from sef.cluster._nats import BrokerCluster
from sef.process_guard import start_guard, stop_guard

if TYPE_CHECKING:
    from sef.ems.store.pgserver import PostgresServer

__all__ = ["LocalCluster", "WorkerProcess"]

log = logging.getLogger("sef.cluster.local")

_API_LINE = re.compile(r"^worker \S+: API on (https?://\S+)")


@dataclass
class WorkerProcess:
    """One ``sef cluster worker`` process and what it printed."""

    worker_id: str
    process: subprocess.Popen[str]
    guard: subprocess.Popen[bytes] | None = None
    api_url: str | None = None
    output: deque[str] = field(default_factory=lambda: deque(maxlen=200))
    _ready: threading.Event = field(default_factory=threading.Event)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.output.append(line.rstrip("\n"))
            found = _API_LINE.search(line)
            if found and self.api_url is None:
                self.api_url = found.group(1)
                self._ready.set()
        self._ready.set()  # it exited

    def wait_ready(self, timeout_s: float) -> str:
        """The worker's API URL once it serves; :class:`RuntimeError` with its output if
        it exited or took longer than ``timeout_s``."""
        self._ready.wait(timeout_s)
        if self.api_url is None:
            tail = "\n".join(list(self.output)[-30:])
            raise RuntimeError(f"worker {self.worker_id} not ready in {timeout_s:g} s:\n{tail}")
        return self.api_url


@dataclass
class LocalCluster:
    """Broker nodes, a store and EMS workers on this machine.

    Args:
        nodes: NATS nodes (3: one may die).
        workers: EMS worker processes.
        workdir: directory for the nodes' stores and logs (default: temporary; the
            PostgreSQL started here has its own temporary directory, the workers' output
            is kept in memory, :attr:`WorkerProcess.output`).
        store_url: the workers' database (default: a PostgreSQL started here).
        api_host: address of the workers' APIs.
        api_port: first worker's API port (the next ones follow); 0: free ports.
        ack_wait_s: how long a dead worker's unacknowledged messages wait before another
            worker gets them, s.
        log_level: the workers' log level.
        max_agents: most agents in each worker's registry.
        js_api_timeout_s: the nodes' ``mqtt { js_api_timeout }``: how long MQTT waits for
            a JetStream API call before giving up (and closing the client's connection),
            s; ``None``: NATS's default (5 s). Above the JetStream re-election time after
            a node loss, healthy clients of the surviving nodes are not dropped.
    """

    nodes: int = 3
    workers: int = 2
    workdir: Path | None = None
    store_url: str | None = None
    api_host: str = "127.0.0.1"
    api_port: int = 0
    ack_wait_s: float = 30.0
    log_level: str = "WARNING"
    max_agents: int = 10_000
    """Most agents in each worker's registry (admitted at up to 1 000 new agents per s)."""
    js_api_timeout_s: float | None = None
    broker: BrokerCluster | None = None
    postgres: PostgresServer | None = None
    procs: list[WorkerProcess] = field(default_factory=list)

    def start(self, timeout_s: float = 120.0) -> LocalCluster:
        """Start the nodes, the store and the workers; return once every worker serves."""
        if self.nodes < 1 or self.workers < 1:
            raise ValueError("need at least one node and one worker")
        try:
            nats_dir = self.workdir / "nats" if self.workdir is not None else None
            extra = (
                f'js_api_timeout: "{self.js_api_timeout_s:g}s"'
                if self.js_api_timeout_s is not None
                else ""
            )
            self.broker = BrokerCluster(
                nodes=self.nodes, workdir=nats_dir, extra_mqtt=extra
            ).start()
            if self.store_url is None:
                self.store_url = self._postgres()
            self._migrate(self.store_url)
            for index in range(self.workers):
                self.procs.append(self._spawn(index))
            for proc in self.procs:
                proc.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _migrate(url: str) -> None:
        """Create or migrate the schema once, here: workers that start together would
        race each other's migrations (two ``CREATE TABLE alembic_version``)."""
        from sef.ems.store import Store

        Store.open(url).close()

    def _postgres(self) -> str:
        from sef.ems.store.pgserver import PostgresServer

        path = os.environ.get("PATH", "")
        extra = [d for d in ("/usr/sbin", "/sbin") if d not in path.split(os.pathsep)]
        os.environ["PATH"] = os.pathsep.join([path, *extra]) if extra else path  # runuser
        server = PostgresServer().start()
        self.postgres = server
        return server.create_database("sef")

    def _spawn(self, index: int) -> WorkerProcess:
        assert self.broker is not None and self.store_url is not None
        worker_id = f"ems-w{index}"
        port = self.api_port + index if self.api_port else 0
        command = [
            sys.executable,
            "-m",
            "sef",
            "--log-level",
            self.log_level,
            "cluster",
            "worker",
            "--id",
            worker_id,
            "--nats",
            ",".join(self.broker.nats_urls),
            "--broker",
            ",".join(self.broker.urls),
            "--store",
            self.store_url,
            "--api",
            f"{self.api_host}:{port}",
            "--ack-wait",
            f"{self.ack_wait_s:g}",
            "--max-agents",
            str(self.max_agents),
            "--new-agents-per-s",
            "1000",
            "--insecure",
        ]
        env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        proc = WorkerProcess(worker_id, process, guard=start_guard(process.pid))
        assert process.stdout is not None
        threading.Thread(target=proc._read, args=(process.stdout,), daemon=True).start()
        return proc

    @property
    def api_urls(self) -> list[str]:
        return [proc.api_url or "" for proc in self.procs]

    def kill_worker(self, index: int) -> None:
        """SIGKILL worker ``index`` (a crash: nothing committed or acknowledged after)."""
        proc = self.procs[index]
        _stop_guard(proc)
        if proc.running:
            proc.process.send_signal(signal.SIGKILL)
            proc.process.wait()

    def restart_worker(self, index: int, timeout_s: float = 120.0) -> str:
        """Start worker ``index`` again (after :meth:`kill_worker`); its API URL."""
        if self.procs[index].running:
            raise RuntimeError(f"worker {index} is running: kill it first")
        self.procs[index] = self._spawn(index)
        return self.procs[index].wait_ready(timeout_s)

    def stop(self) -> None:
        """Stop the workers (SIGTERM, SIGKILL after 15 s), then the nodes and the store."""
        for proc in self.procs:
            _stop_guard(proc)
            if proc.running:
                proc.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs:
            try:
                proc.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.process.kill()
                proc.process.wait()
        if self.broker is not None:
            self.broker.stop()
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stop_guard(proc: WorkerProcess) -> None:
    guard, proc.guard = proc.guard, None
    stop_guard(guard)

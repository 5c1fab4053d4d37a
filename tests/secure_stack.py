"""A deployment CA and a real Mosquitto in mutual-TLS mode with the generated ACL, for tests.

Usage::

    ca = make_pki(tmp_path)
    ems_security = security_for(ca, "ems-1", Role.EMS)
    async with secure_broker(ca, tmp_path) as broker:      # or with the ``secure_broker``
        bus = BusClient(broker.url, tls=ems_security.client_tls())  # context manager
        agent = broker.security_for("bat-1", Role.AGENT, groups=("g1",))  # issues + reloads

The broker's ACL is generated from the CA's index when the broker starts: identities
issued later have no rights until :meth:`SecureBroker.reload` (which
:meth:`SecureBroker.security_for` calls for you). The broker runs from
``sef.security.write_broker_config``'s files, exactly as ``sef pki broker-config`` writes
them (plus ``user root`` when the tests run as root, so it can read the 0600 key in a
0700 test directory).

:class:`Probe` is a small synchronous paho client for acceptance tests: it connects with
or without TLS, publishes at QoS 1 and returns the PUBACK's reason code (MQTT 5), and
collects what it receives.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from sef.broker import find_mosquitto, free_port
from sef.security import (
    BrokerFiles,
    CertificateAuthority,
    Role,
    Security,
    write_broker_acl,
    write_broker_config,
)

IdentitySpec = tuple[str, Role, tuple[str, ...], str | None]
"""(identity, role, groups, home) of a certificate to issue."""


def make_pki(tmp_path: Path, identities: Iterable[IdentitySpec] = ()) -> CertificateAuthority:
    """A fresh deployment CA in ``tmp_path/pki`` with ``identities`` issued."""
    ca = CertificateAuthority.init(tmp_path / "pki", "SEF test CA")
    for identity, role, groups, home in identities:
        ca.issue(identity, role, groups=groups, home=home)
    return ca


def ensure_issued(
    ca: CertificateAuthority,
    identity: str,
    role: Role,
    groups: tuple[str, ...] = (),
    home: str | None = None,
) -> bool:
    """Issue ``identity`` unless its current certificate already has this role, these
    groups and this home; returns whether a certificate was issued."""
    current = ca.current().get(identity)
    if (
        current is not None
        and current.role is role
        and current.groups == tuple(groups)
        and current.home == home
        and ca.key_path(identity).exists()
    ):
        return False
    ca.issue(identity, role, groups=tuple(groups), home=home)
    return True


def security_for(
    ca: CertificateAuthority,
    identity: str,
    role: Role,
    groups: tuple[str, ...] = (),
    home: str | None = None,
) -> Security:
    """The credentials of ``identity`` (issued now if it has no matching certificate)."""
    ensure_issued(ca, identity, role, groups, home)
    return Security.load(ca.cert_path(identity), ca.key_path(identity), ca.ca_path, ca.crl_path)


@dataclass
class SecureBroker:
    """A running Mosquitto with the configuration of ``sef pki broker-config``."""

    ca: CertificateAuthority
    files: BrokerFiles
    port: int
    process: subprocess.Popen[bytes]
    root: str = "sef"
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        """``mqtts://127.0.0.1:PORT`` (MQTT 3.1.1; add ``?version=5`` for MQTT 5)."""
        return f"mqtts://{self.host}:{self.port}"

    @property
    def log_text(self) -> str:
        return self.files.log.read_text() if self.files.log.exists() else ""

    def security_for(
        self,
        identity: str,
        role: Role,
        groups: tuple[str, ...] = (),
        home: str | None = None,
    ) -> Security:
        """Credentials of ``identity``; a newly issued certificate gets its ACL rights at
        once (the ACL is regenerated and the broker reloaded)."""
        if ensure_issued(self.ca, identity, role, groups, home):
            self.reload()
        return security_for(self.ca, identity, role, groups, home)

    def reload(self, timeout_s: float = 10.0) -> None:
        """Regenerate the ACL and CRL from the CA, SIGHUP the broker, and wait until it has
        reloaded (Mosquitto 2.0 re-reads the ACL file *and* the CRL on SIGHUP)."""
        write_broker_acl(self.ca, self.files.dir, self.root)
        before = self.log_text.count("Reloading config")
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout_s
        while self.log_text.count("Reloading config") <= before:
            if time.monotonic() > deadline:
                raise AssertionError(f"mosquitto did not reload within {timeout_s} s")
            time.sleep(0.01)
        time.sleep(0.05)  # the reload runs in the loop iteration that logged it

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()


def start_secure_broker(
    ca: CertificateAuthority,
    workdir: Path,
    *,
    root: str = "sef",
    timeout_s: float = 10.0,
) -> SecureBroker:
    """Write the broker configuration into ``workdir/broker`` on a free port and start
    ``mosquitto -c`` on it; returns once it runs (ready for SIGHUP) and accepts TCP
    connections."""
    broker_dir = workdir / "broker"
    port = free_port()
    files = write_broker_config(
        ca,
        broker_dir,
        port=port,
        hosts=("localhost", "127.0.0.1", "::1"),
        root=root,
        bind="127.0.0.1",
        log_file=broker_dir / "mosquitto.log",
        user="root" if os.geteuid() == 0 else None,
    )
    process = subprocess.Popen(
        [find_mosquitto(), "-c", str(files.conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    broker = SecureBroker(ca, files, port, process, root)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = process.stderr.read().decode() if process.stderr else ""
            broker.stop()
            raise RuntimeError(
                f"mosquitto exited with {process.returncode}: {stderr}{broker.log_text}"
            )
        # "running" is logged once its signal handlers are set up: a SIGHUP (reload)
        # before that, right after the port opened, would terminate it
        if " running" in broker.log_text:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=0.2),
            ):
                return broker
        time.sleep(0.02)
    broker.stop()
    raise RuntimeError(f"mosquitto did not listen on 127.0.0.1:{port}")


@contextlib.contextmanager
def running_secure_broker(
    ca: CertificateAuthority, workdir: Path, *, root: str = "sef"
) -> Iterator[SecureBroker]:
    """:func:`start_secure_broker`, stopped on exit."""
    broker = start_secure_broker(ca, workdir, root=root)
    try:
        yield broker
    finally:
        broker.stop()


@contextlib.asynccontextmanager
async def secure_broker(
    ca: CertificateAuthority, workdir: Path, *, root: str = "sef"
) -> AsyncIterator[SecureBroker]:
    """The async form of :func:`running_secure_broker` (for ``async with``)."""
    with running_secure_broker(ca, workdir, root=root) as broker:
        yield broker


# -- a synchronous MQTT probe ------------------------------------------------------------

NOT_AUTHORIZED = 0x87
"""MQTT 5 reason code of a PUBACK for a publish the broker's ACL denied."""


def tls_of(security: Security | None, ca: CertificateAuthority | None = None) -> ssl.SSLContext:
    """A client TLS context: ``security``'s certificate, or none (trusting ``ca`` only)."""
    if security is not None:
        return security.client_tls()
    assert ca is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(ca.ca_path))
    return context


class Probe:
    """One MQTT connection (MQTT 5 unless ``v5`` is false)."""

    def __init__(
        self, port: int, tls: ssl.SSLContext | None, client_id: str, *, v5: bool = True
    ) -> None:
        self.port = port
        self.messages: list[tuple[str, bytes]] = []
        self.acks: dict[int, int] = {}
        self.connack: int | None = None
        self.disconnects: list[int] = []
        self._cond = threading.Condition()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        )
        self.client.reconnect_delay_set(60, 120)  # a refused client stays refused
        if tls is not None:
            self.client.tls_set_context(tls)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe

    # -- callbacks (paho's network thread) ----------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: ReasonCode, p: Any) -> None:
        with self._cond:
            self.connack = rc.value
            self._cond.notify_all()

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, rc: ReasonCode, p: Any
    ) -> None:
        with self._cond:
            self.disconnects.append(rc.value)
            self._cond.notify_all()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((message.topic, bytes(message.payload)))
            self._cond.notify_all()

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: ReasonCode, p: Any) -> None:
        with self._cond:
            self.acks[mid] = rc.value
            self._cond.notify_all()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, rcs: Any, p: Any) -> None:
        with self._cond:
            self.acks[mid] = rcs[0].value
            self._cond.notify_all()

    # -- actions ------------------------------------------------------------------
    def _wait(self, predicate: Callable[[], Any], timeout_s: float) -> bool:
        with self._cond:
            return bool(self._cond.wait_for(predicate, timeout_s))

    def connect(self, timeout_s: float = 5.0) -> str:
        """``"connected"``, or why not (an exception's text, a refusal, a disconnect)."""
        try:
            self.client.connect("127.0.0.1", self.port, keepalive=30)
        except (OSError, ssl.SSLError) as exc:
            return f"error: {exc!r}"
        self.client.loop_start()
        self._wait(lambda: self.connack is not None or self.disconnects, timeout_s)
        if self.connack == 0 and not self.disconnects:
            return "connected"
        return f"refused: connack {self.connack}, disconnects {self.disconnects}"

    def publish(self, topic: str, payload: bytes = b"x", timeout_s: float = 5.0) -> int:
        """Publish at QoS 1; return the PUBACK's reason code (0 = accepted)."""
        info = self.client.publish(topic, payload, qos=1)
        assert self._wait(lambda: info.mid in self.acks, timeout_s), f"no PUBACK for {topic}"
        return self.acks[info.mid]

    def subscribe(self, pattern: str, timeout_s: float = 5.0) -> int:
        """Subscribe at QoS 1; return the SUBACK's reason code (granted QoS or an error)."""
        _, mid = self.client.subscribe(pattern, qos=1)
        assert mid is not None
        assert self._wait(lambda: mid in self.acks, timeout_s), f"no SUBACK for {pattern}"
        return self.acks[mid]

    def wait_for(self, topic: str, payload: bytes, timeout_s: float = 5.0) -> None:
        """Wait until ``(topic, payload)`` was received."""
        assert self._wait(lambda: (topic, payload) in self.messages, timeout_s), (
            f"{topic} {payload!r} not received; got {self.messages}"
        )

    def received(self, topic: str) -> list[bytes]:
        with self._cond:
            return [payload for t, payload in self.messages if t == topic]

    @property
    def connected(self) -> bool:
        return bool(self.client.is_connected())

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(predicate: Callable[[], Any], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.01)

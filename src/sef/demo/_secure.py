"""The secure demo's throwaway PKI and broker: a deployment CA made for this run in
``OUT/pki``, one certificate per process (the EMS, each agent), and Mosquitto in
mutual-TLS + ACL mode from ``sef pki broker-config``'s configuration in ``OUT/broker``.

Nothing here is meant to outlive the run: the CA lives a week and is replaced by the next
``sef demo`` with the same ``--out``. Its key sits next to the report (mode 0600); a real
deployment keeps its CA key offline (``docs/security.md``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.x509.oid import NameOID

from sef.broker import BrokerNotFound, find_mosquitto, free_port
from sef.demo._der import EVSession, OcppCredentials
from sef.process_guard import start_guard, stop_guard
from sef.security import (
    BrokerFiles,
    CertificateAuthority,
    Role,
    Security,
    SecurityError,
    load_certificate,
    write_broker_config,
)

__all__ = ["DemoPki", "mosquitto_available"]

CA_DAYS = 7
"""Lifetime of the demo's CA, days (its certificates end with it)."""

CA_NAME = "SEF demo CA (throwaway)"
"""Subject name of the demo's CA: only a CA of this name is replaced by the next run."""


def _demo_owned(directory: Path) -> bool:
    """Whether ``directory`` holds nothing but a previous demo's CA or broker (its
    ``ca.crt`` names :data:`CA_NAME`), so that it may be replaced."""
    ca_file = directory / "ca.crt"
    if not ca_file.is_file():
        return not any(directory.iterdir())
    try:
        cert = load_certificate(ca_file.read_bytes())
    except SecurityError:
        return False
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return len(names) == 1 and names[0].value == CA_NAME


def mosquitto_available() -> str | None:
    """``None`` when Mosquitto is installed, else why not (the embedded broker has no
    client-certificate TLS, so the demo then runs insecure)."""
    try:
        find_mosquitto()
    except BrokerNotFound as exc:
        return str(exc)
    return None


@dataclass
class DemoPki:
    """The demo's CA in ``out/pki`` and, once :meth:`start_broker` ran, its TLS broker.

    Args:
        out: the demo's report folder.
    """

    out: Path
    ca: CertificateAuthority = field(init=False)
    files: BrokerFiles | None = field(default=None, init=False)
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    guard: subprocess.Popen[bytes] | None = field(default=None, init=False)
    """SIGTERM to the broker if the demo dies without stopping it (:mod:`sef.process_guard`)."""
    port: int = field(default=0, init=False)
    ocpp_passwords: dict[str, str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        pki = self.out / "pki"
        for stale in (pki, self.out / "broker"):  # the last run's throwaway CA and broker
            if not stale.exists():
                continue
            if not stale.is_dir() or not _demo_owned(stale):
                # never a real CA: `sef pki` keeps its CA in ./pki by default
                raise SecurityError(
                    f"{stale} exists and is not a previous sef demo's: refusing to replace "
                    "it; give sef demo another --out"
                )
            shutil.rmtree(stale)
        self.ca = CertificateAuthority.init(pki, CA_NAME, days=CA_DAYS)

    def issue(
        self, identity: str, role: Role, groups: Sequence[str] = (), hosts: Sequence[str] = ()
    ) -> None:
        """Issue ``identity``'s key and certificate (before :meth:`start_broker`: the
        broker's ACL is written from the identities issued by then); ``hosts``: the
        names a server certificate is for."""
        self.ca.issue(identity, role, groups=tuple(groups), hosts=tuple(hosts))

    def issue_ocpp(self, sessions: Sequence[EVSession]) -> None:
        """For each charger: the OCPP listener's server certificate ``ID-ocpp`` (for
        127.0.0.1 and localhost), the charge point's client certificate ``ID-cp`` (its
        OCPP id), both role gateway without a home (no rights on the broker), and a
        random Basic-auth password, in ``out/pki/ocpp-passwords`` (0600)."""
        for s in sessions:
            self.issue(f"{s.agent_id}-ocpp", Role.GATEWAY, hosts=("127.0.0.1", "localhost"))
            self.issue(s.charge_point, Role.GATEWAY)
            self.ocpp_passwords[s.charge_point] = secrets.token_urlsafe(24)  # 32 characters
        if not sessions:
            return
        path = self.passwords_path
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.writelines(f"{cp}:{pw}\n" for cp, pw in self.ocpp_passwords.items())

    @property
    def passwords_path(self) -> Path:
        """The OCPP Basic-auth passwords of the chargers (``ID:PASSWORD`` lines)."""
        return self.out / "pki" / "ocpp-passwords"

    def ocpp(self, session: EVSession) -> OcppCredentials:
        """The options of a charger's OCPP link (Security Profiles 3 and 2): issued by
        :meth:`issue_ocpp`."""
        ca, cp = self.ca, session.charge_point
        listener = f"{session.agent_id}-ocpp"
        return OcppCredentials(
            "wss",
            agent=[
                *("--ocpp-cert", str(ca.cert_path(listener))),
                *("--ocpp-key", str(ca.key_path(listener))),
                *("--ocpp-client-ca", str(ca.ca_path)),
                *("--ocpp-passwords", str(self.passwords_path)),
            ],
            emulator=[
                *("--ca", str(ca.ca_path)),
                *("--cert", str(ca.cert_path(cp))),
                *("--key", str(ca.key_path(cp))),
            ],
            emulator_env={"SEF_OCPP_PASSWORD": self.ocpp_passwords[cp]},
        )

    def security(self, identity: str) -> Security:
        """The credentials of an issued identity."""
        ca = self.ca
        return Security.load(ca.cert_path(identity), ca.key_path(identity), ca.ca_path, ca.crl_path)

    def cli_args(self, identity: str) -> list[str]:
        """``--cert/--key/--ca/--crl`` of ``identity`` for a ``sef`` process."""
        ca = self.ca
        return [
            *("--cert", str(ca.cert_path(identity))),
            *("--key", str(ca.key_path(identity))),
            *("--ca", str(ca.ca_path)),
            *("--crl", str(ca.crl_path)),
        ]

    @property
    def url(self) -> str:
        """The broker's URL."""
        return f"mqtts://127.0.0.1:{self.port}"

    def start_broker(self, timeout_s: float = 10.0) -> str:
        """Write the broker directory and start Mosquitto on a free loopback port; returns
        its URL once it accepts connections."""
        self.port = free_port()
        broker_dir = self.out / "broker"
        self.files = write_broker_config(
            self.ca,
            broker_dir,
            port=self.port,
            hosts=("127.0.0.1", "localhost"),
            bind="127.0.0.1",
            log_file=broker_dir / "mosquitto.log",
            # as root Mosquitto would drop to its own account before reading the key,
            # which may not reach into the report folder: the throwaway broker keeps root
            user="root" if os.geteuid() == 0 else None,
        )
        self.process = subprocess.Popen(
            [find_mosquitto(), "-c", str(self.files.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.guard = start_guard(self.process.pid, name="sef-demo-broker-guard")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"mosquitto exited with {self.process.returncode}: {stderr}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self.url
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        """Stop the broker (idempotent); the CA and certificates stay in ``out/pki``."""
        stop_guard(self.guard)
        self.guard = None
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr is not None:
            process.stderr.close()

"""A gateway's TLS in secure mode: its certificate files for Mosquitto, the home
listener's TLS lines, and the home broker's ACL (``docs/gateway.md``)."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from sef.gateway._topics import UPLINK_IN, UPLINK_OUT
from sef.security import Security, write_private

__all__ = [
    "TlsFiles",
    "home_acl",
    "listener_tls_config",
    "mosquitto_account_owns",
    "write_tls_files",
]


@dataclass(frozen=True)
class TlsFiles:
    """A gateway's certificate files as Mosquitto reads them (paths in its work dir)."""

    identity: str
    cert: Path
    key: Path
    ca: Path
    crl: Path | None = None


def listener_tls_config(files: TlsFiles, acl: Path) -> str:
    """Lines for the home-side listener (they follow its ``listener`` line): TLS with the
    gateway's certificate, client certificates from the deployment CA required, the
    certificate's identity as username and client id, and the home ACL."""
    return (
        "\n".join(
            [
                f"cafile {files.ca}",
                f"certfile {files.cert}",
                f"keyfile {files.key}",
                *([f"crlfile {files.crl}"] if files.crl is not None else []),
                "require_certificate true",
                "use_identity_as_username true",
                "use_username_as_clientid true",
                "tls_version tlsv1.2",
                "allow_anonymous false",
                f"acl_file {acl}",
            ]
        )
        + "\n"
    )


def home_acl(gateway_id: str, home_id: str, root: str = "sef") -> str:
    """The home broker's ACL: every client (username = its certificate's identity)
    publishes only under its own agent topics, the interface XML once per hash
    (``{root}/interfaces/+``, which it also reads) and replies, and reads its own calls, its
    home's group calls (only those the control broker lets this home's relay receive
    come down) and the EMS's status. The gateway's own identity (its uplink relay) reads
    every topic that goes up, publishes what comes down (calls, group calls, the EMS's
    status) and keeps ``{root}/gateways/{home_id}/#``."""
    agent = f"{root}/agents/%u"
    return (
        "\n".join(
            [
                "# home broker ACL written by sef gateway: username = certificate identity",
                f"pattern write {agent}/status",
                f"pattern write {agent}/about",
                f"pattern write {agent}/interfaces/#",
                f"pattern readwrite {root}/interfaces/+",  # XML once per hash (v2)
                f"pattern write {agent}/props/#",
                f"pattern write {agent}/signals/#",
                f"pattern write {agent}/seal",
                f"pattern read {agent}/#",
                f"pattern write {root}/clients/+/reply",
                f"pattern read {root}/clients/%u/reply",
                f"pattern read {root}/groups/+/call/#",
                f"pattern read {root}/hosts/+/status",
                "",
                "# the gateway's uplink relay: what goes up (read), what comes down (write)",
                f"user {gateway_id}",
                f"topic read {root}/agents/+/status",
                f"topic readwrite {root}/gateways/{home_id}/#",
                *(f"topic read {root}/{p}" for p in UPLINK_OUT if p != "agents/+/status"),
                *(f"topic write {root}/{pattern}" for pattern in UPLINK_IN),
            ]
        )
        + "\n"
    )


def mosquitto_account_owns(workdir: Path) -> str:
    """Mosquitto started as root drops to the ``mosquitto`` account before it reads its
    certificate and key: hand ``workdir`` over to that account (or keep root if there
    is none). Returns the ``user`` line to configure."""
    if os.geteuid() != 0:
        return ""
    try:
        account = pwd.getpwnam("mosquitto")
    except KeyError:
        return "user root\n"
    for path in (workdir, *workdir.iterdir()):
        os.chown(path, account.pw_uid, account.pw_gid)
    return "user mosquitto\n"


def write_tls_files(security: Security, workdir: Path) -> TlsFiles:
    """Write the gateway's certificate, key (0600), CA and CRL into ``workdir``, where
    Mosquitto reads them."""
    files = TlsFiles(
        security.identity.id,
        workdir / "gateway.crt",
        workdir / "gateway.key",
        workdir / "ca.crt",
        workdir / "crl.pem" if security.trust.crl is not None else None,
    )
    files.cert.write_bytes(security.cert_pem)
    write_private(
        files.key,
        security.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    files.ca.write_bytes(security.trust.ca.public_bytes(serialization.Encoding.PEM))
    if files.crl is not None and security.trust.crl is not None:
        files.crl.write_bytes(security.trust.crl.public_bytes(serialization.Encoding.PEM))
    return files

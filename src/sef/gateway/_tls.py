"""A gateway's TLS in secure mode: its certificate files for Mosquitto, the bridge's and
the home listener's TLS lines, and the home broker's ACL (``docs/gateway.md``)."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from sef.security import Security, write_private

__all__ = [
    "TlsFiles",
    "bridge_tls_config",
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


def bridge_tls_config(files: TlsFiles) -> list[str]:
    """Bridge lines for TLS to the control broker: present the gateway's certificate,
    trust only the deployment CA, and check the control broker's host name."""
    return [
        f"bridge_cafile {files.ca}",
        f"bridge_certfile {files.cert}",
        f"bridge_keyfile {files.key}",
        "bridge_insecure false",
        "bridge_tls_version tlsv1.2",
    ]


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
    publishes only under its own agent topics and replies, and reads its own calls, its
    home's group calls (only those the control broker lets this home's bridge receive
    come down) and the EMS's status; the gateway's own client reads agent statuses and
    keeps the home's agent list."""
    agent = f"{root}/agents/%u"
    return (
        "\n".join(
            [
                "# home broker ACL written by sef gateway: username = certificate identity",
                f"pattern write {agent}/status",
                f"pattern write {agent}/about",
                f"pattern write {agent}/interfaces/#",
                f"pattern write {agent}/props/#",
                f"pattern write {agent}/signals/#",
                f"pattern write {agent}/seal",
                f"pattern read {agent}/#",
                f"pattern write {root}/clients/+/reply",
                f"pattern read {root}/clients/%u/reply",
                f"pattern read {root}/groups/+/call/#",
                f"pattern read {root}/hosts/+/status",
                "",
                f"user {gateway_id}",
                f"topic read {root}/agents/+/status",
                f"topic readwrite {root}/gateways/{home_id}/#",
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

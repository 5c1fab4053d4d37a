"""Enrollment requests at the CA: CSRs queued for the operator, and one-time claim tokens.

:class:`EnrollmentRequests` is a part of :class:`sef.security.CertificateAuthority`
(files ``pending/{id}.json`` and ``tokens.json`` of its directory).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sef.security._identity import Role, SecurityError
from sef.security._keys import (
    check_identity_name,
    csr_identity,
    key_fingerprint,
    load_csr,
    write_private,
    write_public,
)

__all__ = ["EnrollmentRequests", "PendingRequest"]

LEAF_DAYS = 90
"""Default lifetime of an issued certificate, days (agents renew at two thirds)."""


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """An enrollment request (a CSR) waiting for the operator."""

    id: str
    role: Role
    groups: tuple[str, ...]
    home: str | None
    csr_pem: str
    received: str
    key_fingerprint: str


class EnrollmentRequests(ABC):
    """The enrollment queue and claim tokens of a CA directory, and the directory's lock;
    :class:`~sef.security.CertificateAuthority` is one and issues the certificates."""

    root: Path

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive use of the CA directory (the CLI and an enrollment server share it)."""
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @abstractmethod
    def sign_csr(
        self,
        csr_pem: bytes,
        role: Role,
        *,
        groups: tuple[str, ...] = (),
        home: str | None = None,
        days: int = LEAF_DAYS,
        expected_id: str | None = None,
    ) -> x509.Certificate:
        """Issue a certificate for the key in a CSR (see the CA)."""

    def submit(
        self, csr_pem: bytes, *, groups: tuple[str, ...] = (), home: str | None = None
    ) -> PendingRequest:
        """Queue an agent's CSR for the operator (``sef pki pending`` / ``approve``).

        A second request for the same identity replaces the first. ``groups`` and ``home``
        are what the agent asks for; the operator may change them when approving."""
        csr = load_csr(csr_pem)
        identity = csr_identity(csr)
        for group in groups:
            check_identity_name("group", group)
        if home is not None:
            check_identity_name("home", home)
        request = PendingRequest(
            id=identity,
            role=Role.AGENT,
            groups=tuple(groups),
            home=home,
            csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode(),
            received=dt.datetime.now(dt.UTC).isoformat(),
            key_fingerprint=key_fingerprint(csr.public_key()),
        )
        with self._locked():
            pending = self.root / "pending"
            if (
                len(list(pending.glob("*.json"))) >= 10_000
                and not (pending / f"{identity}.json").exists()
            ):
                raise SecurityError(
                    "too many pending enrollment requests (10 000); approve or reject some"
                )
            write_public(
                pending / f"{identity}.json",
                json.dumps(
                    {
                        "id": request.id,
                        "role": request.role.value,
                        "groups": list(request.groups),
                        "home": request.home,
                        "csr": request.csr_pem,
                        "received": request.received,
                        "key_fingerprint": request.key_fingerprint,
                    }
                ).encode(),
            )
        return request

    def pending(self) -> list[PendingRequest]:
        out = []
        for path in sorted((self.root / "pending").glob("*.json")):
            obj = json.loads(path.read_text())
            out.append(
                PendingRequest(
                    obj["id"],
                    Role(obj["role"]),
                    tuple(obj["groups"]),
                    obj["home"],
                    obj["csr"],
                    obj["received"],
                    obj["key_fingerprint"],
                )
            )
        return out

    def approve(
        self,
        identity: str,
        *,
        groups: tuple[str, ...] | None = None,
        home: str | None = None,
        days: int = LEAF_DAYS,
    ) -> x509.Certificate:
        """Issue the certificate a pending request asked for (``groups``/``home`` override
        the request's); the request leaves the queue."""
        path = self.root / "pending" / f"{check_identity_name('identity', identity)}.json"
        if not path.exists():
            raise SecurityError(f"no pending enrollment request for {identity!r}")
        obj = json.loads(path.read_text())
        cert = self.sign_csr(
            obj["csr"].encode(),
            Role(obj["role"]),
            groups=tuple(obj["groups"]) if groups is None else groups,
            home=obj["home"] if home is None else home,
            days=days,
            expected_id=identity,
        )
        path.unlink(missing_ok=True)
        return cert

    def reject(self, identity: str) -> bool:
        path = self.root / "pending" / f"{check_identity_name('identity', identity)}.json"
        existed = path.exists()
        path.unlink(missing_ok=True)
        return existed

    def create_token(
        self,
        identity: str,
        *,
        groups: tuple[str, ...] = (),
        home: str | None = None,
        days: int = 7,
    ) -> str:
        """A one-time claim token: the first CSR for ``identity`` that carries it is approved
        at once with these groups and home. Only its SHA-256 is stored."""
        check_identity_name("identity", identity)
        for group in groups:
            check_identity_name("group", group)
        token = secrets.token_urlsafe(24)
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=days)
        with self._locked():
            tokens = self._tokens()
            tokens[_token_hash(token)] = {
                "id": identity,
                "groups": list(groups),
                "home": home,
                "expires": expires.isoformat(),
            }
            write_private(self.root / "tokens.json", json.dumps(tokens).encode())
        return token

    def _tokens(self) -> dict[str, dict[str, Any]]:
        path = self.root / "tokens.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def redeem(self, csr_pem: bytes, token: str) -> x509.Certificate:
        """Approve ``csr_pem`` with a claim token (consumed even if the CSR is refused)."""
        csr_identity_value = csr_identity(load_csr(csr_pem))
        with self._locked():
            tokens = self._tokens()
            grant = tokens.pop(_token_hash(token), None)
            write_private(self.root / "tokens.json", json.dumps(tokens).encode())
        if grant is None:
            raise SecurityError("unknown or already used claim token")
        if dt.datetime.fromisoformat(grant["expires"]) < dt.datetime.now(dt.UTC):
            raise SecurityError("claim token expired")
        if grant["id"] != csr_identity_value:
            raise SecurityError(f"claim token is for {grant['id']!r}, not {csr_identity_value!r}")
        return self.sign_csr(
            csr_pem,
            Role.AGENT,
            groups=tuple(grant["groups"]),
            home=grant["home"],
            expected_id=grant["id"],
        )


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()

"""The deployment certificate authority: a directory the operator keeps.

Layout (created by :meth:`CertificateAuthority.init`; private files mode 0600)::

    ca.crt  ca.key            the CA certificate and its ECDSA P-256 key
    crl.pem                   the current revocation list (re-signed on every revoke)
    index.json                every issued certificate: id, role, groups, home, serial, dates
    issued/{id}.crt           the newest certificate of each identity
    private/{id}.key          keys the CA generated (``issue``); enrolled agents keep theirs
    pending/{id}.json         enrollment requests waiting for ``approve``
    tokens.json               one-time claim tokens (SHA-256 of the token only)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sef.security._enrollment import LEAF_DAYS, EnrollmentRequests
from sef.security._identity import Identity, Role, SecurityError, identity_of, profile_uris
from sef.security._keys import (
    cert_pem,
    check_identity_name,
    csr_identity,
    key_pem,
    load_csr,
    new_private_key,
    write_private,
    write_public,
)
from sef.security._trust import TrustStore, load_certificate, load_private_key

__all__ = ["CA_DAYS", "CRL_DAYS", "LEAF_DAYS", "CertificateAuthority", "IssuedRecord"]

CA_DAYS = 3650
CRL_DAYS = 7
"""A CRL's ``next_update``: components warn when theirs is older."""


@dataclass(frozen=True, slots=True)
class IssuedRecord:
    """One line of the CA's index: a certificate it issued."""

    id: str
    role: Role
    groups: tuple[str, ...]
    home: str | None
    serial: int
    not_after: str
    revoked: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "role": self.role.value,
            "groups": list(self.groups),
            "home": self.home,
            "serial": str(self.serial),
            "not_after": self.not_after,
            "revoked": self.revoked,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> IssuedRecord:
        return cls(
            id=obj["id"],
            role=Role(obj["role"]),
            groups=tuple(obj.get("groups", ())),
            home=obj.get("home"),
            serial=int(obj["serial"]),
            not_after=obj["not_after"],
            revoked=bool(obj.get("revoked", False)),
        )


class CertificateAuthority(EnrollmentRequests):
    """The deployment CA in directory ``root``. Open one with :meth:`init` or :meth:`open`.

    Every change (issue, revoke, approve) takes an exclusive lock on the directory, so
    the CLI and an enrollment server can share it.
    """

    def __init__(self, root: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey):
        self.root = root
        self.cert = cert
        self._key = key

    # -- creation -------------------------------------------------------------------------

    @classmethod
    def init(
        cls, root: Path, name: str = "SEF deployment CA", *, days: int = CA_DAYS
    ) -> CertificateAuthority:
        """Create a new CA in ``root`` (which must not hold one yet)."""
        if (root / "ca.key").exists():
            raise SecurityError(f"{root} already holds a CA (ca.key); refusing to overwrite it")
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        key = new_private_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        write_private(root / "ca.key", key_pem(key))
        write_public(root / "ca.crt", cert_pem(cert))
        for sub in ("issued", "private", "pending"):
            (root / sub).mkdir(exist_ok=True)
        os.chmod(root / "private", 0o700)
        ca = cls(root, cert, key)
        ca._save_index([])
        ca._write_crl()
        return ca

    @classmethod
    def open(cls, root: Path) -> CertificateAuthority:
        """Open the CA in ``root`` (made by :meth:`init`)."""
        if not (root / "ca.key").is_file():
            raise SecurityError(f"no CA in {root} (run `sef pki init --dir {root}` first)")
        return cls(
            root,
            load_certificate((root / "ca.crt").read_bytes()),
            load_private_key(root / "ca.key"),
        )

    # -- files ----------------------------------------------------------------------------

    @property
    def ca_path(self) -> Path:
        return self.root / "ca.crt"

    @property
    def crl_path(self) -> Path:
        return self.root / "crl.pem"

    def cert_path(self, identity: str) -> Path:
        return self.root / "issued" / f"{check_identity_name('identity', identity)}.crt"

    def key_path(self, identity: str) -> Path:
        return self.root / "private" / f"{check_identity_name('identity', identity)}.key"

    def trust_store(self) -> TrustStore:
        return TrustStore.from_files(self.ca_path, self.crl_path)

    def records(self) -> list[IssuedRecord]:
        """Every certificate issued, oldest first."""
        path = self.root / "index.json"
        if not path.exists():
            return []
        return [IssuedRecord.from_json(obj) for obj in json.loads(path.read_text())]

    def current(self) -> dict[str, IssuedRecord]:
        """The newest unrevoked certificate record of each identity."""
        out: dict[str, IssuedRecord] = {}
        for record in self.records():
            if not record.revoked:
                out[record.id] = record
        return out

    def _save_index(self, records: list[IssuedRecord]) -> None:
        write_public(
            self.root / "index.json", json.dumps([r.to_json() for r in records], indent=1).encode()
        )

    # -- issuing --------------------------------------------------------------------------

    def _build(
        self,
        identity: str,
        public_key: ec.EllipticCurvePublicKey,
        role: Role,
        groups: tuple[str, ...],
        home: str | None,
        days: int,
        hosts: tuple[str, ...],
    ) -> x509.Certificate:
        check_identity_name("identity", identity)
        for group in groups:
            check_identity_name("group", group)
        if home is not None:
            check_identity_name("home", home)
        if groups and role is not Role.AGENT:
            raise SecurityError("only agents have groups")
        if home is not None and role not in (Role.AGENT, Role.GATEWAY):
            raise SecurityError("only agents and gateways have a home")
        if (
            not isinstance(public_key, ec.EllipticCurvePublicKey)
            or public_key.curve.name != "secp256r1"
        ):
            raise SecurityError("keys must be ECDSA P-256")
        if not 1 <= days <= CA_DAYS:
            raise SecurityError(f"lifetime {days} days is outside 1..{CA_DAYS}")
        now = dt.datetime.now(dt.UTC)
        not_after = min(now + dt.timedelta(days=days), self.cert.not_valid_after_utc)
        names: list[x509.GeneralName] = [
            x509.UniformResourceIdentifier(uri) for uri in profile_uris(role, groups, home)
        ]
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if role in (Role.BROKER, Role.EMS, Role.GATEWAY):
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )

    def _record(self, cert: x509.Certificate) -> Identity:
        identity = identity_of(cert)
        records = self.records()
        records.append(
            IssuedRecord(
                identity.id,
                identity.role,
                identity.groups,
                identity.home,
                identity.serial,
                identity.not_after.isoformat(),
            )
        )
        self._save_index(records)
        write_public(self.cert_path(identity.id), cert_pem(cert))
        return identity

    def issue(
        self,
        identity: str,
        role: Role,
        *,
        groups: tuple[str, ...] = (),
        home: str | None = None,
        days: int = LEAF_DAYS,
        hosts: tuple[str, ...] = (),
    ) -> tuple[x509.Certificate, Path]:
        """Generate a key and issue a certificate for ``identity``; returns the certificate
        and the key's path (``private/{id}.key``, mode 0600). For devices that make their
        own key, use enrollment (:meth:`submit`, :meth:`approve`) instead."""
        key = new_private_key()
        with self._locked():
            cert = self._build(identity, key.public_key(), role, groups, home, days, hosts)
            write_private(self.key_path(identity), key_pem(key))
            self._record(cert)
        return cert, self.key_path(identity)

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
        """Issue a certificate for the key in a CSR; the CSR's signature must verify and its
        common name is the identity (``expected_id`` if given must match). The role, groups
        and home come from the caller (the operator), never from the CSR."""
        csr = load_csr(csr_pem)
        identity = csr_identity(csr)
        if expected_id is not None and identity != expected_id:
            raise SecurityError(f"CSR is for {identity!r}, not {expected_id!r}")
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise SecurityError("CSR key is not ECDSA P-256")
        with self._locked():
            cert = self._build(identity, public_key, role, groups, home, days, ())
            self._record(cert)
        return cert

    # -- revocation -----------------------------------------------------------------------

    def revoke(self, identity: str) -> list[int]:
        """Revoke every unrevoked certificate of ``identity``; re-sign the CRL. Returns the
        serials revoked (empty if there was none)."""
        check_identity_name("identity", identity)
        with self._locked():
            records = self.records()
            serials = [r.serial for r in records if r.id == identity and not r.revoked]
            records = [
                IssuedRecord(r.id, r.role, r.groups, r.home, r.serial, r.not_after, True)
                if r.id == identity
                else r
                for r in records
            ]
            self._save_index(records)
            self._write_crl()
        return serials

    def _write_crl(self) -> None:
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now)
            .next_update(now + dt.timedelta(days=CRL_DAYS))
        )
        for record in self.records():
            if record.revoked:
                builder = builder.add_revoked_certificate(
                    x509.RevokedCertificateBuilder()
                    .serial_number(record.serial)
                    .revocation_date(now)
                    .build()
                )
        crl = builder.sign(self._key, hashes.SHA256())
        write_public(self.crl_path, crl.public_bytes(serialization.Encoding.PEM))

    def refresh_crl(self) -> None:
        """Re-sign the CRL (do so more often than every :data:`CRL_DAYS` days)."""
        with self._locked():
            self._write_crl()

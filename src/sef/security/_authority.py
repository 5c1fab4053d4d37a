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

import contextlib
import datetime as dt
import fcntl
import hashlib
import ipaddress
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sef.security._identity import Identity, Role, SecurityError, identity_of, profile_uris
from sef.security._trust import MAX_CERT_BYTES, TrustStore, load_certificate, load_private_key

__all__ = ["CertificateAuthority", "IssuedRecord", "PendingRequest", "check_identity_name"]

CA_DAYS = 3650
LEAF_DAYS = 90
"""Default lifetime of an issued certificate, days (agents renew at two thirds)."""
CRL_DAYS = 7
"""A CRL's ``next_update``: components warn when theirs is older."""

_NAME_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


def check_identity_name(kind: str, value: str) -> str:
    """The bus's id rule (1–64 of ``A-Z a-z 0-9 _ . -``, not leading ``.`` or ``-``)."""
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= 64
        or not set(value) <= _NAME_CHARS
        or value[0] in ".-"
    ):
        raise SecurityError(
            f"invalid {kind} {value!r}: use 1-64 characters from A-Z a-z 0-9 _ . - "
            "(not starting with . or -)"
        )
    return value


def new_private_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 key."""
    return ec.generate_private_key(ec.SECP256R1())


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` created with mode 0600 (replacing it atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


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


class CertificateAuthority:
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

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

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

    # -- enrollment -----------------------------------------------------------------------

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
            key_fingerprint=_key_fingerprint(csr.public_key()),
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


def _key_fingerprint(key: Any) -> str:
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """Parse a PEM CSR whose self-signature verifies; :class:`SecurityError` otherwise."""
    if len(data) > MAX_CERT_BYTES:
        raise SecurityError(f"CSR of {len(data)} bytes is over {MAX_CERT_BYTES}")
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError as exc:
        raise SecurityError(f"not a PEM certificate signing request: {exc}") from None
    try:
        signature_ok = csr.is_signature_valid
        key = csr.public_key()
    except ValueError as exc:  # e.g. "Invalid key" for a point not on the curve
        raise SecurityError(f"CSR carries an unusable key: {exc}") from None
    if not signature_ok:
        raise SecurityError("CSR signature does not verify (proof of key possession failed)")
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise SecurityError("CSR key is not ECDSA P-256")
    return csr


def csr_identity(csr: x509.CertificateSigningRequest) -> str:
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str):
        raise SecurityError("CSR has no single common name (the identity)")
    return check_identity_name("identity", names[0].value)


def make_csr(identity: str, key: ec.EllipticCurvePrivateKey) -> bytes:
    """A PEM CSR for ``identity`` signed by ``key`` (what an enrolling agent sends)."""
    check_identity_name("identity", identity)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)

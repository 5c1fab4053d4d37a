"""The publisher's side: a TUF repository directory that SEF releases are signed into.

Layout of a repository directory (what :func:`serve_repository` and any static web server
publish are ``metadata/`` and ``targets/`` only)::

    repository.json                    lifetimes of the signed metadata
    keys/<role>-<n>.pem                private keys, mode 0600 (move root/targets offline)
    metadata/<v>.root.json             every root version (clients walk them in order)
    metadata/<v>.targets.json          consistent snapshots: every version is kept
    metadata/<v>.snapshot.json
    metadata/timestamp.json            the only file clients fetch without a version
    targets/<name>/<sha256>.releases.json           release index (hash-prefixed)
    targets/<name>/<version>/<sha256>.<filename>    released files (hash-prefixed)

All metadata is built and signed with the tuf Metadata API (``tuf.api.metadata``) and
``securesystemslib``'s :class:`CryptoSigner`; nothing is verified by hand.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from securesystemslib.signer import CryptoSigner, Signer  # type: ignore[attr-defined]
from tuf.api.exceptions import RepositoryError
from tuf.api.metadata import (  # type: ignore[attr-defined]
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from sef.update._model import (
    DEFAULT_NAME,
    PublishError,
    Release,
    check_name,
    index_path,
    parse_version,
)

__all__ = ["KeyType", "UpdateRepository"]

logger = logging.getLogger(__name__)

KeyType = Literal["ecdsa", "ed25519"]
ROLES = (Root.type, Targets.type, Snapshot.type, Timestamp.type)
_CONFIG = "repository.json"
_VERSIONED = re.compile(r"([1-9][0-9]*)\.(root|targets|snapshot)\.json")
_SignedT = TypeVar("_SignedT", Root, Timestamp, Snapshot, Targets)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (readers never see
    a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_private(path: Path, data: bytes) -> None:
    """Write a private key to ``path``, created with mode 0600 (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def _new_signer(key_type: KeyType) -> tuple[CryptoSigner, bytes]:
    """A fresh signer and its private key as PEM (PKCS#8, unencrypted)."""
    private: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    if key_type == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    return CryptoSigner(private), pem


class UpdateRepository:
    """A TUF repository directory: create it, publish releases, re-sign the online roles.

    Args:
        directory: the repository directory (made by :meth:`create`).
        keys_dir: where the private keys are; default ``directory/keys``. In production the
            root and targets keys live offline (removable medium or HSM) and are mounted
            only to publish; the snapshot and timestamp keys stay on the server.
    """

    def __init__(self, directory: Path, keys_dir: Path | None = None) -> None:
        self.directory = directory
        self.keys_dir = keys_dir if keys_dir is not None else directory / "keys"
        self.metadata_dir = directory / "metadata"
        self.targets_dir = directory / "targets"
        try:
            config = json.loads((directory / _CONFIG).read_text())
            self.expires_days = float(config["expires_days"])
            self.online_expires_days = float(config["online_expires_days"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PublishError(
                f"{directory} is not an update repository (sef update init makes one): {exc}"
            ) from exc
        self.signers: dict[str, list[Signer]] = {}
        """Signers by role, loaded from ``keys_dir`` when first needed (replaceable)."""

    # -- creation ----------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        directory: Path,
        *,
        keys_dir: Path | None = None,
        expires_days: float = 365.0,
        online_expires_days: float = 7.0,
        root_keys: int = 1,
        threshold: int = 1,
        key_type: KeyType = "ecdsa",
    ) -> UpdateRepository:
        """Make a new repository: keys for the four roles, and version 1 of each role.

        Args:
            directory: must not already hold a repository.
            keys_dir: where to write the private keys (mode 0600); default
                ``directory/keys``.
            expires_days: lifetime of root and targets metadata (offline roles), days.
            online_expires_days: lifetime of snapshot and timestamp metadata, days; re-sign
                them before then with :meth:`refresh_online` (``sef update timestamp``).
            root_keys: number of root keys.
            threshold: how many root keys must sign root.
            key_type: ``ecdsa`` (P-256) or ``ed25519``.

        Raises:
            PublishError: bad arguments or the directory is already a repository.
        """
        if not 1 <= threshold <= root_keys:
            raise PublishError(f"root threshold must be 1..{root_keys}, got {threshold}")
        if expires_days <= 0 or online_expires_days <= 0:
            raise PublishError("metadata lifetimes must be positive (days)")
        if (directory / _CONFIG).exists() or (directory / "metadata").exists():
            raise PublishError(f"{directory} already holds an update repository")
        keys = keys_dir if keys_dir is not None else directory / "keys"
        directory.mkdir(parents=True, exist_ok=True)
        _write_atomic(
            directory / _CONFIG,
            json.dumps(
                {"expires_days": expires_days, "online_expires_days": online_expires_days},
                indent=2,
            ).encode(),
        )
        root = Root(expires=_now() + timedelta(days=expires_days), consistent_snapshot=True)
        signers: dict[str, list[Signer]] = {}
        for role in ROLES:
            count = root_keys if role == Root.type else 1
            signers[role] = []
            for number in range(1, count + 1):
                signer, pem = _new_signer(key_type)
                _write_private(keys / f"{role}-{number}.pem", pem)
                root.add_key(signer.public_key, role)
                signers[role].append(signer)
        root.roles[Root.type].threshold = threshold
        repo = cls(directory, keys)
        repo.signers = signers
        repo._write(Root.type, Metadata(root))
        offline = timedelta(days=expires_days)
        targets = repo._write(Targets.type, Metadata(Targets(expires=_now() + offline)))
        repo._sign_online(targets.signed.version)
        logger.info("update repository created in %s (keys in %s)", directory, keys)
        return repo

    @property
    def trusted_root_path(self) -> Path:
        """Version 1 of root: the file to ship with agents as their trusted root."""
        return self.metadata_dir / "1.root.json"

    # -- publishing --------------------------------------------------------------------
    def publish(self, file: Path, version: str, name: str = DEFAULT_NAME) -> Release:
        """Add ``file`` as release ``version`` of ``name`` and make it the latest release.

        Copies the file into ``targets/`` under its hash, adds it to the targets metadata
        with custom metadata ``{"name", "version"}``, updates the release index (whose
        custom metadata names the latest release), then bumps and re-signs targets,
        snapshot and timestamp (in that order, so a client never sees a half-published
        state). A version lower than an earlier one may be published (agents refuse to
        install it over a newer one); the same version twice may not.

        Raises:
            PublishError: bad name, version or file, the version exists, or a key is
                missing.
        """
        try:
            parse_version(version)
            check_name(name)
            filename = check_name(file.name, "file name")
        except ValueError as exc:
            raise PublishError(str(exc)) from exc
        if not file.is_file():
            raise PublishError(f"{file} is not a file")
        targets = self._load(Targets.type, Targets)
        releases = self.releases(name)
        if any(entry["version"] == version for entry in releases):
            raise PublishError(f"{name} {version} is already published")
        target_path = f"{name}/{version}/{filename}"
        target = TargetFile.from_file(target_path, str(file), ["sha256"])
        target.unrecognized_fields["custom"] = {"name": name, "version": version}
        self._store_target(target, file.read_bytes)
        releases.append({"version": version, "path": target_path, "published": _now().isoformat()})
        index_bytes = json.dumps({"name": name, "releases": releases}, indent=2).encode()
        index = TargetFile.from_data(index_path(name), index_bytes, ["sha256"])
        index.unrecognized_fields["custom"] = {
            "name": name,
            "latest": version,
            "path": target_path,
        }
        self._store_target(index, lambda: index_bytes)
        targets.signed.targets[target_path] = target
        targets.signed.targets[index.path] = index
        targets.signed.version += 1
        targets.signed.expires = _now() + timedelta(days=self.expires_days)
        self._write(Targets.type, targets)
        self._sign_online(targets.signed.version)
        logger.info("published %s %s (%d bytes)", name, version, target.length)
        return Release(
            name=name,
            version=version,
            path=target_path,
            filename=filename,
            length=target.length,
            sha256=target.hashes["sha256"],
        )

    def releases(self, name: str = DEFAULT_NAME) -> list[dict[str, Any]]:
        """The release index of ``name``, oldest first (``[]`` when none is published)."""
        targets = self._load(Targets.type, Targets)
        index = targets.signed.targets.get(index_path(name))
        if index is None:
            return []
        stored = self.targets_dir / name / f"{index.hashes['sha256']}.releases.json"
        try:
            entries = json.loads(stored.read_bytes())["releases"]
        except (OSError, ValueError, KeyError) as exc:
            raise PublishError(f"release index {stored} unreadable: {exc}") from exc
        return list(entries)

    def refresh_online(self, expires: datetime | None = None) -> None:
        """Re-sign snapshot and timestamp with a new version and expiry (the online job).

        Args:
            expires: the new expiry; default now + the configured online lifetime. A time in
                the past makes expired metadata (tests use it to check agents refuse it).
        """
        targets_version = self._load(Targets.type, Targets).signed.version
        self._sign_online(targets_version, expires)

    # -- internals ---------------------------------------------------------------------
    def _store_target(self, target: TargetFile, read: Any) -> None:
        """Write the bytes ``read()`` returns as ``targets/<dir>/<sha256>.<basename>``."""
        directory, _, basename = target.path.rpartition("/")
        destination = self.targets_dir / directory / f"{target.hashes['sha256']}.{basename}"
        if not destination.exists():
            _write_atomic(destination, read())

    def _sign_online(self, targets_version: int, expires: datetime | None = None) -> None:
        """Write a new snapshot (naming targets ``targets_version``) and a new timestamp."""
        expiry = expires or _now() + timedelta(days=self.online_expires_days)
        targets_bytes = (self.metadata_dir / f"{targets_version}.targets.json").read_bytes()
        try:
            snapshot = self._load(Snapshot.type, Snapshot)
            snapshot.signed.version += 1
        except PublishError:
            snapshot = Metadata(Snapshot())
        snapshot.signed.meta["targets.json"] = MetaFile.from_data(
            targets_version, targets_bytes, ["sha256"]
        )
        snapshot.signed.expires = expiry
        self._write(Snapshot.type, snapshot)
        snapshot_bytes = (
            self.metadata_dir / f"{snapshot.signed.version}.snapshot.json"
        ).read_bytes()
        try:
            timestamp = self._load(Timestamp.type, Timestamp)
            timestamp.signed.version += 1
        except PublishError:
            timestamp = Metadata(Timestamp())
        timestamp.signed.snapshot_meta = MetaFile.from_data(
            snapshot.signed.version, snapshot_bytes, ["sha256"]
        )
        timestamp.signed.expires = expiry
        self._write(Timestamp.type, timestamp)

    def _signers(self, role: str) -> list[Signer]:
        """The signers of ``role``: keys in ``keys_dir`` that root names for it."""
        if role in self.signers:
            return self.signers[role]
        root = self._load(Root.type, Root).signed
        wanted = set(root.roles[role].keyids)
        found: list[Signer] = []
        for path in sorted(self.keys_dir.glob(f"{role}-*.pem")):
            try:
                signer = CryptoSigner(load_pem_private_key(path.read_bytes(), None))
            except (OSError, ValueError, TypeError) as exc:
                raise PublishError(f"key {path} unreadable: {exc}") from exc
            if signer.public_key.keyid in wanted:
                found.append(signer)
        if len(found) < root.roles[role].threshold:
            raise PublishError(
                f"{role} needs {root.roles[role].threshold} key(s) named in root; found "
                f"{len(found)} in {self.keys_dir} (mount the offline keys to publish)"
            )
        self.signers[role] = found
        return found

    def _write(self, role: str, metadata: Metadata[_SignedT]) -> Metadata[_SignedT]:
        """Sign ``metadata`` with every key of ``role`` and write it where clients look."""
        metadata.signatures.clear()
        for signer in self._signers(role):
            metadata.sign(signer, append=True)
        data = metadata.to_bytes(JSONSerializer(compact=False))
        if role == Timestamp.type:
            _write_atomic(self.metadata_dir / "timestamp.json", data)
        else:
            _write_atomic(self.metadata_dir / f"{metadata.signed.version}.{role}.json", data)
        return metadata

    def _load(self, role: str, kind: type[_SignedT]) -> Metadata[_SignedT]:
        """The newest ``role`` metadata in ``metadata/``."""
        if role == Timestamp.type:
            path = self.metadata_dir / "timestamp.json"
        else:
            versions = [
                int(match.group(1))
                for entry in (self.metadata_dir.iterdir() if self.metadata_dir.is_dir() else [])
                if (match := _VERSIONED.fullmatch(entry.name)) and match.group(2) == role
            ]
            if not versions:
                raise PublishError(f"no {role} metadata in {self.metadata_dir}")
            path = self.metadata_dir / f"{max(versions)}.{role}.json"
        try:
            metadata = Metadata[_SignedT].from_bytes(path.read_bytes())
        except (OSError, ValueError, RepositoryError) as exc:
            raise PublishError(f"{path} unreadable: {exc}") from exc
        if not isinstance(metadata.signed, kind):
            raise PublishError(f"{path} holds {metadata.signed.type}, not {role}")
        return metadata

"""The agent's side: check a TUF repository for a newer release and install it.

State directory of an agent::

    metadata/                 the TUF client's trusted metadata cache (tuf.ngclient)
    releases/<version>/<file> installed releases, with release.json beside each file
    current -> releases/<v>   the running release; switched by renaming a new symlink
                              over it, only after the file was verified
    staging/                  downloads in progress (removed after each install)

Verification is the tuf client's (:class:`tuf.ngclient.Updater`): signatures against the
trusted root, thresholds, versions (metadata rollback), expiry, and target length and
hashes. This module adds the software-version rule: never install a version lower than
or equal to the running one.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import TargetFile  # type: ignore[attr-defined]
from tuf.ngclient.fetcher import FetcherInterface
from tuf.ngclient.updater import Updater

from sef.update._model import (
    DEFAULT_NAME,
    Refusal,
    Release,
    UpdateError,
    UpdateRefused,
    UpdateUnavailable,
    check_name,
    index_path,
    parse_version,
)

__all__ = ["UpdateClient", "refusal_of"]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")


def refusal_of(exc: BaseException, *, target: bool) -> Refusal | None:
    """Which :class:`Refusal` a tuf exception means (``None``: not a security refusal).

    Args:
        exc: raised by :class:`tuf.ngclient.Updater`.
        target: the error happened while downloading a target file (not metadata).
    """
    if isinstance(exc, tuf_errors.ExpiredMetadataError):
        return Refusal.EXPIRED
    if isinstance(exc, tuf_errors.BadVersionNumberError):
        return Refusal.METADATA_ROLLBACK
    if isinstance(exc, tuf_errors.UnsignedMetadataError):
        return Refusal.BAD_SIGNATURE
    if isinstance(
        exc, tuf_errors.LengthOrHashMismatchError | tuf_errors.DownloadLengthMismatchError
    ):
        return Refusal.TAMPERED_TARGET if target else Refusal.TAMPERED_METADATA
    if isinstance(exc, tuf_errors.RepositoryError):
        return Refusal.INVALID
    return None


def _describe(exc: BaseException) -> str:
    """One line for a tuf error: its message, else its kind and the network cause."""
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    if cause is not None:
        text += f" ({getattr(cause, 'reason', None) or cause})"
    return text


class UpdateClient:
    """Checks a release repository and installs newer releases into a state directory.

    Args:
        url: base URL of the repository (``metadata/`` and ``targets/`` under it).
        state_dir: the agent's update state (created if missing).
        trusted_root: the root metadata shipped with the agent (bytes or a file): the
            only keys it trusts at first; later roots are accepted only when signed by
            the previous one.
        name: the release name to follow.
        fetcher: optional tuf fetcher (default: urllib3, 30 s socket timeout).

    One client per state directory at a time (a file lock serializes calls).
    """

    def __init__(
        self,
        url: str,
        state_dir: Path,
        trusted_root: bytes | Path,
        *,
        name: str = DEFAULT_NAME,
        fetcher: FetcherInterface | None = None,
    ) -> None:
        self.url = url.rstrip("/") + "/"
        self.state_dir = state_dir
        self.name = check_name(name)
        self.trusted_root = (
            trusted_root.read_bytes() if isinstance(trusted_root, Path) else trusted_root
        )
        self._fetcher = fetcher
        for sub in ("metadata", "releases", "staging"):
            (state_dir / sub).mkdir(parents=True, exist_ok=True)

    # -- what runs now -----------------------------------------------------------------
    @property
    def current_version(self) -> str | None:
        """The version ``current`` points at (``None`` before the first install)."""
        try:
            version = Path(os.readlink(self.state_dir / "current")).name
            parse_version(version)
        except (OSError, ValueError):
            return None
        return version

    @property
    def current_file(self) -> Path | None:
        """The running release's file, through the ``current`` link."""
        version = self.current_version
        if version is None:
            return None
        record = self._record(self.state_dir / "current")
        filename = None if record is None else record.get("filename")
        return self.state_dir / "current" / filename if isinstance(filename, str) else None

    # -- check and install -------------------------------------------------------------
    def check(self) -> Release | None:
        """Refresh the signed metadata and return the latest release if it is newer than
        the running one (``None``: up to date or nothing published).

        Raises:
            UpdateRefused: a security check failed, including a repository whose latest
                release is older than the running version (software rollback).
            UpdateUnavailable: the repository could not be reached.
        """
        with self._locked():
            updater = self._updater()
            release = self._latest(updater)
        if release is None:
            return None
        running = self.current_version
        if running is not None and release.version_key <= parse_version(running):
            if release.version_key == parse_version(running):
                logger.debug("%s %s is up to date", self.name, running)
                return None
            raise self._refuse(
                Refusal.SOFTWARE_ROLLBACK,
                f"the repository's latest {self.name} is {release.version}, older than "
                f"the running {running}",
            )
        logger.info("%s %s available (running %s)", self.name, release.version, running)
        return release

    def install(self, release: Release) -> Path:
        """Download ``release``, verify it, store it and switch ``current`` to it.

        The metadata is refreshed again and the target re-resolved, so a release object
        from an earlier :meth:`check` cannot smuggle in an unverified file.

        Returns:
            The installed file (under ``releases/<version>/``).

        Raises:
            UpdateRefused: a security check failed (the running version is kept).
            UpdateUnavailable: the repository could not be reached.
        """
        running = self.current_version
        if running is not None and release.version_key <= parse_version(running):
            raise self._refuse(
                Refusal.SOFTWARE_ROLLBACK,
                f"{release.version} is not newer than the running {running}",
            )
        with self._locked():
            updater = self._updater()
            info = self._call(lambda: updater.get_targetinfo(release.path), "metadata")
            if info is None:
                raise self._refuse(Refusal.INVALID, f"{release.path} is no longer a signed target")
            self._check_custom(info, release.version)
            filename = self._filename(info.path)
            staging = self.state_dir / "staging" / secrets.token_hex(6)
            staging.mkdir(parents=True)
            try:
                downloaded = staging / filename
                self._call(
                    lambda: updater.download_target(info, str(downloaded)),
                    f"target {release.path}",
                    target=True,
                )
                record = {
                    "name": release.name,
                    "version": release.version,
                    "path": release.path,
                    "filename": filename,
                    "length": info.length,
                    "sha256": info.hashes.get("sha256"),
                }
                (staging / "release.json").write_text(json.dumps(record, indent=2))
                final = self.state_dir / "releases" / release.version
                shutil.rmtree(final, ignore_errors=True)
                os.replace(staging, final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            link = self.state_dir / f".current.{secrets.token_hex(4)}"
            os.symlink(f"releases/{release.version}", link)
            os.replace(link, self.state_dir / "current")
        logger.info("installed %s %s (was %s)", release.name, release.version, running)
        return final / filename

    def update(self) -> Path | None:
        """:meth:`check` then :meth:`install` a newer release; ``None`` if up to date."""
        release = self.check()
        return None if release is None else self.install(release)

    async def acheck(self) -> Release | None:
        """:meth:`check` in a worker thread (for an agent's event loop)."""
        return await asyncio.to_thread(self.check)

    async def ainstall(self, release: Release) -> Path:
        """:meth:`install` in a worker thread."""
        return await asyncio.to_thread(self.install, release)

    async def aupdate(self) -> Path | None:
        """:meth:`update` in a worker thread; call it periodically from an agent."""
        return await asyncio.to_thread(self.update)

    # -- internals ---------------------------------------------------------------------
    def _updater(self) -> Updater:
        """A fresh tuf Updater (one refresh per Updater) over the cached metadata."""
        try:
            return Updater(
                metadata_dir=str(self.state_dir / "metadata"),
                metadata_base_url=self.url + "metadata/",
                target_base_url=self.url + "targets/",
                fetcher=self._fetcher,
                bootstrap=self.trusted_root,
            )
        except (tuf_errors.RepositoryError, ValueError) as exc:
            raise UpdateError(f"the trusted root is not valid root metadata: {exc}") from exc

    def _latest(self, updater: Updater) -> Release | None:
        """The release the index's signed custom metadata names as latest."""
        index = self._call(lambda: updater.get_targetinfo(index_path(self.name)), "metadata")
        if index is None:
            logger.info("no %s release published at %s", self.name, self.url)
            return None
        custom = index.custom if isinstance(index.custom, dict) else {}
        version, path = custom.get("latest"), custom.get("path")
        if not isinstance(version, str) or not isinstance(path, str):
            raise self._refuse(Refusal.INVALID, "release index names no latest version")
        info = self._call(lambda: updater.get_targetinfo(path), "metadata")
        if info is None:
            raise self._refuse(Refusal.INVALID, f"latest release {path} is not a signed target")
        self._check_custom(info, version)
        filename = self._filename(path)
        return Release(
            name=self.name,
            version=version,
            path=path,
            filename=filename,
            length=info.length,
            sha256=info.hashes.get("sha256", ""),
        )

    def _filename(self, target_path: str) -> str:
        """The file name of a target path, if it is a safe single path segment."""
        try:
            return check_name(target_path.rpartition("/")[2], "file name")
        except ValueError as exc:
            raise self._refuse(Refusal.INVALID, str(exc)) from exc

    def _check_custom(self, info: TargetFile, version: str) -> None:
        """The target's signed custom metadata must name this release and version."""
        custom = info.custom if isinstance(info.custom, dict) else {}
        try:
            parse_version(version)
        except ValueError as exc:
            raise self._refuse(Refusal.INVALID, str(exc)) from exc
        if custom.get("name") != self.name or custom.get("version") != version:
            raise self._refuse(
                Refusal.INVALID,
                f"target {info.path} is signed as {custom.get('name')} "
                f"{custom.get('version')}, not {self.name} {version}",
            )

    def _call(self, action: Callable[[], _T], what: str, *, target: bool = False) -> _T:
        """Run a tuf ``action`` about ``what``; turn its failures into
        :class:`UpdateRefused` (naming the failed check) or :class:`UpdateUnavailable`."""
        try:
            return action()
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
            reason = refusal_of(exc, target=target)
            detail = f"{what}: {_describe(exc)}"
            if reason is None:
                logger.warning("update check failed, %s unavailable: %s", self.url, detail)
                raise UpdateUnavailable(f"repository {self.url} unavailable: {detail}") from exc
            raise self._refuse(reason, detail) from exc

    def _refuse(self, reason: Refusal, detail: str) -> UpdateRefused:
        """The refusal to raise, logged with the running version."""
        refused = UpdateRefused(reason, detail, self.current_version)
        logger.warning("%s", refused)
        return refused

    def _record(self, directory: Path) -> dict[str, Any] | None:
        try:
            record = json.loads((directory / "release.json").read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.state_dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

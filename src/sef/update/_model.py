"""What publisher and agent share: release versions, the release record and the errors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "DEFAULT_NAME",
    "PublishError",
    "Refusal",
    "Release",
    "UpdateError",
    "UpdateRefused",
    "UpdateUnavailable",
    "check_name",
    "index_path",
    "parse_version",
]

DEFAULT_NAME = "sef"
"""Release name used when none is given: the SEF software itself."""

_VERSION = re.compile(r"(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def parse_version(text: str) -> tuple[int, int, int]:
    """``"1.10.2"`` → ``(1, 10, 2)``: a release version is exactly ``X.Y.Z``.

    Raises:
        ValueError: anything else (leading zeros, pre-release tags, spaces), with the text.
    """
    match = _VERSION.fullmatch(text)
    if match is None:
        raise ValueError(f"release version must be X.Y.Z with plain integers, got {text!r}")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def check_name(text: str, what: str = "release name") -> str:
    """Return ``text`` if it is a safe single path segment (letters, digits, ``._-``).

    Release names and file names become URL path segments and local file names, so
    slashes, ``..`` and hidden names are refused.

    Raises:
        ValueError: the name is not allowed, with the reason.
    """
    if _NAME.fullmatch(text) is None or set(text) == {"."}:
        raise ValueError(
            f"{what} must be 1-100 letters, digits, '.', '_' or '-' and not start with "
            f"'.', '_' or '-', got {text!r}"
        )
    return text


def index_path(name: str) -> str:
    """The TUF target path of the release index of ``name`` (its custom metadata names the
    latest release)."""
    return f"{name}/releases.json"


@dataclass(frozen=True)
class Release:
    """One published release, as the signed targets metadata describes it.

    Attributes:
        name: release name (``sef`` unless the publisher chose another).
        version: ``X.Y.Z``.
        path: the TUF target path, ``<name>/<version>/<filename>``.
        filename: the released file's name.
        length: file size in bytes.
        sha256: hex SHA-256 of the file.
    """

    name: str
    version: str
    path: str
    filename: str
    length: int
    sha256: str

    @property
    def version_key(self) -> tuple[int, int, int]:
        """The version as integers, for ordering."""
        return parse_version(self.version)


class UpdateError(Exception):
    """Base of every update failure."""


class PublishError(UpdateError):
    """The repository cannot be created or a release cannot be published."""


class UpdateUnavailable(UpdateError):
    """The repository could not be reached or a download failed; nothing was changed."""


class Refusal(StrEnum):
    """Why an agent refused an update (each is a security check that failed)."""

    TAMPERED_TARGET = "tampered target"
    """The downloaded file's length or hash differs from the signed targets metadata."""
    TAMPERED_METADATA = "tampered metadata"
    """A metadata file's length or hash differs from what snapshot/timestamp signed."""
    METADATA_ROLLBACK = "metadata rollback"
    """The repository served metadata older than the agent has already seen."""
    EXPIRED = "expired metadata"
    """Signed metadata is past its expiry (a freeze attack or a stale repository)."""
    BAD_SIGNATURE = "bad signature or wrong key"
    """Metadata is not signed by a threshold of the keys the trusted root names."""
    SOFTWARE_ROLLBACK = "software rollback"
    """The release offered is older than the version running."""
    INVALID = "invalid metadata"
    """Metadata is malformed or inconsistent (e.g. a release without its version)."""


class UpdateRefused(UpdateError):
    """An update was refused by a security check; the running version was kept.

    Attributes:
        reason: which check failed.
        detail: the library's explanation.
        running: the version still running (``None`` before the first install).
    """

    def __init__(self, reason: Refusal, detail: str, running: str | None) -> None:
        self.reason = reason
        self.detail = detail
        self.running = running
        super().__init__(
            f"update refused ({reason}): {detail}; running version {running or 'none'} kept"
        )

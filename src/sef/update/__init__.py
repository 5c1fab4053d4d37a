"""SEF software updates signed with The Update Framework (TUF, the ``tuf`` library).

Public names:

* :class:`UpdateRepository`: the publisher's repository directory (``sef update init``,
  ``sef update publish``, ``sef update timestamp``).
* :class:`UpdateClient`: an agent's checker and installer (``sef update check``,
  ``sef update install``); keeps the running version on any refusal.
* :class:`RepositoryServer`: a static HTTP server of a repository (``sef update serve``).
* :class:`Release`, :class:`Refusal`, :class:`UpdateRefused`, :class:`UpdateUnavailable`,
  :class:`PublishError`, :class:`UpdateError`, :func:`parse_version`.

``docs/updates.md`` describes the roles, the key handling and each refusal.
"""

from sef.update._client import UpdateClient, refusal_of
from sef.update._model import (
    DEFAULT_NAME,
    PublishError,
    Refusal,
    Release,
    UpdateError,
    UpdateRefused,
    UpdateUnavailable,
    check_name,
    parse_version,
)
from sef.update._repository import KeyType, UpdateRepository
from sef.update._server import RepositoryServer

__all__ = [
    "DEFAULT_NAME",
    "KeyType",
    "PublishError",
    "Refusal",
    "Release",
    "RepositoryServer",
    "UpdateClient",
    "UpdateError",
    "UpdateRefused",
    "UpdateRepository",
    "UpdateUnavailable",
    "check_name",
    "parse_version",
    "refusal_of",
]

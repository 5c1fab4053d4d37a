"""Bearer tokens of the EMS API, kept in the EMS store (table ``api_tokens``).

A token is ``secrets.token_urlsafe(32)`` (32 random bytes, 43 characters): it is shown
once, when it is created, and only its SHA-256 hash is stored. A salted slow hash (as for
passwords) buys nothing for 256 random bits, and SHA-256 lets a request be checked in
microseconds. A token is revoked by name; a revoked name is not reused, so that the
command log's ``sent_by`` keeps naming one holder.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Literal, cast

import sqlalchemy as sa

from sef.ems.store._schema import api_tokens
from sef.ems.store._store import Store

__all__ = [
    "ROLES",
    "TOKEN_BYTES",
    "ApiRole",
    "TokenError",
    "TokenRow",
    "TokenStore",
    "hash_token",
]

ApiRole = Literal["viewer", "operator", "admin"]
ROLES: tuple[ApiRole, ...] = ("viewer", "operator", "admin")
"""API roles, least first: each may do what the ones before it may."""
TOKEN_BYTES = 32
"""Random bytes of a new token (256 bits)."""
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
"""A token name: 1-64 letters, digits, ``_ . @ -`` (it is logged as ``sent_by``)."""


class TokenError(ValueError):
    """A token cannot be created or revoked (bad name or role, name taken, unknown)."""


def hash_token(token: str) -> str:
    """The SHA-256 hash (hex) of a token, as stored."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenRow:
    """A stored token (its hash, never the token). Times are Unix s (wall clock)."""

    name: str
    role: ApiRole
    token_hash: str
    created: float
    revoked: float | None

    @property
    def active(self) -> bool:
        return self.revoked is None


class TokenStore:
    """The API tokens of one :class:`~sef.ems.store.Store` (SQLite or PostgreSQL)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, name: str, role: str, *, now: float | None = None) -> str:
        """Create a token named ``name`` with ``role``; return the token (shown once).

        Raises:
            TokenError: a bad name or role, or the name is taken (also by a revoked token).
        """
        if not NAME.match(name):
            raise TokenError(
                f"bad token name {name[:80]!r}: 1-64 letters, digits, '_', '.', '@' or '-'"
            )
        if role not in ROLES:
            raise TokenError(f"unknown role {role[:20]!r}: one of {', '.join(ROLES)}")
        token = secrets.token_urlsafe(TOKEN_BYTES)
        row = {
            "name": name,
            "role": role,
            "token_hash": hash_token(token),
            "created": time.time() if now is None else now,
            "revoked": None,
        }
        try:
            with self.store.engine.begin() as connection:
                connection.execute(api_tokens.insert().values(**row))
        except sa.exc.IntegrityError:
            raise TokenError(
                f"a token named {name!r} exists (or existed: names are not reused)"
            ) from None
        return token

    def revoke(self, name: str, *, now: float | None = None) -> None:
        """Revoke the token named ``name``; :class:`TokenError` if there is none active."""
        query = (
            api_tokens.update()
            .where(api_tokens.c.name == name, api_tokens.c.revoked.is_(None))
            .values(revoked=time.time() if now is None else now)
        )
        with self.store.engine.begin() as connection:
            if not connection.execute(query).rowcount:
                raise TokenError(f"no active token named {name[:80]!r}")

    def rows(self, *, active_only: bool = False) -> list[TokenRow]:
        """The tokens, by name."""
        query = sa.select(api_tokens).order_by(api_tokens.c.name)
        if active_only:
            query = query.where(api_tokens.c.revoked.is_(None))
        with self.store.engine.connect() as connection:
            return [
                TokenRow(
                    row.name, cast("ApiRole", row.role), row.token_hash, row.created, row.revoked
                )
                for row in connection.execute(query)
            ]

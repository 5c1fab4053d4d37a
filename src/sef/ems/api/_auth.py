"""Who may use the EMS API: bearer tokens (or the dashboard's session cookie, or an
operator's client certificate), three roles.

Every request is authenticated by :class:`~sef.ems.api._gate.AuthMiddleware` before it
reaches a route, except the public ones (:func:`required_role` returns ``None``):
``GET /health``, the login page and its files, ``POST /login`` and ``POST /logout``. The
roles, least first:

* ``viewer``: every ``GET`` (agents, telemetry, command log, events, metrics, docs);
* ``operator``: a viewer who also sends commands (``POST .../commands``), sets the live
  control target (``PUT /control/target``) and the demand-response opt-out policy
  (``PUT /openadr/policy``) and overrides an event's opt (``POST /openadr/events/.../opt``);
* ``admin``: an operator who also acts on the registry (reset, approve) and anything else
  that changes state.

A request without credentials gets 401 with ``WWW-Authenticate: Bearer``; a bad token 401
with ``error="invalid_token"``; a role too low 403 with ``error="insufficient_scope"``
(RFC 6750). A request authenticated by the session cookie that changes state must also
carry the header ``X-SEF-CSRF`` (cross-site forms cannot set it; the cookie is also
``SameSite=Strict``) and, if it has an ``Origin``, one naming this host.

Tokens are checked against the EMS store's ``api_tokens`` (hashes only), re-read at most
every :attr:`ApiAuth.refresh_s`: a revoked token stops working within that time.

Over TLS with :attr:`ApiAuth.trust` (the deployment CA), a request without a token may
present a client certificate of role ``operator``: it is verified (issuer, validity,
revocation list, role) and its identity is the principal, with the operator role. Like the
cookie, a certificate is sent by a browser on its own, so its state-changing requests need
``X-SEF-CSRF`` too.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers

from sef.ems.api._errors import clip_message
from sef.ems.store import ROLES, ApiRole, Store, TokenStore, hash_token
from sef.security import Role, SecurityError, TrustStore, load_certificate

__all__ = [
    "COMMAND_PATH",
    "COOKIE",
    "CSRF_HEADER",
    "SAFE_METHODS",
    "SECURE_COOKIE",
    "ApiAuth",
    "Principal",
    "TokensUnavailable",
    "Unauthorized",
    "bearer_token",
    "required_role",
]

log = logging.getLogger("sef.ems.api.auth")

COOKIE = "sef_token"
"""The dashboard's session cookie (holds the token; HttpOnly, SameSite=Strict)."""
SECURE_COOKIE = "__Host-sef_token"
"""Its name over TLS (the ``__Host-`` prefix: Secure, Path=/, no Domain)."""
CSRF_HEADER = "x-sef-csrf"
"""The header a cookie-authenticated state-changing request must carry."""
MAX_TOKEN_CHARS = 256
"""Longest token accepted (a token is 43 characters); longer is refused unread."""
_TOKEN = re.compile(r"^[A-Za-z0-9._~+/=-]+$")
"""The characters of an RFC 6750 ``b64token``."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
COMMAND_PATH = re.compile(r"^/(?:agents|groups)/[^/]+/commands/?$")
OPENADR_OPT_PATH = re.compile(r"^/openadr/events/[^/]+/[^/]+/opt/?$")
"""``POST /openadr/events/{source}/{id}/opt``: an operator's opt override (``_openadr``)."""
_PUBLIC = {
    ("GET", "/health"),
    ("HEAD", "/health"),
    ("GET", "/login"),
    ("HEAD", "/login"),
    ("POST", "/login"),
    ("POST", "/logout"),
    ("GET", "/web/login.js"),
    ("GET", "/web/style.css"),
}
RANK = {role: i for i, role in enumerate(ROLES)}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who sent a request: a token's ``name`` and ``role``, and how (``token``,
    ``cookie`` or ``insecure``: authentication off, everyone is an anonymous admin)."""

    name: str
    role: ApiRole
    via: str

    def may(self, role: ApiRole) -> bool:
        """Whether this principal has ``role`` or a higher one."""
        return RANK[self.role] >= RANK[role]


def required_role(method: str, path: str) -> ApiRole | None:
    """The least role a request needs; ``None`` for the public ones."""
    method = "GET" if method == "HEAD" else method
    if (method, path) in _PUBLIC:
        return None
    if method in SAFE_METHODS:
        return "viewer"
    if method == "POST" and COMMAND_PATH.match(path):
        return "operator"
    if method == "PUT" and path.rstrip("/") == "/control/target":
        return "operator"  # the live controller's target (sef.ems.api._target)
    if method == "PUT" and path.rstrip("/") == "/openadr/policy":
        return "operator"  # the demand-response opt-out policy (sef.ems.api._openadr)
    if method == "POST" and OPENADR_OPT_PATH.match(path):
        return "operator"  # an opt override of a demand-response event
    return "admin"


class Unauthorized(Exception):
    """Credentials missing or wrong: 401 (``error`` is RFC 6750's code, if any)."""

    def __init__(self, message: str, error: str | None = "invalid_token") -> None:
        super().__init__(message)
        self.message = message
        self.error = error


def bearer_token(headers: Headers) -> str | None:
    """The token of the ``Authorization: Bearer TOKEN`` header, ``None`` without one.

    Raises:
        Unauthorized: another scheme, several headers, or a token that cannot be one
            (too long, characters outside RFC 6750's ``b64token``).
    """
    values = headers.getlist("authorization")
    if not values:
        return None
    if len(values) > 1:
        raise Unauthorized("more than one Authorization header", "invalid_request")
    scheme, _, token = values[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthorized(
            f"unsupported authorization scheme {clip_message(repr(scheme[:20]))}: use Bearer",
            "invalid_request",
        )
    return check_token_text(token.strip())


def check_token_text(token: str) -> str:
    """``token`` if it can be a token; :class:`Unauthorized` otherwise (never looked up)."""
    if not token:
        raise Unauthorized("empty bearer token", "invalid_request")
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthorized(f"token of {len(token)} characters: not a token of this EMS")
    if not _TOKEN.match(token):
        raise Unauthorized("the token holds characters a token cannot have")
    return token


class ApiAuth:
    """The API's authentication: tokens of an EMS store, or none (``insecure``).

    Args:
        tokens: the token table (``None``: no stored token is valid; tokens added with
            :meth:`add_token` still are).
        insecure: no authentication: every request is an anonymous admin.
        refresh_s: longest time a revoked or new token goes unnoticed, s.
        max_stale_s: how long the last token list read stays in use while the store
            cannot be read, s; then requests are refused (503) until it can.
        tls: the API is served over TLS (the session cookie is then ``Secure``).
        trust: accept client certificates of role ``operator`` of this CA (over TLS).
    """

    def __init__(
        self,
        tokens: TokenStore | None = None,
        *,
        insecure: bool = False,
        refresh_s: float = 1.0,
        max_stale_s: float = 300.0,
        tls: bool = False,
        trust: TrustStore | None = None,
    ) -> None:
        self.tokens = tokens
        self.trust = trust
        self.insecure = insecure
        self.refresh_s = refresh_s
        self.max_stale_s = max_stale_s
        self.tls = tls
        self._extra: dict[str, tuple[str, ApiRole]] = {}
        self._known: list[tuple[str, str, ApiRole]] = []  # (hash, name, role), active
        self._loaded_at = -float("inf")
        self._tried_at = -float("inf")
        self._lock = asyncio.Lock()

    @classmethod
    def open(cls) -> ApiAuth:
        """No authentication (``sef ems --insecure``): everyone is an anonymous admin."""
        return cls(insecure=True)

    @classmethod
    def of_store(cls, store: Store | None, **kwargs: Any) -> ApiAuth:
        """Tokens of ``store`` (none valid when there is no store)."""
        return cls(TokenStore(store) if store is not None else None, **kwargs)

    @property
    def has_tokens(self) -> bool:
        """Whether tokens were added in memory (:meth:`add_token`)."""
        return bool(self._extra)

    @property
    def cookie_name(self) -> str:
        return SECURE_COOKIE if self.tls else COOKIE

    def add_token(self, name: str, role: ApiRole, token: str) -> None:
        """Accept ``token`` as ``name`` with ``role`` (kept in memory only: for a
        throwaway EMS such as the demo's, or tests)."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        self._extra[hash_token(check_token_text(token))] = (name, role)

    async def _refresh(self) -> None:
        if self.tokens is None:
            return
        now = time.monotonic()
        if now - self._tried_at < self.refresh_s and now - self._loaded_at <= self.max_stale_s:
            return
        # a request without a usable list waits for the read in progress (at start)
        async with self._lock:
            if time.monotonic() - self._tried_at < self.refresh_s:
                return
            self._tried_at = time.monotonic()
            try:
                rows = await asyncio.to_thread(self.tokens.rows, active_only=True)
            except Exception as exc:  # the store is down: keep the last list a while
                log.warning("cannot read the API tokens from the store: %s", exc)
                return
            self._known = [(r.token_hash, r.name, r.role) for r in rows if r.role in RANK]
            self._loaded_at = time.monotonic()

    async def principal(self, token: str, via: str) -> Principal:
        """Who holds ``token``.

        Raises:
            Unauthorized: the token is malformed, unknown or revoked.
            TokensUnavailable: the token list cannot be read (store down too long).
        """
        token = check_token_text(token)
        await self._refresh()
        if self.tokens is not None and time.monotonic() - self._loaded_at > self.max_stale_s:
            raise TokensUnavailable("cannot check tokens: the store is unavailable")
        digest = hash_token(token)
        found: tuple[str, ApiRole] | None = self._extra.get(digest)
        for known, name, role in self._known:  # constant time per comparison
            if hmac.compare_digest(known, digest):
                found = (name, role)
        if found is None:
            raise Unauthorized("unknown or revoked token")
        return Principal(found[0], found[1], via)

    def certificate_principal(self, pem: str) -> Principal:
        """The principal of a client certificate the TLS layer verified against the CA;
        checked again here (revocation list, validity, role ``operator``).

        Raises:
            Unauthorized: no trust store, or the certificate is refused (says why).
        """
        if self.trust is None:
            raise Unauthorized("client certificates are not accepted here")
        try:
            identity = self.trust.verify(load_certificate(pem.encode()), role=Role.OPERATOR)
        except SecurityError as exc:
            raise Unauthorized(f"client certificate refused: {exc}") from None
        return Principal(identity.id, "operator", "certificate")


class TokensUnavailable(Exception):
    """The token list cannot be read: 503."""

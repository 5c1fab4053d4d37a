"""Who may use the EMS API: bearer tokens (or the dashboard's session cookie), three roles.

Every request is authenticated by :class:`AuthMiddleware` before it reaches a route,
except the public ones (:func:`required_role` returns ``None``): ``GET /health``, the login
page and its files, ``POST /login`` and ``POST /logout``. The roles, least first:

* ``viewer``: every ``GET`` (agents, telemetry, command log, events, metrics, docs);
* ``operator``: a viewer who also sends commands (``POST .../commands``);
* ``admin``: an operator who also acts on the registry (reset, approve) and anything else
  that changes state.

A request without credentials gets 401 with ``WWW-Authenticate: Bearer``; a bad token 401
with ``error="invalid_token"``; a role too low 403 with ``error="insufficient_scope"``
(RFC 6750). A request authenticated by the session cookie that changes state must also
carry the header ``X-SEF-CSRF`` (cross-site forms cannot set it; the cookie is also
``SameSite=Strict``) and, if it has an ``Origin``, one naming this host.

Tokens are checked against the EMS store's ``api_tokens`` (hashes only), re-read at most
every :attr:`ApiAuth.refresh_s`: a revoked token stops working within that time.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from sef.ems.api._errors import clip_message
from sef.ems.store import ROLES, ApiRole, Store, TokenStore, hash_token

__all__ = [
    "COOKIE",
    "CSRF_HEADER",
    "SECURE_COOKIE",
    "ApiAuth",
    "AuthMiddleware",
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
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_COMMANDS = re.compile(r"^/(?:agents|groups)/[^/]+/commands/?$")
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
    if method in _SAFE_METHODS:
        return "viewer"
    if method == "POST" and _COMMANDS.match(path):
        return "operator"
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
    """

    def __init__(
        self,
        tokens: TokenStore | None = None,
        *,
        insecure: bool = False,
        refresh_s: float = 1.0,
        max_stale_s: float = 300.0,
        tls: bool = False,
    ) -> None:
        self.tokens = tokens
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


class TokensUnavailable(Exception):
    """The token list cannot be read: 503."""


def _cookie(headers: Headers, name: str) -> str | None:
    """The value of cookie ``name`` (the last one if repeated), parsed by hand: a bad
    cookie header is never an error, just no cookie."""
    found = None
    for header in headers.getlist("cookie"):
        for part in header.split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                found = value.strip().strip('"')
    return found


def _same_origin(headers: Headers) -> bool:
    """Whether a request's ``Origin`` (if any) names the host it was sent to."""
    origin = headers.get("origin")
    if origin is None:
        return True
    _, _, netloc = origin.partition("://")
    return netloc.lower() == headers.get("host", "").lower()


class AuthMiddleware:
    """ASGI middleware: authenticate each request and check its role (module doc).

    The principal goes into ``scope["state"]["principal"]`` (``request.state.principal``).
    """

    def __init__(self, app: ASGIApp, auth: ApiAuth) -> None:
        self.app = app
        self.auth = auth
        self.refused: dict[int, int] = {401: 0, 403: 0, 503: 0}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope.get("method", "GET"), scope.get("path", "")
        needed = required_role(method, path)
        headers = Headers(scope=scope)
        principal: Principal | None
        try:
            principal = await self._principal(scope, headers, method)
        except _Forbidden as exc:
            if needed is not None:
                await self._refuse(scope, send, 403, exc.message)
                return
            principal = None
        except Unauthorized as exc:
            if needed is None:
                principal = None
            elif method in _SAFE_METHODS and path == "/":
                await _redirect(send, "login")  # a browser without a session: log in
                return
            else:
                challenge = 'Bearer realm="sef"'
                if exc.error:
                    challenge += f', error="{exc.error}"'
                await self._refuse(scope, send, 401, exc.message, challenge)
                return
        except TokensUnavailable as exc:
            if needed is not None:
                await self._refuse(scope, send, 503, str(exc))
                return
            principal = None  # a public route answers whatever the token store does
        if needed is not None and principal is not None and not principal.may(needed):
            await self._refuse(
                scope,
                send,
                403,
                f"{principal.name} ({principal.role}) may not {method} {path}: "
                f"it needs the {needed} role",
                'Bearer realm="sef", error="insufficient_scope"',
                {"role": principal.role, "needed": needed},
            )
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    async def _principal(self, scope: Scope, headers: Headers, method: str) -> Principal:
        auth = self.auth
        if auth.insecure:
            client = (scope.get("client") or ("?",))[0]
            return Principal(f"anonymous@{client}", "admin", "insecure")
        token = bearer_token(headers)
        if token is not None:
            return await auth.principal(token, "token")
        cookie = _cookie(headers, auth.cookie_name)
        if cookie is None:
            raise Unauthorized("authentication required: send Authorization: Bearer TOKEN", None)
        principal = await auth.principal(cookie, "cookie")
        if method not in _SAFE_METHODS and (
            CSRF_HEADER not in headers or not _same_origin(headers)
        ):
            raise _Forbidden(
                f"a request authenticated by the session cookie that changes state needs "
                f"the {CSRF_HEADER} header and a same-origin Origin (CSRF protection)"
            )
        return principal

    async def _refuse(
        self,
        scope: Scope,
        send: Send,
        status: int,
        message: str,
        challenge: str | None = None,
        detail: Any = None,
    ) -> None:
        self.refused[status] = self.refused.get(status, 0) + 1
        app = scope.get("app")
        stats = getattr(getattr(app, "state", None), "stats", None)
        if stats is not None and scope.get("method") == "POST" and _COMMANDS.match(scope["path"]):
            stats.by_status["rejected"] += 1  # a command refused before it was sent
        log.info("API %s %s refused (%d): %s", scope.get("method"), scope["path"], status, message)
        body = json.dumps({"error": clip_message(message), "detail": detail}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        if challenge is not None:
            headers.append((b"www-authenticate", challenge.encode()))
        request_headers = Headers(scope=scope)
        if "content-length" in request_headers or "transfer-encoding" in request_headers:
            headers.append((b"connection", b"close"))  # the body is not read
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})


class _Forbidden(Unauthorized):
    """Credentials valid but the request is refused all the same (CSRF check): 403."""


async def _redirect(send: Send, location: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [
                (b"location", location.encode()),
                (b"content-length", b"0"),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"", "more_body": False})

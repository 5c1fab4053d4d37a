"""The API's gate: :class:`AuthMiddleware` authenticates every request and checks its role
before it reaches the limits and the routes (the rules are in ``_auth``'s description)."""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from sef.ems.api._auth import (
    COMMAND_PATH,
    CSRF_HEADER,
    SAFE_METHODS,
    ApiAuth,
    Principal,
    TokensUnavailable,
    Unauthorized,
    bearer_token,
    required_role,
)
from sef.ems.api._errors import clip_message
from sef.logthrottle import LogThrottle

__all__ = ["AuthMiddleware", "peer_certificate"]

log = logging.getLogger("sef.ems.api.auth")
refusals = LogThrottle(log, "refused API requests")
"""Refused credentials and roles are logged as warnings, a flood of them in summaries."""


def peer_certificate(scope: Scope) -> str | None:
    """The client's certificate (PEM) that the TLS layer verified, if any (ASGI TLS
    extension ``client_cert_chain``, filled in by the API's server protocol)."""
    tls = scope.get("extensions", {}).get("tls")
    chain = tls.get("client_cert_chain") if isinstance(tls, dict) else None
    return str(chain[0]) if chain else None


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
            elif method in SAFE_METHODS and path == "/":
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
        if cookie is not None:
            principal = await auth.principal(cookie, "cookie")
        elif (pem := peer_certificate(scope)) is not None:
            principal = auth.certificate_principal(pem)
        else:
            raise Unauthorized("authentication required: send Authorization: Bearer TOKEN", None)
        if method not in SAFE_METHODS and (CSRF_HEADER not in headers or not _same_origin(headers)):
            raise _Forbidden(
                f"a request authenticated by the session cookie or a client certificate that "
                f"changes state needs the {CSRF_HEADER} header and a same-origin Origin "
                "(CSRF protection)"
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
        if (
            stats is not None
            and scope.get("method") == "POST"
            and COMMAND_PATH.match(scope["path"])
        ):
            stats.by_status["rejected"] += 1  # a command refused before it was sent
        client = str((scope.get("client") or ("?",))[0])
        line = "API %s %s from %s refused (%d): %s"
        args = (scope.get("method"), scope["path"], client, status, message)
        if challenge == 'Bearer realm="sef"':  # no credentials at all: routine
            log.info(line, *args)
        else:
            refusals.warn(client, f"{status} {message[:60]}", line, *args)
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

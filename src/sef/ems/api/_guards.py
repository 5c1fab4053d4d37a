"""The API's outer guards: a Host allow-list, CORS (closed unless origins are given) and
security headers on every answer.

* :class:`HostAllowList` refuses (400, JSON) a request whose ``Host`` is not allowed,
  which defeats DNS rebinding (a web page of another site that resolves its own name to
  this EMS). The default list: ``localhost``, ``127.0.0.1``, ``[::1]`` and the address
  the API is bound to (:func:`default_hosts`).
* CORS: no CORS middleware at all unless origins are given (``--api-cors-origin``); a
  preflight from another origin then gets no ``Access-Control-Allow-Origin``.
* :class:`SecurityHeaders`: ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``,
  ``Referrer-Policy: no-referrer`` on every answer; a ``Content-Security-Policy`` of
  ``default-src 'self'`` on the dashboard's pages; ``Cache-Control: no-store`` on API
  answers that set no caching of their own.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from collections.abc import Iterable, Sequence

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sef.ems.api._errors import clip_message

__all__ = [
    "CSP",
    "HostAllowList",
    "SecurityHeaders",
    "default_hosts",
    "install_guards",
    "normalize_host",
]

CSP = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
"""The dashboard's Content-Security-Policy: its own files only, no inline script."""
_DASHBOARD = ("/", "/login")
_LOOPBACK = ("localhost", "127.0.0.1", "[::1]")

_HOST_HEADER = re.compile(
    r"(?P<host>\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}))(?::(?P<port>[0-9]{1,5}))?"
)


def host_of(header: str | None) -> str | None:
    """The host of a ``Host`` header, lower case (IPv6 literals keep their brackets), or
    ``None`` when the header is missing or not ``HOST[:PORT]``."""
    if header is None:
        return None
    match = _HOST_HEADER.fullmatch(header)
    if match is None:
        return None
    if match["ipv6"] is not None:
        try:
            ipaddress.IPv6Address(match["ipv6"])
        except ValueError:
            return None
    return match["host"].lower()


def normalize_host(host: str) -> str:
    """A host as the ``Host`` header names it: lower case, IPv6 in brackets."""
    host = host.strip().lower()
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def default_hosts(bind: str) -> list[str]:
    """The default allow-list of an API bound to ``bind``: the loopback names, the bind
    address itself and, when bound to every address, this machine's host name."""
    hosts = list(_LOOPBACK)
    if bind in ("0.0.0.0", "::", ""):
        hosts += [socket.gethostname().lower()]
    else:
        hosts.append(normalize_host(bind))
    return list(dict.fromkeys(hosts))


class HostAllowList(TrustedHostMiddleware):
    """:class:`~starlette.middleware.trustedhost.TrustedHostMiddleware` answering a
    refused host with the API's JSON error (400) instead of plain text."""

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str]) -> None:
        super().__init__(app, [normalize_host(h) for h in allowed_hosts], www_redirect=False)
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.allow_any or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = Headers(scope=scope).get("host")
        host = host_of(raw)
        if host is not None and any(
            host == pattern or (pattern.startswith("*") and host.endswith(pattern[1:]))
            for pattern in self.allowed_hosts
        ):
            await self.app(scope, receive, send)
            return
        self.refused += 1
        body = json.dumps(
            {
                "error": clip_message(
                    ("no Host header" if raw is None else f"host {raw!r} is not served here")
                    + f" (allowed: {', '.join(self.allowed_hosts)}; see --api-allowed-host)"
                ),
                "detail": None,
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})


class SecurityHeaders:
    """ASGI middleware adding the security headers (module doc) to every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        dashboard = path in _DASHBOARD or path.startswith("/web/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("x-content-type-options", "nosniff")
                headers.setdefault("x-frame-options", "DENY")
                headers.setdefault("referrer-policy", "no-referrer")
                if dashboard:
                    headers.setdefault("content-security-policy", CSP)
                else:
                    headers.setdefault("cache-control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_guards(
    app: FastAPI, allowed_hosts: Iterable[str] | None, cors_origins: Iterable[str] = ()
) -> None:
    """Install the guards; call after every other middleware (they run first).

    ``allowed_hosts``: ``None`` lets every host in (an app used without a server, as in
    tests of the app alone); ``["*"]`` too, deliberately.
    """
    app.add_middleware(SecurityHeaders)
    origins = list(cors_origins)
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type"],
            allow_credentials=False,
        )
    if allowed_hosts is not None:
        app.add_middleware(HostAllowList, allowed_hosts=list(allowed_hosts))

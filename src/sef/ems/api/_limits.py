"""Limits of the API, enforced before a request reaches a route.

:class:`LimitsMiddleware` (installed by :func:`install_limits`) refuses, with a JSON error:

* a body larger than :attr:`ApiLimits.max_body` — 413, decided from ``Content-Length``
  before any of the body is read, or while a chunked body arrives, without reading the
  rest (the connection is closed);
* a body that does not arrive within :attr:`ApiLimits.body_timeout_s` — 408;
* a JSON body that is not strict JSON (duplicate keys, more than :data:`MAX_OBJECT_KEYS`
  keys in an object or :data:`MAX_CONTAINERS` arrays and objects in all,
  ``NaN``/``Infinity``, nesting or numbers beyond the parser's limits) — 400; a body
  larger than :attr:`ApiLimits.parse_in_loop` bytes is checked in a worker thread;
* more than :attr:`ApiLimits.max_requests` requests at once, more than
  :attr:`ApiLimits.max_client_requests` at once from one client address, or more than
  :attr:`ApiLimits.max_streams` open ``/events`` streams — 503 with ``Retry-After``;
* a NUL or other control character in the path or the query — 400.

Connections are capped by uvicorn (``limit_concurrency``, :attr:`ApiLimits.max_connections`).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sef.ems.api._errors import clip_message

__all__ = ["ApiLimits", "LimitsMiddleware", "StrictJsonError", "install_limits", "strict_json"]

MIB = 1024 * 1024
MAX_OBJECT_KEYS = 256
"""Most members of one JSON object in a body: the API's bodies have a few fields, and every
unknown field costs a validation error (90 000 of them took 0.5 s of the event loop)."""
MAX_CONTAINERS = 10_000
"""Most ``[`` and ``{`` in a JSON body (inside strings too: a cheap upper bound of its
arrays and objects). Building and collecting 50 000 small objects took 0.2 s with the GIL
held, in a worker thread or not; a command has at most 256 events."""


@dataclass(frozen=True)
class ApiLimits:
    """Resource limits of one API server (``sef ems --api-max-body ...``)."""

    max_body: int = MIB
    """Largest request body, bytes (413 beyond)."""
    max_requests: int = 256
    """Requests handled at once, ``/events`` streams included (503 beyond)."""
    max_client_requests: int = 64
    """Requests handled at once from one client address (503 beyond): one client cannot
    take every place. Behind a reverse proxy every client has the proxy's address: set it
    to ``max_requests`` there."""
    max_streams: int = 100
    """Open ``/events`` streams (503 beyond)."""
    max_connections: int = 1000
    """Open connections (uvicorn ``limit_concurrency``: its plain 503 beyond)."""
    body_timeout_s: float = 30.0
    """Longest time to receive a request body, real s (408 beyond)."""
    parse_in_loop: int = 64 * 1024
    """Bodies larger than this (bytes) are parsed in a worker thread."""

    def __post_init__(self) -> None:
        for name in (
            "max_body",
            "max_requests",
            "max_client_requests",
            "max_streams",
            "max_connections",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.body_timeout_s) and self.body_timeout_s > 0):
            raise ValueError(f"body_timeout_s must be > 0, got {self.body_timeout_s}")


class StrictJsonError(ValueError):
    """A body that is not strict JSON; the message is short and says why."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len(pairs) > MAX_OBJECT_KEYS:
        raise StrictJsonError(f"an object has {len(pairs)} keys, at most {MAX_OBJECT_KEYS}")
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise StrictJsonError(f"duplicate key {clip_message(repr(key))}")
            seen.add(key)
    return out


def _constant(name: str) -> Any:
    raise StrictJsonError(f"{name} is not JSON")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise StrictJsonError(f"number {clip_message(text)} is out of range")
    return value


def strict_json(data: bytes) -> Any:
    """Parse a JSON document strictly: no duplicate keys, no object of more than
    :data:`MAX_OBJECT_KEYS` keys, at most :data:`MAX_CONTAINERS` arrays and objects, no
    ``NaN``/``Infinity``, no number that overflows a float.

    Raises:
        StrictJsonError: with a short message (at most a short prefix of the bad value).
    """
    containers = data.count(b"[") + data.count(b"{")
    if containers > MAX_CONTAINERS:
        raise StrictJsonError(f"more than {MAX_CONTAINERS} arrays and objects ({containers})")
    try:
        return json.loads(
            data, object_pairs_hook=_object, parse_constant=_constant, parse_float=_float
        )
    except StrictJsonError:
        raise
    except json.JSONDecodeError as exc:
        raise StrictJsonError(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise StrictJsonError("nested too deeply") from None
    except ValueError as exc:  # undecodable bytes, an integer of too many digits
        raise StrictJsonError(clip_message(str(exc).split(":")[0])) from None


def _is_json(scope: Scope) -> bool:
    """Whether FastAPI would parse this body as JSON (no content type, or a JSON one)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            kind: bytes = value.split(b";", 1)[0].strip().lower()
            return kind == b"application/json" or (
                kind.startswith(b"application/") and kind.endswith(b"+json")
            )
    return True


def _control_character(scope: Scope) -> str | None:
    """Which part of the request target holds a NUL or other control character, if any."""
    path = scope.get("path", "")
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        return "path"
    query = unquote_to_bytes(scope.get("query_string", b"").replace(b"+", b" "))
    if any(b < 32 or b == 127 for b in query):
        return "query"
    return None


class _Refused(Exception):
    def __init__(self, status: int, message: str, detail: Any = None, *, close: bool = False):
        super().__init__(message)
        self.status, self.message, self.detail, self.close = status, message, detail, close


class LimitsMiddleware:
    """ASGI middleware enforcing :class:`ApiLimits` (see the module's description)."""

    def __init__(self, app: ASGIApp, limits: ApiLimits) -> None:
        self.app = app
        self.limits = limits
        self.requests = 0
        self.streams = 0
        self.by_client: Counter[str] = Counter()
        """Requests handled now, by client address (only addresses with some)."""
        self.refused: Counter[int] = Counter()
        """Requests refused here, by HTTP status."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the request against the limits; pass it on, or answer the refusal."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limits = self.limits
        stream = scope.get("path", "").rstrip("/") == "/events"
        client = str((scope.get("client") or ("?",))[0])
        try:
            where = _control_character(scope)
            if where is not None:
                raise _Refused(400, f"the {where} holds a control character (NUL...)")
            if self.requests >= limits.max_requests:
                raise _Refused(
                    503,
                    f"too many requests at once (limit {limits.max_requests}); retry later",
                    {"limit": limits.max_requests},
                )
            if self.by_client[client] >= limits.max_client_requests:
                raise _Refused(
                    503,
                    f"too many requests at once from {client} "
                    f"(limit {limits.max_client_requests}); retry later",
                    {"limit": limits.max_client_requests},
                )
            if stream and self.streams >= limits.max_streams:
                raise _Refused(
                    503,
                    f"too many open event streams (limit {limits.max_streams}); retry later",
                    {"limit": limits.max_streams},
                )
        except _Refused as refused:
            await self._refuse(scope, send, refused)
            return
        self.requests += 1
        self.streams += stream
        self.by_client[client] += 1
        try:
            try:
                receive = await self._body(scope, receive)
            except _Refused as refused:
                await self._refuse(scope, send, refused)
                return
            await self.app(scope, receive, send)
        finally:
            self.requests -= 1
            self.streams -= stream
            self.by_client[client] -= 1
            if not self.by_client[client]:
                del self.by_client[client]

    async def _body(self, scope: Scope, receive: Receive) -> Receive:
        """Read and check the body (if any); a ``receive`` that hands it to the app."""
        limits = self.limits
        length: int | None = None
        chunked = False
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if not value.isdigit():  # pragma: no cover - the HTTP parser refuses it
                    raise _Refused(400, "bad Content-Length", close=True)
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = True
        if length is not None and length > limits.max_body:
            raise _Refused(
                413,
                f"body of {length} bytes is too large (limit {limits.max_body})",
                {"limit": limits.max_body},
                close=True,
            )
        if not chunked and not length:
            return receive
        body = bytearray()
        more = True
        try:
            async with asyncio.timeout(limits.body_timeout_s):
                while more:
                    message = await receive()
                    if message["type"] != "http.request":  # the client went away
                        raise _Refused(400, "the client closed the request", close=True)
                    body += message.get("body", b"")
                    more = bool(message.get("more_body", False))
                    if len(body) > limits.max_body:
                        raise _Refused(
                            413,
                            f"body is too large (limit {limits.max_body} bytes)",
                            {"limit": limits.max_body},
                            close=True,
                        )
        except TimeoutError:
            raise _Refused(
                408, f"body not received within {limits.body_timeout_s:g} s", close=True
            ) from None
        data = bytes(body)
        del body
        if data and _is_json(scope):
            try:
                if len(data) > limits.parse_in_loop:
                    await asyncio.to_thread(strict_json, data)
                else:
                    strict_json(data)
            except StrictJsonError as exc:
                raise _Refused(400, f"body is not valid JSON: {exc}") from None
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()

        return replay

    async def _refuse(self, scope: Scope, send: Send, refused: _Refused) -> None:
        self.refused[refused.status] += 1
        app = scope.get("app")
        stats = getattr(getattr(app, "state", None), "stats", None)
        path = str(scope.get("path", "")).rstrip("/")
        if stats is not None and scope.get("method") == "POST" and path.endswith("/commands"):
            stats.by_status["rejected"] += 1  # a command refused before it was sent
        body = json.dumps(
            {"error": clip_message(refused.message), "detail": refused.detail}
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if refused.status == 503:
            headers.append((b"retry-after", b"1"))
        if refused.close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": refused.status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})


def install_limits(app: FastAPI, limits: ApiLimits) -> None:
    """Install :class:`LimitsMiddleware` with ``limits`` into ``app``."""
    app.add_middleware(LimitsMiddleware, limits=limits)
    app.state.limits = limits

"""JSON errors: every failure is ``{"error": "...", "detail": ...}`` with its HTTP status."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["ApiError", "clip_detail", "clip_message", "error_response", "install_error_handlers"]

log = logging.getLogger("sef.ems.api")

ECHO_CHARS = 64
"""Most characters of a client's value that an error message repeats."""
MESSAGE_CHARS = 1000
"""Most characters of an error message."""
DETAIL_ITEMS = 10
"""Most validation items (and list items of a ``detail``) in an error answer."""

_QUOTES = re.compile("['\"]")
_WORD = re.compile(rf"\S{{{ECHO_CHARS + 8},}}")  # a clipped quoted value stays


def _cut(text: str, limit: int = ECHO_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}…"


def clip_message(text: str) -> str:
    """``text`` with every quoted value and every long word cut to a short prefix
    (:data:`ECHO_CHARS`), and the whole to :data:`MESSAGE_CHARS`; linear in its length."""
    out: list[str] = []
    start = 0
    opening: int | None = None
    for match in _QUOTES.finditer(text):
        at = match.start()
        if opening is None:
            opening = at
        elif text[at] == text[opening]:
            out.append(text[start : opening + 1])
            out.append(_cut(text[opening + 1 : at]))
            start, opening = at, None
    out.append(text[start:])
    clipped = _WORD.sub(lambda m: _cut(m.group(0)), "".join(out))
    return _cut(clipped, MESSAGE_CHARS)


def clip_detail(value: Any, depth: int = 0) -> Any:
    """A ``detail`` with its strings cut to a short prefix, at most :data:`DETAIL_ITEMS`
    items per list or object, and nesting cut after a few levels."""
    if isinstance(value, str):
        return _cut(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value if not isinstance(value, int) or abs(value) < 10**18 else _cut(str(value))
    if depth >= 4:
        return "…"
    if isinstance(value, dict):
        items = list(value.items())[:DETAIL_ITEMS]
        return {_cut(str(k)): clip_detail(v, depth + 1) for k, v in items}
    if isinstance(value, (list, tuple)):
        return [clip_detail(v, depth + 1) for v in list(value)[:DETAIL_ITEMS]]
    return _cut(str(value))


class ApiError(Exception):
    """An error answer: HTTP ``status``, a clear ``message`` and optional ``detail``."""

    def __init__(self, status: int, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail


def error_response(status: int, message: str, detail: Any = None) -> JSONResponse:
    """The JSON answer of an error; the message and detail are clipped (see
    :func:`clip_message`): an error never echoes more than a short prefix of a value."""
    return JSONResponse(
        {"error": clip_message(message), "detail": clip_detail(detail)}, status_code=status
    )


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "cmds", 0, 1)`` → ``cmds[0][1]``; ``("query", "every")`` → ``every``."""
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def install_error_handlers(app: FastAPI) -> None:
    """Make every error of ``app`` a JSON :class:`~sef.ems.api._models.ErrorBody`."""

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        stats = getattr(request.app.state, "stats", None)
        if (
            stats is not None
            and request.method == "POST"
            and request.url.path.endswith("/commands")
        ):
            stats.by_status["rejected"] += 1  # a command refused before it was sent
        errors = exc.errors()
        items = [
            {"loc": clip_message(_location(e.get("loc", ()))), "msg": str(e.get("msg", ""))}
            for e in errors[:DETAIL_ITEMS]
        ]
        message = "; ".join(f"{i['loc']}: {i['msg']}" for i in items) or "invalid request"
        if len(errors) > DETAIL_ITEMS:
            message += f"; and {len(errors) - DETAIL_ITEMS} more"
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, f"body is not valid JSON: {message}", items)
        return error_response(422, message, items)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("API error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")

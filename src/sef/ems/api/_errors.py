"""JSON errors: every failure is ``{"error": "...", "detail": ...}`` with its HTTP status."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["ApiError", "install_error_handlers"]

log = logging.getLogger("sef.ems.api")


class ApiError(Exception):
    """An error answer: HTTP ``status``, a clear ``message`` and optional ``detail``."""

    def __init__(self, status: int, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail


def error_response(status: int, message: str, detail: Any = None) -> JSONResponse:
    return JSONResponse({"error": message, "detail": detail}, status_code=status)


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
        items = [
            {"loc": _location(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()
        ]
        message = "; ".join(f"{i['loc']}: {i['msg']}" for i in items) or "invalid request"
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return error_response(400, f"body is not valid JSON: {message}", items)
        return error_response(422, message, items)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("API error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")

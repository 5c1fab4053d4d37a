"""The enrollment HTTP API (FastAPI): every answer is JSON, every refusal 4xx and logged.

Endpoints (``docs/enrollment.md`` has the details)::

    POST /enroll            {"csr": PEM, "token"?: str, "groups"?: [str], "home"?: str}
                            200 + certificate (claim token), 202 pending
    GET  /enroll/{id}?key=FP   200 + certificate once approved, 202 pending, 404
    POST /renew             {"csr": PEM} over mutual TLS with the current certificate
    GET  /crl               the current CRL (PEM; signed by the CA)
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from sef.enrollment._limits import BodyTooLarge, EnrollLimits, RateLimiter, read_body
from sef.enrollment._service import EnrollmentService, Refused
from sef.logthrottle import LogThrottle

__all__ = ["create_app", "peer_certificate"]

log = logging.getLogger("sef.enrollment")
_throttled = LogThrottle(log, "rate-limited requests")

MAX_MESSAGE = 300
"""Longest error message sent back (characters)."""


def peer_certificate(request: Request) -> str | None:
    """The client's TLS certificate (PEM) if it presented one that the TLS layer verified
    (ASGI TLS extension ``client_cert_chain``, filled in by our server protocol)."""
    tls = request.scope.get("extensions", {}).get("tls", {})
    chain = tls.get("client_cert_chain") if isinstance(tls, dict) else None
    return str(chain[0]) if chain else None


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def _error(request: Request, status: int, message: str) -> JSONResponse:
    message = message[:MAX_MESSAGE]
    level = logging.INFO if status in (202, 404) else logging.WARNING
    log.log(level, "%s %s from %s: %d %s", request.method, request.url.path, _client(request),
            status, message)  # fmt: skip
    return JSONResponse({"error": message}, status_code=status)


def create_app(service: EnrollmentService, limits: EnrollLimits | None = None) -> FastAPI:
    """The ASGI app of an enrollment server over ``service`` (its CA directory)."""
    limits = limits or EnrollLimits()
    enroll_rate = RateLimiter(limits.enroll_burst, limits.enroll_per_s)
    poll_rate = RateLimiter(limits.poll_burst, limits.poll_per_s)
    app = FastAPI(
        title="SEF enrollment",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        redirect_slashes=False,  # /enroll// is a 404 with a JSON message, not a redirect
    )

    def limited(request: Request, rate: RateLimiter) -> JSONResponse | None:
        wait = rate.take(_client(request))
        if wait <= 0:
            return None
        _throttled.warn(_client(request), "rate", "rate limit: %s %s from %s",
                        request.method, request.url.path, _client(request))  # fmt: skip
        return JSONResponse(
            {"error": f"too many requests from {_client(request)}; retry in {wait:.0f} s"},
            status_code=429,
            headers={"Retry-After": str(max(1, round(wait)))},
        )

    async def body_of(request: Request) -> bytes:
        try:
            return await read_body(request, limits.max_body, limits.body_timeout_s)
        except BodyTooLarge as exc:
            raise Refused(413, str(exc)) from None
        except TimeoutError:
            raise Refused(
                408, f"request body not received within {limits.body_timeout_s} s"
            ) from None

    @app.post("/enroll")
    async def enroll(request: Request) -> Response:
        if (refused := limited(request, enroll_rate)) is not None:
            return refused
        try:
            status, body = service.enroll(await body_of(request), _client(request))
        except Refused as exc:
            return _error(request, exc.status, exc.message)
        return JSONResponse(body, status_code=status)

    @app.get("/enroll/{identity}")
    async def poll(request: Request, identity: str, key: str = "") -> Response:
        if (refused := limited(request, poll_rate)) is not None:
            return refused
        try:
            status, body = service.poll(identity, key)
        except Refused as exc:
            return _error(request, exc.status, exc.message)
        return JSONResponse(body, status_code=status)

    @app.post("/renew")
    async def renew(request: Request) -> Response:
        if (refused := limited(request, enroll_rate)) is not None:
            return refused
        try:
            status, body = service.renew(
                await body_of(request), peer_certificate(request), _client(request)
            )
        except Refused as exc:
            return _error(request, exc.status, exc.message)
        return JSONResponse(body, status_code=status)

    @app.get("/crl")
    async def crl(request: Request) -> Response:
        if (refused := limited(request, poll_rate)) is not None:
            return refused
        return Response(service.crl_pem(), media_type="application/x-pem-file")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(request, exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return _error(request, 400, f"invalid request: {exc.errors()[:1]}")

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        log.exception("%s %s from %s failed", request.method, request.url.path, _client(request))
        return JSONResponse({"error": "internal error (logged)"}, status_code=500)

    return app

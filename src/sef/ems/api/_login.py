"""The dashboard's login: ``GET /login`` (the page), ``POST /login`` (a token in, the
session cookie out), ``POST /logout``, and ``GET /me`` (who is logged in).

The session cookie holds the token itself (so a revoked token ends its sessions at once),
``HttpOnly`` (no script reads it), ``SameSite=Strict``, ``Path=/``, and over TLS
``Secure`` with the ``__Host-`` prefix. It lasts as long as the browser session.
``POST /login`` and ``POST /logout`` need the ``X-SEF-CSRF`` header too (a cross-site
form cannot log a browser in with the attacker's token).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from sef.ems.api._auth import (
    CSRF_HEADER,
    MAX_TOKEN_CHARS,
    ApiAuth,
    Principal,
    TokensUnavailable,
    Unauthorized,
)
from sef.ems.api._errors import ApiError
from sef.ems.api._gate import refusals
from sef.ems.api._web import WEB_DIR

__all__ = ["LoginIn", "WhoAmI", "install_login", "principal_of"]

log = logging.getLogger("sef.ems.api.auth")


class LoginIn(BaseModel):
    """A login: the token given by ``sef api-token create``."""

    token: str = Field(max_length=MAX_TOKEN_CHARS, description="The API token.")


class WhoAmI(BaseModel):
    """Who sends the requests."""

    name: str = Field(description="The token's name (the command log's sent_by).")
    role: str = Field(description="viewer, operator or admin.")
    via: str = Field(description="token, cookie or insecure (authentication off).")


def principal_of(request: Request) -> Principal:
    """The principal :class:`~sef.ems.api._auth.AuthMiddleware` found for a request."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):  # pragma: no cover - the middleware sets it
        raise ApiError(401, "authentication required")
    return principal


def _need_csrf_header(request: Request) -> None:
    if CSRF_HEADER not in request.headers:
        raise ApiError(403, f"this request needs the {CSRF_HEADER} header (CSRF protection)")


def install_login(app: FastAPI, auth: ApiAuth) -> None:
    """Add the login page and the session routes to ``app``."""

    @app.get("/login", include_in_schema=False)
    async def login_page() -> FileResponse:
        return FileResponse(WEB_DIR / "login.html", headers={"Cache-Control": "no-cache"})

    @app.post("/login", response_model=WhoAmI, tags=["session"])
    async def login(request: Request, body: LoginIn) -> JSONResponse:
        """Check a token and start a dashboard session: the answer sets the session
        cookie (HttpOnly, SameSite=Strict). Needs the ``X-SEF-CSRF`` header."""
        _need_csrf_header(request)
        if auth.insecure:
            who = Principal("anonymous", "admin", "insecure")
        else:
            try:
                who = await auth.principal(body.token.strip(), "cookie")
            except Unauthorized as exc:
                client = request.client.host if request.client else "?"
                refusals.warn(
                    client, "login", "dashboard login refused from %s: %s", client, exc.message
                )
                raise ApiError(401, f"login refused: {exc.message}") from None
            except TokensUnavailable as exc:
                raise ApiError(503, str(exc)) from None
        response = JSONResponse(WhoAmI(name=who.name, role=who.role, via=who.via).model_dump())
        if not auth.insecure:
            response.set_cookie(
                auth.cookie_name,
                body.token.strip(),
                path="/",
                httponly=True,
                samesite="strict",
                secure=auth.tls,
            )
        log.info("dashboard login: %s (%s)", who.name, who.role)
        return response

    @app.post("/logout", status_code=204, tags=["session"])
    async def logout(request: Request) -> Response:
        """End the dashboard session (clears the cookie). Needs ``X-SEF-CSRF``."""
        _need_csrf_header(request)
        response = Response(status_code=204)
        response.delete_cookie(
            auth.cookie_name, path="/", httponly=True, samesite="strict", secure=auth.tls
        )
        return response

    _document_security(app)

    @app.get("/me", response_model=WhoAmI, tags=["session"])
    async def me(request: Request) -> WhoAmI:
        """Who sends this request: the token's name and role."""
        who = principal_of(request)
        return WhoAmI(name=who.name, role=who.role, via=who.via)


def _document_security(app: FastAPI) -> None:
    """Declare the bearer scheme in the OpenAPI schema (``/docs`` gets an Authorize
    button); ``/health`` and ``/login`` are marked public."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token of sef api-token create (role viewer, operator "
                    "or admin).",
                }
            }
            schema["security"] = [{"bearer": []}]
            for path in ("/health", "/login", "/logout"):
                for operation in schema.get("paths", {}).get(path, {}).values():
                    operation["security"] = []
        return app.openapi_schema or build()

    app.openapi = openapi  # type: ignore[method-assign]

"""The OCPP-J websocket link: sub-protocols, Basic credentials, a receive loop that
survives bad frames.

* **Sub-protocol** (OCPP-J §3.1.2): the charge point offers ``ocpp1.6`` and/or
  ``ocpp2.0.1`` in ``Sec-WebSocket-Protocol``; the server picks one it speaks.
* **Security Profile 2** (OCPP 1.6 Security Whitepaper / OCPP 2.0.1 A00.FR.2xx): TLS
  with a server certificate, and HTTP Basic authentication with the charge point's
  identity as user name and a per-charger password of 16-40 characters.
* **Bad frames**: a frame that is not an OCPP-J message (not JSON, not an array of
  the right shape, binary) is logged with the reason and dropped; an unknown action gets
  the ``ocpp`` package's CallError. After :data:`MAX_BAD_FRAMES` bad frames in a row
  the connection is closed (1008, policy violation). Nothing a peer sends ends the
  process.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import os
import ssl
import stat
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from ocpp.routing import on
from websockets.exceptions import ConnectionClosed

__all__ = [
    "MAX_BAD_FRAMES",
    "SUBPROTOCOLS",
    "OcppVersion",
    "basic_auth_header",
    "check_password",
    "client_tls",
    "frame_problem",
    "load_passwords",
    "parse_basic_auth",
    "route",
    "serve_messages",
    "server_tls",
]

F = TypeVar("F", bound=Callable[..., Any])


def route(action: str) -> Callable[[F], F]:
    """``ocpp.routing.on(action)`` with its type kept (the package is untyped)."""
    return cast(Callable[[F], F], on(action))


MAX_BAD_FRAMES = 20
"""Bad frames in a row after which the connection is closed."""
PASSWORD_LENGTH = (16, 40)
"""Allowed password length (characters), OCPP 2.0.1 ``BasicAuthPassword``."""


class OcppVersion(StrEnum):
    """The OCPP-J sub-protocols SEF speaks."""

    V16 = "ocpp1.6"
    V201 = "ocpp2.0.1"


SUBPROTOCOLS: tuple[str, ...] = (OcppVersion.V201.value, OcppVersion.V16.value)
"""In order of preference."""


def basic_auth_header(user: str, password: str) -> str:
    """The ``Authorization`` header value for HTTP Basic authentication."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def parse_basic_auth(header: str | None) -> tuple[str, str] | None:
    """``(user, password)`` of a Basic ``Authorization`` header, or None if it is not one."""
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        text = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = text.partition(":")
    return (user, password) if sep else None


def check_password(expected: str, given: str) -> bool:
    """Constant-time comparison of two passwords."""
    return hmac.compare_digest(expected.encode(), given.encode())


def load_passwords(path: Path) -> dict[str, str]:
    """Read ``ID:PASSWORD`` lines (``#`` comments, blank lines allowed) into a map.

    Raises:
        ValueError: the file is readable by group or others, a line is malformed, an id
            repeats, or a password is not 16-40 characters (names the line).
    """
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"{path}: must not be readable by others (chmod 600)")
    out: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        cp_id, sep, password = text.partition(":")
        cp_id = cp_id.strip()
        if not sep or not cp_id:
            raise ValueError(f"{path}:{number}: expected ID:PASSWORD")
        if cp_id in out:
            raise ValueError(f"{path}:{number}: {cp_id!r} given twice")
        if not PASSWORD_LENGTH[0] <= len(password) <= PASSWORD_LENGTH[1]:
            raise ValueError(f"{path}:{number}: the password must be 16-40 characters")
        out[cp_id] = password
    return out


def frame_problem(raw: object) -> str | None:
    """Why ``raw`` is not an OCPP-J message, or None when its shape is right."""
    if not isinstance(raw, str):
        return "binary frame (OCPP-J is text)"
    try:
        msg = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        return "not JSON"
    if not isinstance(msg, list) or not msg:
        return "not a JSON array"
    kind = msg[0]
    shapes = {2: (str, str, dict), 3: (str, dict), 4: (str, str, str, dict)}
    if not isinstance(kind, int) or isinstance(kind, bool) or kind not in shapes:
        return f"unknown message type {kind!r}"
    want = shapes[kind]
    if len(msg) != len(want) + 1:
        return f"message type {kind} needs {len(want) + 1} elements, got {len(msg)}"
    for value, typ in zip(msg[1:], want, strict=True):
        if not isinstance(value, typ):
            return f"message type {kind}: {value!r} is not a {typ.__name__}"
    if len(msg[1]) > 36:
        return "message id longer than 36 characters"
    return None


class _Router(Protocol):
    id: str

    async def route_message(self, raw_msg: str) -> Any: ...


class _Connection(Protocol):
    def __aiter__(self) -> Any: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


async def serve_messages(cp: _Router, connection: _Connection, log: logging.Logger) -> None:
    """Feed every frame from ``connection`` to ``cp.route_message`` until it closes.

    A frame with a bad shape (:func:`frame_problem`) and an error inside the ``ocpp``
    package's routing are logged (WARNING, with the reason) and dropped; after
    :data:`MAX_BAD_FRAMES` in a row the connection is closed with 1008.
    """
    bad = 0
    async for raw in connection:
        problem = frame_problem(raw)
        if problem is None:
            try:
                await cp.route_message(raw)
            except ConnectionClosed:
                raise  # the link is gone: the caller's business
            except Exception as exc:  # the ocpp package raises on some malformed calls
                problem = f"{type(exc).__name__}: {exc}"
        if problem is None:
            bad = 0
            continue
        bad += 1
        text = raw if isinstance(raw, str) else repr(raw)
        log.warning("%s: frame rejected (%s): %.120s", cp.id, problem, text)
        if bad >= MAX_BAD_FRAMES:
            log.warning("%s: %d bad frames in a row, closing the connection", cp.id, bad)
            await connection.close(1008, "too many malformed OCPP frames")
            return


def server_tls(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """The listener's TLS context (TLS 1.2+): ``cert``/``key`` (PEM; a certificate with
    the serverAuth usage for the name charge points connect to). With ``client_ca``,
    charge points must present a certificate from that CA (Security Profile 3)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=client_ca)
    return context


def client_tls(
    ca: Path, cert: Path | None = None, key: Path | None = None, *, check_hostname: bool = True
) -> ssl.SSLContext:
    """A charge point's TLS context: trusts ``ca`` only; presents ``cert``/``key`` when given
    (Security Profile 3)."""
    context = ssl.create_default_context(cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = check_hostname
    if cert is not None and key is not None:
        context.load_cert_chain(cert, key)
    return context

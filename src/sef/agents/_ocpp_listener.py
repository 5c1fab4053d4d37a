"""The OCPP websocket listener of ``sef evse``: who may connect, and one session per charger.

A connection is accepted only when, in the HTTP upgrade request,

1. the last path segment is a known charge point id (else 404);
2. with passwords configured (the default: OCPP Security Profile 2), the
   ``Authorization: Basic`` user is that id and the password is its password (else 401,
   with ``WWW-Authenticate``);
3. with ``require_client_cert`` (Security Profile 3), the TLS client certificate,
   already checked against the SEF CA by the TLS layer, names that id (else 403);
4. the charge point offers ``ocpp1.6`` or ``ocpp2.0.1`` (else 400).

Each refusal is one WARNING naming the peer and the reason. A second connection for the
same id replaces the first (OCPP: the newest connection wins). Frames are handled by
:func:`sef.protocols.ocpp.serve_messages`, which drops malformed ones with a logged
reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import NegotiationError
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from sef.agents._ocpp_central import Central, ChargerState, make_central
from sef.protocols.ocpp import SUBPROTOCOLS, check_password, parse_basic_auth, serve_messages

__all__ = ["OcppListener", "Session"]

log = logging.getLogger("sef.agent.evse")


@dataclass
class Session:
    """One live charge-point connection."""

    central: Central
    connection: ServerConnection
    closed: asyncio.Event

    @property
    def cp_id(self) -> str:
        return self.central.state.cp_id


def _cp_id(path: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(path).path.rstrip("/").rpartition("/")[2])


def _peer_cn(connection: ServerConnection) -> str | None:
    ssl_object = connection.transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class OcppListener:
    """Accepts the configured charge points and keeps one :class:`Session` each.

    Args:
        host, port: where to listen (port 0 picks a free one, see :attr:`port`).
        states: the charge points allowed, by id (their state outlives connections).
        passwords: id -> Basic-auth password; None = no HTTP authentication.
        ssl_context: TLS server context (``wss://``), None = plain ``ws://``.
        require_client_cert: the client certificate's common name must be the id.
        on_session, on_closed: called when a charger's session starts / ends (with why).
        changed: called when a charger pushed something.
        now: clock time (Unix s) for the replies' ``currentTime``.
        heartbeat_s: heartbeat interval given to booting chargers (s).
        timeout_s: how long the agent waits for a charger's reply (real s).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        states: dict[str, ChargerState],
        passwords: dict[str, str] | None,
        ssl_context: ssl.SSLContext | None,
        require_client_cert: bool = False,
        on_session: Callable[[Session], None],
        on_closed: Callable[[Session, str], None],
        changed: Callable[[str], None],
        now: Callable[[], float],
        heartbeat_s: int = 60,
        timeout_s: float = 10.0,
        subprotocols: Sequence[str] = SUBPROTOCOLS,
    ) -> None:
        self.host, self.port = host, port
        self.states, self.passwords = states, passwords
        self.ssl_context, self.require_client_cert = ssl_context, require_client_cert
        self.on_session, self.on_closed, self.changed = on_session, on_closed, changed
        self.now, self.heartbeat_s, self.timeout_s = now, heartbeat_s, timeout_s
        self.subprotocols = [Subprotocol(s) for s in subprotocols]
        self.sessions: dict[str, Session] = {}
        self.refused = 0
        self._server: Server | None = None
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        """Listen (idempotent); :attr:`port` is then the bound port."""
        async with self._starting:
            if self._server is None:
                await self._start()

    async def _start(self) -> None:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            ssl=self.ssl_context,
            subprotocols=self.subprotocols,
            select_subprotocol=self._select,
            process_request=self._check,
            ping_interval=10,
            ping_timeout=10,
            max_size=256 * 1024,
        )
        sock = next(iter(self._server.sockets))
        self.port = int(sock.getsockname()[1])
        scheme = "wss" if self.ssl_context else "ws"
        log.info("OCPP listening on %s://%s:%d/ID", scheme, self.host, self.port)

    async def stop(self) -> None:
        """Close every session and stop listening."""
        if self._server is None:
            return
        self._server.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self._server.wait_closed()
        self._server = None

    def _refuse(self, connection: ServerConnection, status: HTTPStatus, why: str) -> Response:
        self.refused += 1
        log.warning("OCPP connection from %s refused: %s", connection.remote_address, why)
        response = connection.respond(status, f"{why}\n")
        if status == HTTPStatus.UNAUTHORIZED:
            response.headers["WWW-Authenticate"] = 'Basic realm="sef-evse", charset="UTF-8"'
        return response

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        cp_id = _cp_id(request.path)
        if cp_id not in self.states:
            return self._refuse(connection, HTTPStatus.NOT_FOUND, f"unknown charge point {cp_id!r}")
        if self.passwords is not None:
            creds = parse_basic_auth(request.headers.get("Authorization"))
            expected = self.passwords.get(cp_id)
            if creds is None:
                return self._refuse(
                    connection, HTTPStatus.UNAUTHORIZED, f"{cp_id}: no Basic credentials"
                )
            if expected is None or creds[0] != cp_id or not check_password(expected, creds[1]):
                return self._refuse(
                    connection, HTTPStatus.UNAUTHORIZED, f"{cp_id}: wrong user or password"
                )
        if self.require_client_cert and _peer_cn(connection) != cp_id:
            return self._refuse(
                connection, HTTPStatus.FORBIDDEN, f"{cp_id}: client certificate is for another id"
            )
        return None

    def _select(
        self, connection: ServerConnection, offered: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        for proto in self.subprotocols:
            if proto in offered:
                return proto
        self.refused += 1
        log.warning(
            "OCPP connection from %s refused: no common sub-protocol (offered %s, speak %s)",
            connection.remote_address,
            list(offered) or "none",
            self.subprotocols,
        )
        raise NegotiationError("no supported OCPP sub-protocol")

    async def _handle(self, connection: ServerConnection) -> None:
        cp_id = _cp_id(connection.request.path if connection.request else "")
        version = str(connection.subprotocol)
        state = self.states[cp_id]
        old = self.sessions.get(cp_id)
        if old is not None:
            log.warning("%s: new connection replaces the old one", cp_id)
            await old.connection.close(1000, "replaced by a new connection")
        central = make_central(
            version,
            state,
            connection,
            changed=lambda: self.changed(cp_id),
            now=self.now,
            heartbeat_s=self.heartbeat_s,
            timeout_s=self.timeout_s,
        )
        session = Session(central, connection, asyncio.Event())
        self.sessions[cp_id] = session
        log.info("%s: connected (%s) from %s", cp_id, version, connection.remote_address)
        self.on_session(session)
        why = "connection closed"
        try:
            await serve_messages(central, connection, log)
            why = _close_reason(connection)
        except Exception as exc:  # a lost link: the reason is what matters
            why = f"{type(exc).__name__}: {exc}"
        finally:
            session.closed.set()
            if self.sessions.get(cp_id) is session:
                del self.sessions[cp_id]
            self.on_closed(session, why)


def _close_reason(connection: Any) -> str:
    code = getattr(connection, "close_code", None)
    reason = getattr(connection, "close_reason", None) or ""
    return f"charge point closed the connection (code {code}{', ' + reason if reason else ''})"

"""Serving the API with uvicorn inside the EMS's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
from collections.abc import Iterable, Iterator
from pathlib import Path

import uvicorn
from cryptography.hazmat.primitives import serialization

from sef.ems._service import EMS
from sef.ems.api._app import create_app
from sef.ems.api._auth import ApiAuth
from sef.ems.api._events import EventHub
from sef.ems.api._guards import default_hosts
from sef.ems.api._limits import ApiLimits
from sef.security import TrustStore
from sef.security._uvicorn_tls import PeerCertH11, server_url, stop_server

__all__ = ["ApiServer", "is_loopback", "parse_listen", "serve_api"]

log = logging.getLogger("sef.ems.api")


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host program."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _client_cert_context(cert: Path, key: Path, trust: TrustStore) -> ssl.SSLContext:
    """A TLS server context asking for (not requiring) a client certificate of ``trust``'s
    CA; the app checks revocation and role."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.verify_mode = ssl.CERT_OPTIONAL
    context.load_verify_locations(cadata=trust.ca.public_bytes(serialization.Encoding.PEM).decode())
    return context


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6; port 0 = any free port) → (host, port)."""
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """Whether an address (or ``localhost``) reaches only this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiServer:
    """A running API server: :attr:`url` to reach it, :meth:`stop` to end it."""

    def __init__(
        self,
        server: uvicorn.Server,
        task: asyncio.Task[None],
        hub: EventHub,
        host: str,
        port: int,
        *,
        tls: bool = False,
        auth: ApiAuth | None = None,
    ) -> None:
        self.server = server
        self.task = task
        self.hub = hub
        self.host = host
        self.port = port
        self.tls = tls
        self.auth = auth

    @property
    def url(self) -> str:
        return server_url(self.host, self.port, tls=self.tls)

    async def stop(self) -> None:
        """End open event streams, then shut the server down gracefully."""
        self.hub.close()
        await stop_server(self.server, self.task)
        self.hub.uninstall()


async def serve_api(
    ems: EMS,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    log_level: str = "warning",
    limits: ApiLimits | None = None,
    auth: ApiAuth | None = None,
    allowed_hosts: Iterable[str] | None = None,
    cors_origins: Iterable[str] = (),
    cert: Path | None = None,
    key: Path | None = None,
    client_certs: TrustStore | None = None,
) -> ApiServer:
    """Start serving the API of ``ems`` on ``host:port`` in the running event loop.

    The socket is bound here, so a busy port raises :class:`OSError` at once; with port 0
    the server takes a free port (see :attr:`ApiServer.port`). Stop it with
    :meth:`ApiServer.stop`. ``limits`` (default :class:`ApiLimits`) bounds bodies,
    concurrent requests, event streams and connections (docs/api.md, "Limits").

    Security (docs/api.md, "Authentication"): ``auth`` defaults to the tokens of
    ``ems.store`` (none valid without a store; :meth:`ApiAuth.open` turns authentication
    off); ``allowed_hosts`` defaults to the loopback names plus ``host``; no CORS unless
    ``cors_origins``; TLS with ``cert`` and ``key`` (PEM files); with TLS and
    ``client_certs`` (the deployment CA) a client certificate of role ``operator`` also
    authenticates. Serving beyond loopback without TLS, or without authentication, logs a
    warning.
    """
    limits = limits or ApiLimits()
    if (cert is None) != (key is None):
        raise ValueError("TLS needs both a certificate and its key")
    tls = cert is not None
    if auth is None:
        auth = ApiAuth.of_store(ems.store, tls=tls)
    else:
        auth.tls = tls
    if client_certs is not None:
        if not tls:
            raise ValueError("client certificates need TLS (a certificate and its key)")
        auth.trust = client_certs
    hosts = list(allowed_hosts) if allowed_hosts is not None else default_hosts(host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto given: asyncio sets TCP_NODELAY only on sockets whose proto is TCP; without it
    # a kept-alive client waited ~40 ms (Nagle + delayed ACK) for each response's body
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    bound = int(sock.getsockname()[1])
    hub = EventHub(ems)
    app = create_app(
        ems, hub=hub, limits=limits, auth=auth, allowed_hosts=hosts, cors_origins=cors_origins
    )
    config = uvicorn.Config(
        app,
        log_level=log_level,
        lifespan="off",
        access_log=False,
        timeout_graceful_shutdown=3,
        limit_concurrency=limits.max_connections,
        ssl_certfile=cert,
        ssl_keyfile=key,
        http=PeerCertH11 if client_certs is not None else "auto",
    )
    if client_certs is not None and cert is not None and key is not None:
        config.load()
        config.ssl = _client_cert_context(cert, key, client_certs)
    server = _Server(config)

    async def run() -> None:
        try:
            await server.serve(sockets=[sock])
        except SystemExit as exc:  # uvicorn exits on a startup failure
            raise OSError(f"API server on {host}:{bound} failed to start") from exc
        finally:
            sock.close()

    task = asyncio.create_task(run(), name=f"api:{host}:{bound}")
    while not server.started:
        if task.done():
            task.result()
            raise OSError(f"API server on {host}:{bound} stopped at start")
        await asyncio.sleep(0.01)
    _warn(host, bound, tls, auth)
    if not auth.insecure and auth.tokens is not None and not auth.has_tokens:
        try:
            none_yet = not await asyncio.to_thread(auth.tokens.rows, active_only=True)
        except Exception:  # the store is checked by the EMS; a token check says it again
            none_yet = False
        if none_yet:
            log.warning(
                "API on %s:%d: no API token yet, so every request but /health is refused: "
                "create one with sef api-token create --db URL --role operator NAME",
                host,
                bound,
            )
    return ApiServer(server, task, hub, host, bound, tls=tls, auth=auth)


def _warn(host: str, port: int, tls: bool, auth: ApiAuth) -> None:
    """Say loudly what is unsafe about how the API is served."""
    where = f"{host}:{port}"
    if auth.insecure:
        log.warning(
            "API on %s: AUTHENTICATION IS OFF (--insecure): whoever reaches it is an admin "
            "and may send any command",
            where,
        )
    elif auth.tokens is None and not auth.has_tokens:
        log.warning(
            "API on %s: no token store (no --db): every request but /health is refused", where
        )
    if not is_loopback(host) and not tls:
        log.warning(
            "API on %s is reachable beyond this machine WITHOUT TLS: tokens, session "
            "cookies and commands cross the network in clear; give --api-cert and --api-key",
            where,
        )

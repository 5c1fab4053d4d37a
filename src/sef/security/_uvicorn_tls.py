"""uvicorn's HTTP/1.1 protocol passing the client's TLS certificate to the app.

For the servers that authenticate clients by certificate (the EMS API, the enrollment
server). It needs uvicorn (the ``ems`` extra): import this module directly, never from
:mod:`sef.security`'s public ``__init__`` (agents install only the core).

It relies on uvicorn's ``H11Protocol`` (its ``app`` attribute and ``connection_made``); the
tests of both servers' client-certificate paths fail if a uvicorn release changes them.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["PeerCertH11", "server_url", "stop_server"]


class PeerCertH11(H11Protocol):
    """uvicorn's h11 protocol, passing the client's TLS certificate (verified against the
    CA by the TLS layer) to the app as the ASGI TLS extension
    (``scope["extensions"]["tls"]["client_cert_chain"]``, one PEM string)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            return
        pem = ssl.DER_cert_to_PEM_cert(der)
        app = self.app

        async def with_peer(scope: Any, receive: Any, send: Any) -> None:
            scope.setdefault("extensions", {})["tls"] = {"client_cert_chain": [pem]}
            await app(scope, receive, send)

        self.app = with_peer


async def stop_server(server: Any, task: asyncio.Task[None], *, within_s: float = 10.0) -> None:
    """Ask a ``uvicorn.Server`` running in ``task`` to exit; cancel it after ``within_s``
    seconds (a client that keeps a connection open must not hold up a shutdown)."""
    server.should_exit = True
    try:
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), within_s)
    except TimeoutError:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def server_url(host: str, port: int, *, tls: bool) -> str:
    """``http[s]://HOST:PORT`` of a listening server (IPv6 literals in brackets)."""
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}"

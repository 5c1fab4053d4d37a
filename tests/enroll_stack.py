"""Helpers of the enrollment tests: a real HTTPS enrollment server in a thread of its own
(its own event loop), and a raw HTTPS client that returns any status with its body."""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from sef.enrollment import EnrollLimits, EnrollmentServer, serve_enrollment
from sef.security import make_csr, new_private_key
from sef.security._enroll_client import server_tls

GENEROUS = EnrollLimits(enroll_burst=10_000, enroll_per_s=1000.0, poll_burst=10_000)
"""Limits that tests which make many requests do not hit."""


@contextmanager
def enrollment_server(pki: Path, limits: EnrollLimits | None = None) -> Iterator[EnrollmentServer]:
    """``serve_enrollment(pki)`` on a free loopback port, in a thread with its own loop."""
    loop = asyncio.new_event_loop()
    started: Future[EnrollmentServer] = Future()

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def start() -> None:
            try:
                started.set_result(await serve_enrollment(pki, "127.0.0.1", 0, limits=limits))
            except BaseException as exc:
                started.set_exception(exc)

        loop.run_until_complete(start())
        if started.exception() is None:
            loop.run_forever()

    thread = threading.Thread(target=run, name="enroll-server", daemon=True)
    thread.start()
    server = started.result(timeout=30)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def csr_for(identity: str) -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A fresh key and a PEM CSR for ``identity`` signed by it."""
    key = new_private_key()
    return key, make_csr(identity, key).decode()


def request(
    server: EnrollmentServer,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """One HTTPS request to ``server`` (trusting its CA): (status, JSON body or
    ``{"_text": ...}``, headers). ``body`` is sent as JSON, ``raw`` as is."""
    if context is None:
        context = server_tls(server.service.root / "ca.crt")
    connection = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=30)
    try:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        connection.request(
            method,
            path,
            body=data,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        answer = connection.getresponse()
        text = answer.read()
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = {"_text": text.decode(errors="replace")}
        if not isinstance(parsed, dict):
            parsed = {"_value": parsed}
        return answer.status, parsed, {k.lower(): v for k, v in answer.getheaders()}
    finally:
        connection.close()

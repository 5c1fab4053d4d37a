"""Serving enrollment over HTTPS with uvicorn, client certificates optional.

The server's TLS certificate is issued by the deployment CA (role ``broker``, which has
no rights on the bus) for the host names clients use; :func:`ensure_server_certificate`
issues one when the PKI directory has none that is usable.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from cryptography import x509

from sef.enrollment._app import create_app
from sef.enrollment._limits import EnrollLimits
from sef.enrollment._service import EnrollmentService
from sef.security import (
    CertificateAuthority,
    Role,
    Security,
    SecurityError,
    load_certificate,
)
from sef.security._uvicorn_tls import PeerCertH11, server_url, stop_server

__all__ = ["DEFAULT_SERVER_ID", "EnrollmentServer", "ensure_server_certificate", "serve_enrollment"]

log = logging.getLogger("sef.enrollment")

DEFAULT_SERVER_ID = "enroll-server"
"""Identity of the enrollment server's TLS certificate."""
RENEW_BEFORE = dt.timedelta(days=30)
"""A server certificate closer than this to its end is reissued (at start and hourly)."""
CRL_RELOAD_S = 1.0
"""How often the TLS layer looks for a newer CRL file, s (the endpoints read it anew on
every request anyway)."""
CERT_CHECK_S = 3600.0
"""How often a running server checks whether its own certificate needs reissuing, s."""


def default_hosts() -> tuple[str, ...]:
    """The names a local server is reached by: localhost, 127.0.0.1, ::1, the host name."""
    hosts = ["localhost", "127.0.0.1", "::1"]
    name = socket.gethostname()
    if name and name not in hosts:
        hosts.append(name)
    return tuple(hosts)


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host program."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _usable(ca: CertificateAuthority, server_id: str, hosts: tuple[str, ...]) -> bool:
    cert_path, key_path = ca.cert_path(server_id), ca.key_path(server_id)
    if not (cert_path.is_file() and key_path.is_file()):
        return False
    try:
        cert = load_certificate(cert_path.read_bytes())
        identity = ca.trust_store().verify(cert, role=Role.BROKER)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (SecurityError, x509.ExtensionNotFound) as exc:
        log.warning("server certificate %s not usable: %s", cert_path, exc)
        return False
    names = {str(n) for n in san.get_values_for_type(x509.DNSName)}
    names |= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    missing = [h for h in hosts if h not in names]
    if missing:
        log.warning("server certificate %s lacks host names %s", cert_path, missing)
        return False
    return identity.not_after - dt.datetime.now(dt.UTC) > RENEW_BEFORE


def ensure_server_certificate(
    root: Path, server_id: str = DEFAULT_SERVER_ID, hosts: tuple[str, ...] = ()
) -> tuple[Path, Path]:
    """Paths of the enrollment server's certificate and key in the PKI directory
    ``root`` (``issued/{server_id}.crt``, ``private/{server_id}.key``): reused when valid
    for 30 more days and naming every host in ``hosts`` (default: localhost, 127.0.0.1,
    ::1 and the host name), else issued now (role ``broker``: no rights on the bus).

    Raises:
        SecurityError: none is usable and ``root`` holds no CA key to issue one.
    """
    hosts = hosts or default_hosts()
    ca = EnrollmentService(root).ca
    if _usable(ca, server_id, hosts):
        return ca.cert_path(server_id), ca.key_path(server_id)
    if not (root / "ca.key").is_file():
        raise SecurityError(
            f"no usable server certificate {ca.cert_path(server_id)} and no CA key to issue "
            f"one: on the CA host run `sef pki issue --role broker` for {server_id!r} with "
            f"host names {', '.join(hosts)}, and copy the certificate and key here"
        )
    existing = ca.current().get(server_id)
    if existing is not None and existing.role is not Role.BROKER:
        raise SecurityError(
            f"identity {server_id!r} is already a {existing.role.value}; choose another id"
        )
    ca.issue(server_id, Role.BROKER, hosts=hosts)
    log.info("issued the enrollment server certificate %r for %s", server_id, ", ".join(hosts))
    return ca.cert_path(server_id), ca.key_path(server_id)


class EnrollmentServer:
    """A running enrollment server: :attr:`url` to reach it, :meth:`stop` to end it."""

    def __init__(
        self,
        server: uvicorn.Server,
        task: asyncio.Task[None],
        watcher: asyncio.Task[None],
        host: str,
        port: int,
        service: EnrollmentService,
    ) -> None:
        self.server = server
        self.task = task
        self.watcher = watcher
        self.host = host
        self.port = port
        self.service = service

    @property
    def url(self) -> str:
        return server_url(self.host, self.port, tls=True)

    async def stop(self) -> None:
        self.watcher.cancel()
        await stop_server(self.server, self.task)
        await asyncio.gather(self.watcher, return_exceptions=True)


async def _maintain(
    context: ssl.SSLContext, pki: Path, server_id: str, hosts: tuple[str, ...]
) -> None:
    """Keep the live TLS context current: load a changed CRL file (new handshakes use it;
    OpenSSL picks the newest CRL of the CA among those loaded), and every
    :data:`CERT_CHECK_S` reissue the server certificate when it is 30 days from its end
    (:func:`ensure_server_certificate`) and load it."""
    crl_path = pki / "crl.pem"
    cert_path = pki / "issued" / f"{server_id}.crt"
    seen = crl_path.stat().st_mtime_ns if crl_path.exists() else 0
    cert_seen = cert_path.stat().st_mtime_ns
    loop = asyncio.get_running_loop()
    next_cert_check = loop.time() + CERT_CHECK_S
    while True:
        await asyncio.sleep(CRL_RELOAD_S)
        try:
            mtime = crl_path.stat().st_mtime_ns
            if mtime != seen:
                context.load_verify_locations(cafile=str(crl_path))
                seen = mtime
                log.info("TLS layer loaded the new CRL %s", crl_path)
        except (OSError, ssl.SSLError) as exc:
            log.warning("cannot load the CRL %s into TLS: %s", crl_path, exc)
        if loop.time() < next_cert_check:
            continue
        next_cert_check = loop.time() + CERT_CHECK_S
        try:
            cert, key = ensure_server_certificate(pki, server_id, hosts)
            if cert.stat().st_mtime_ns != cert_seen:
                context.load_cert_chain(cert, key)
                cert_seen = cert.stat().st_mtime_ns
                log.info("TLS layer uses the new server certificate %s", cert)
        except (OSError, ssl.SSLError, SecurityError) as exc:
            log.warning("cannot renew the server certificate: %s", exc)


async def serve_enrollment(
    pki: Path,
    host: str = "127.0.0.1",
    port: int = 8443,
    *,
    server_id: str = DEFAULT_SERVER_ID,
    hosts: tuple[str, ...] = (),
    limits: EnrollLimits | None = None,
    log_level: str = "warning",
) -> EnrollmentServer:
    """Start an HTTPS enrollment server over the PKI directory ``pki`` in the running
    event loop, on ``host:port`` (0 = a free port; see :attr:`EnrollmentServer.port`).

    TLS: the server certificate from :func:`ensure_server_certificate`; a client
    certificate is optional (needed for ``/renew`` only) and, when presented, must be from
    the CA and not revoked."""
    service = EnrollmentService(pki)
    cert_path, key_path = ensure_server_certificate(pki, server_id, hosts)
    credentials = Security.load(cert_path, key_path, pki / "ca.crt", pki / "crl.pem")
    context = credentials.server_tls(require_client_cert=False)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
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
    config = uvicorn.Config(
        create_app(service, limits),
        log_level=log_level,
        lifespan="off",
        access_log=False,
        http=PeerCertH11,
        timeout_graceful_shutdown=3,
        limit_concurrency=1000,
    )
    config.load()
    config.ssl = context  # our context (CA + CRL, client certificates optional)
    server = _Server(config)

    async def run() -> None:
        try:
            await server.serve(sockets=[sock])
        except SystemExit as exc:  # uvicorn exits on a startup failure
            raise OSError(f"enrollment server on {host}:{bound} failed to start") from exc
        finally:
            sock.close()

    task = asyncio.create_task(run(), name=f"enroll:{host}:{bound}")
    watcher = asyncio.create_task(_maintain(context, pki, server_id, hosts), name="enroll-maintain")
    while not server.started:
        if task.done():
            watcher.cancel()
            task.result()
            raise OSError(f"enrollment server on {host}:{bound} stopped at start")
        await asyncio.sleep(0.01)
    log.info(
        "enrollment server on https://%s:%d (%s CA)",
        host,
        bound,
        "online" if service.online else "offline, queue-only",
    )
    return EnrollmentServer(server, task, watcher, host, bound, service)

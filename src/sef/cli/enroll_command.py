"""``sef enroll`` (an agent gets its certificate) and ``sef enroll-server`` (the operator's
HTTPS enrollment endpoint over the PKI directory). See docs/enrollment.md."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from sef.cli._signals import run_service, until_stopped
from sef.security import SecurityError
from sef.security._enroll_client import EnrollmentPending, enroll

__all__ = ["enroll_command", "enroll_server", "register"]

_out = Console()
_err = Console(stderr=True)


def enroll_command(
    url: str = typer.Option(
        ..., "--url", help="The enrollment server: https://HOST:PORT (sef enroll-server)."
    ),
    ca: Path = typer.Option(
        ...,
        "--ca",
        exists=True,
        dir_okay=False,
        help="The deployment CA certificate: the server must prove it is from this CA.",
    ),
    identity: str = typer.Option(..., "--id", help="This agent's identity (its bus id)."),
    out: Path = typer.Option(
        ..., "--out", file_okay=False, help="Directory for key.pem (made here), cert.pem, ca.crt."
    ),
    token: str | None = typer.Option(
        None, "--token", help="One-time claim token from `sef pki token` (approved at once)."
    ),
    groups: list[str] = typer.Option([], "--group", help="Group to ask for (repeatable)."),
    home: str | None = typer.Option(None, "--home", help="Home to ask for."),
    wait_s: float = typer.Option(
        3600.0, "--wait-s", min=0.0, help="How long to wait for the operator's approval, s."
    ),
    poll_s: float = typer.Option(5.0, "--poll-s", min=0.1, help="Polling interval, s."),
) -> None:
    """Enroll this agent: make its key (never sent), send a CSR, wait for approval and
    write its certificate. Prints the options to start the agent with."""
    status = _err.status(f"enrolling {escape(identity)} at {escape(url)}", spinner="dots")

    def pending(fingerprint: str) -> None:
        _err.print(
            f"request queued: key fingerprint [bold]{fingerprint}[/]\n"
            "the operator approves it with `sef pki approve "
            f"{escape(identity)}` (compare the fingerprint in `sef pki pending`)",
            highlight=False,
        )
        status.update(f"waiting for approval of {escape(identity)} (up to {wait_s:.0f} s)")

    try:
        with status:
            files = enroll(
                url,
                ca,
                identity,
                out,
                token=token,
                groups=tuple(groups),
                home=home,
                wait_s=wait_s,
                poll_s=poll_s,
                on_pending=pending,
            )
    except EnrollmentPending as exc:
        _err.print(f"[yellow]pending:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    except (SecurityError, OSError) as exc:
        _err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    _err.print(f"[green]enrolled[/] {escape(identity)}: certificate in {files.cert}")
    _out.print(files.options(), highlight=False, soft_wrap=True)


def enroll_server(
    pki: Path = typer.Option(
        ..., "--pki", file_okay=False, exists=True, help="The PKI directory (sef pki init)."
    ),
    port: int = typer.Option(8443, "--port", min=0, max=65535, help="TCP port (0 = free)."),
    bind: str = typer.Option("127.0.0.1", "--bind", help="Address to listen on."),
    hosts: list[str] = typer.Option(
        [],
        "--host",
        help="Host name or address clients use (repeatable; for the server certificate; "
        "default: localhost, 127.0.0.1, ::1 and this host's name).",
    ),
    server_id: str = typer.Option(
        "enroll-server", "--server-id", help="Identity of the server's TLS certificate."
    ),
) -> None:
    """Serve enrollment over HTTPS: agents' CSRs (queued for `sef pki approve`, or
    approved with a claim token), certificate renewal over mutual TLS, and the CRL.

    With the CA key in --pki this host is an online CA (it signs); without it the server
    only queues. SIGINT and SIGTERM stop it.
    """
    from sef.enrollment import serve_enrollment

    async def main() -> None:
        server = await serve_enrollment(pki, bind, port, server_id=server_id, hosts=tuple(hosts))
        mode = "online CA" if server.service.online else "offline CA: queue only"
        _err.print(f"enrollment server on {server.url} ({mode})", highlight=False)
        try:
            await until_stopped()
        finally:
            await server.stop()

    try:
        run_service(main(), name="enroll-server")
    except (SecurityError, OSError) as exc:
        _err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None


def register(app: typer.Typer) -> None:
    """Add ``sef enroll`` and ``sef enroll-server`` to ``app``."""
    app.command("enroll")(enroll_command)
    app.command("enroll-server")(enroll_server)

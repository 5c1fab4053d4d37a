"""``sef api-token create|list|revoke``: bearer tokens of the EMS API, kept in its store.

A token is printed once, when it is created; the store keeps only its SHA-256 hash. Give
it to its holder, who sends it as ``Authorization: Bearer TOKEN`` (``$SEF_API_TOKEN`` for
the ``sef`` commands that use the API) or pastes it into the dashboard's login page.
A running EMS sees a new or revoked token within a second.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from sef.ems.store import TokenStore

__all__ = ["app", "register"]

app = typer.Typer(no_args_is_help=True)
console = Console()
err = Console(stderr=True)

DB_HELP = "The EMS store: sqlite:///PATH or postgresql://USER@HOST:PORT/DB (as sef ems --db)."
DB_OPTION = typer.Option(..., "--db", envvar="SEF_DB", help=DB_HELP)


def register(root: typer.Typer) -> None:
    """Add ``api-token`` to the ``sef`` app."""
    root.add_typer(
        app,
        name="api-token",
        help="Bearer tokens of the EMS API (roles viewer, operator, admin).",
    )


def _store(db: str) -> TokenStore:
    """The tokens of the store at ``db`` (the ems extra is imported here, not at start)."""
    from sef.ems.store import Store, StoreError, TokenStore

    try:
        return TokenStore(Store.open(db))
    except StoreError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None


@app.command("create")
def create(
    name: str = typer.Argument(..., help="Who holds it (logged as sent_by of its commands)."),
    role: str = typer.Option(
        "viewer",
        "--role",
        help="viewer (read), operator (also send commands) or admin (also registry actions).",
    ),
    db: str = DB_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Create a token and print it (once: only its hash is stored)."""
    from sef.ems.store import TokenError

    tokens = _store(db)
    try:
        token = tokens.create(name, role)
    except TokenError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    finally:
        tokens.store.close()
    if as_json:
        print(json.dumps({"name": name, "role": role, "token": token}))
    else:
        err.print(f"token {name!r} ({role}); shown once, keep it secret:", highlight=False)
        print(token)


@app.command("list")
def list_tokens(
    db: str = DB_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """List the tokens: name, role, created, revoked (never the tokens)."""
    tokens = _store(db)
    try:
        rows = tokens.rows()
    finally:
        tokens.store.close()
    if as_json:
        print(
            json.dumps(
                [
                    {"name": r.name, "role": r.role, "created": r.created, "revoked": r.revoked}
                    for r in rows
                ]
            )
        )
        return
    table = Table(title="EMS API tokens")
    for column in ("name", "role", "created", "revoked"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.name, row.role, _when(row.created), _when(row.revoked) or "–")
    console.print(table)


@app.command("revoke")
def revoke(
    name: str = typer.Argument(..., help="The token's name."),
    db: str = DB_OPTION,
) -> None:
    """Revoke a token: a running EMS refuses it within a second."""
    from sef.ems.store import TokenError

    tokens = _store(db)
    try:
        tokens.revoke(name)
    except TokenError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    finally:
        tokens.store.close()
    print(f"revoked {name}")


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

"""``sef openadr status|events|opt|policy``: the EMS's demand-response bridge (the EMS as a
VEN of utility programs, ``docs/openadr.md``) through the EMS API (``/openadr/...``).

The API is reached at ``--api URL``, else ``$SEF_API``, else http://127.0.0.1:8080, with the
bearer token in ``$SEF_API_TOKEN``: a viewer's for ``status`` and ``events``, an operator's
for ``opt`` and ``policy --set``. Exit 2 with ``error: <status> <message>`` when the API
refuses (404 ``OpenADR is not configured`` when no bridge runs).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sef.cli.operator import API_HELP, DEFAULT_API, _fail, _iso, _request

__all__ = ["app", "events", "opt", "policy", "status"]

app = typer.Typer(no_args_is_help=True)
console = Console()

OPT_WORDS = {"out": "optOut", "optout": "optOut", "in": "optIn", "optin": "optIn"}
"""What ``sef openadr opt`` takes: out / in (or optOut / optIn, any case)."""
_STATUS_COLORS = {
    "active": "green",
    "scheduled": "cyan",
    "opted_out": "yellow",
    "failed": "red",
    "cancelled": "magenta",
}


def _kw(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, int | float) and math.isfinite(value) else "–"


def _text(value: Any) -> str:
    """A value shown in a table: ``–`` for none, markup escaped (ids come from the VTN)."""
    return "–" if value is None or value == "" else escape(str(value))


@app.command("status")
def status(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    api: str = typer.Option(DEFAULT_API, "--api", envvar="SEF_API", help=API_HELP),
) -> None:
    """The bridge's adapters (VTN, registration, errors, programs) and its opt-out policy."""
    data: dict[str, Any] = _request("GET", api, "/openadr/status")
    if as_json:
        print(json.dumps(data, indent=2))
        return
    if not data.get("configured"):
        console.print("OpenADR is not configured on this EMS (no demand-response bridge runs).")
        return
    table = Table(title="OpenADR adapters", expand=True)
    for column in ("source", "VTN", "registered", "VEN id", "last ok", "errors", "programs"):
        table.add_column(column, overflow="fold")
    for a in data.get("adapters") or []:
        errors = str(a.get("errors", 0))
        if a.get("last_error"):
            errors += f" ({escape(str(a['last_error']))})"
        table.add_row(
            _text(a.get("source")),
            _text(a.get("vtn")),
            "[green]yes[/]" if a.get("registered") else "[red]no[/]",
            _text(a.get("ven_id")),
            _iso(a.get("last_ok_s")) or "–",
            errors,
            escape(", ".join(a.get("programs") or [])) or "–",
        )
    console.print(table)
    console.print("opt-out policy:", escape(json.dumps(data.get("policy"), sort_keys=True)))


@app.command("events")
def events(
    status_filter: str | None = typer.Option(
        None, "--status", help="Only these statuses, comma separated (active,scheduled...)."
    ),
    program: str | None = typer.Option(None, "--program", help="Only this program."),
    source: str | None = typer.Option(None, "--source", help="Only this adapter (oadr2b...)."),
    event_id: str | None = typer.Option(
        None, "--id", help="One event: every version of it (needs --source, default oadr2b)."
    ),
    limit: int = typer.Option(20, "--limit", min=1, max=1000, help="Most event versions."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    api: str = typer.Option(DEFAULT_API, "--api", envvar="SEF_API", help=API_HELP),
) -> None:
    """The event history, newest first: opt, status, requested and delivered kW."""
    rows: list[dict[str, Any]]
    if event_id is not None:
        found = _request("GET", api, _event_path(source or "oadr2b", event_id))
        rows = list(found.get("versions") or [])[:limit]
    else:
        params: dict[str, Any] = {"limit": limit}
        for name, value in (("status", status_filter), ("program", program), ("source", source)):
            if value is not None:
                params[name] = value
        rows = _request("GET", api, "/openadr/events", params=params)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="OpenADR events", expand=True)
    for column in ("received", "source", "event", "mod", "program", "signal", "status",
                   "opt", "start", "end", "req kW", "del kW", "reason"):  # fmt: skip
        table.add_column(column, overflow="fold")
    for r in rows:
        state = str(r.get("status"))
        color = _STATUS_COLORS.get(state)
        table.add_row(
            _iso(r.get("received_s")),
            _text(r.get("source")),
            _text(r.get("event_id")),
            str(r.get("modification")),
            _text(r.get("program")),
            _text(r.get("signal")),
            f"[{color}]{escape(state)}[/]" if color else escape(state),
            _text(r.get("opt")),
            _iso(r.get("start_s")) or "–",
            _iso(r.get("end_s")) or "–",
            _kw(r.get("requested_kw")),
            _kw(r.get("delivered_kw")),
            _text(r.get("reason")),
        )
    console.print(table)
    if not rows:
        console.print("No event received yet.")


def _event_path(source: str, event_id: str) -> str:
    return f"/openadr/events/{quote(source, safe='')}/{quote(event_id, safe='')}"


@app.command("opt")
def opt(
    source: str = typer.Argument(..., help="The adapter that delivered the event (oadr2b...)."),
    event_id: str = typer.Argument(..., help="The VTN's event id."),
    answer: str = typer.Argument(..., help="out (opt out) or in (opt in)."),
    reason: str = typer.Option("", "--reason", "-r", help="Why (kept in the history)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    api: str = typer.Option(DEFAULT_API, "--api", envvar="SEF_API", help=API_HELP),
) -> None:
    """Override the answer to an event (operator role): opt out stops what was sent for it."""
    wanted = OPT_WORDS.get(answer.strip().lower())
    if wanted is None:
        _fail(f"answer must be out or in (optOut / optIn), got {answer[:40]!r}")
    record: dict[str, Any] = _request(
        "POST", api, _event_path(source, event_id) + "/opt", json={"opt": wanted, "reason": reason}
    )
    if as_json:
        print(json.dumps(record, indent=2))
        return
    console.print(
        f"{escape(record['event_id'])} (modification {record['modification']}): "
        f"{record['opt']}, {escape(record['status'])} — {escape(record['reason'])}",
        highlight=False,
    )


@app.command("policy")
def policy(
    set_from: str | None = typer.Option(
        None, "--set", help="Replace the policy with this JSON file ('-': standard input)."
    ),
    api: str = typer.Option(DEFAULT_API, "--api", envvar="SEF_API", help=API_HELP),
) -> None:
    """Show the automatic opt-out policy (JSON), or replace it (operator role)."""
    if set_from is None:
        data: dict[str, Any] = _request("GET", api, "/openadr/status")
        if not data.get("configured"):
            _fail("404 OpenADR is not configured on this EMS")
        print(json.dumps(data.get("policy"), indent=2))
        return
    try:
        text = sys.stdin.read() if set_from == "-" else Path(set_from).read_text()
    except OSError as exc:
        _fail(f"cannot read {set_from}: {exc.strerror or exc}")
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(f"{set_from} is not JSON: {exc}")
    print(json.dumps(_request("PUT", api, "/openadr/policy", json=body), indent=2))

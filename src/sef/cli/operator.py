"""Operator commands on the EMS API: ``sef telemetry``, ``sef send``, ``sef history``,
``sef homes``, ``sef registry reset|approve|admission``, and ``sef agents --api``. Rich
tables for people, ``--json`` (and ``--csv``) for scripts.

The API is reached at ``--api URL``, else ``$SEF_API``, else http://127.0.0.1:8080, with
the bearer token in ``$SEF_API_TOKEN`` (``sef api-token create``), if set.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from sef.ems import AgentRecord, CallRefused, CallTarget, PropertyValue

__all__ = [
    "DEFAULT_API",
    "api_agents",
    "history",
    "homes",
    "homes_of",
    "parse_event",
    "register",
    "registry_app",
    "send",
    "telemetry",
]

DEFAULT_API = "http://127.0.0.1:8080"
API_HELP = "EMS API URL (default: $SEF_API, else http://127.0.0.1:8080)."

console = Console()
err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add ``telemetry``, ``send``, ``history``, ``homes`` and ``registry`` to the ``sef``
    app."""
    app.command("telemetry")(telemetry)
    app.command("send")(send)
    app.command("history")(history)
    app.command("homes")(homes)
    app.add_typer(
        registry_app,
        name="registry",
        help="Operator actions on the EMS registry: reset an agent's session, approve new "
        "agents, show the admission state.",
    )


# -- HTTP ------------------------------------------------------------------------------
def _fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _request(
    method: str,
    api: str,
    path: str,
    *,
    timeout_s: float = 30.0,
    headers_out: dict[str, str] | None = None,
    **kwargs: Any,
) -> Any:
    """One API request; the decoded JSON answer (its headers, lower-case, into
    ``headers_out``). Exits 2 on an error answer or no API."""
    import httpx  # the ems extra: imported here so that agents' commands need no httpx

    url = api.rstrip("/") + path
    token = os.environ.get("SEF_API_TOKEN", "").strip()
    if token:
        kwargs["headers"] = {**kwargs.get("headers", {}), "Authorization": f"Bearer {token}"}
    try:
        response = httpx.request(method, url, timeout=timeout_s, **kwargs)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the EMS API at {api}: {exc or type(exc).__name__}")
    if headers_out is not None:
        headers_out.update((k.lower(), v) for k, v in response.headers.items())
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_error:
        message = body.get("error") if isinstance(body, dict) else None
        _fail(f"{response.status_code} {message or response.reason_phrase}")
    return body


AGENTS_PAGE = 1000
"""Agents asked for per page of ``GET /agents``."""


def api_agents(
    api: str, *, home: str | None = None
) -> tuple[list[dict[str, Any]], list[AgentRecord]]:
    """The agents known to the EMS API (every page; with ``home``, only those behind that
    home): their JSON summaries and records."""
    summaries: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": AGENTS_PAGE}
        if home is not None:
            params["home"] = home
        if cursor is not None:
            params["cursor"] = cursor
        page, headers = _request_with_headers("GET", api, "/agents", params=params)
        summaries += page
        following = headers.get("x-next-cursor")
        if not following or not page or following == cursor:
            break
        cursor = following
    return summaries, [_record(s) for s in summaries]


def homes_of(summaries: list[dict[str, Any]]) -> dict[str, str]:
    """Agent id -> home id, from the agents' JSON summaries (those behind a home)."""
    return {s["id"]: s["home"] for s in summaries if isinstance(s.get("home"), str)}


def _request_with_headers(
    method: str, api: str, path: str, **kwargs: Any
) -> tuple[Any, dict[str, str]]:
    """:func:`_request`, also returning the answer's headers (lower-case names)."""
    seen: dict[str, str] = {}
    body = _request(method, api, path, headers_out=seen, **kwargs)
    return body, seen


def _record(summary: dict[str, Any]) -> AgentRecord:
    about = {
        k: v
        for k, v in (
            ("DeviceName", summary.get("device_name")),
            ("Manufacturer", summary.get("manufacturer")),
            ("ModelNumber", summary.get("model")),
            ("SoftwareVersion", summary.get("software_version")),
        )
        if v is not None
    }
    return AgentRecord(
        summary["id"],
        online={"online": True, "offline": False}.get(summary["status"]),
        bdseq=summary.get("bdseq"),
        about=about,
        interfaces={name: "" for name in summary.get("interfaces", [])},
        groups=list(summary.get("groups", [])),
        properties={
            k: PropertyValue(p.get("value"), p.get("ts"), 0.0)
            for k, p in summary.get("properties", {}).items()
        },
        last_seen=summary.get("last_seen") or 0.0,
        online_since=summary.get("online_since"),
        offline_since=summary.get("offline_since"),
        offline_reason=summary.get("offline_reason"),
        gaps=summary.get("gaps", 0),
    )


# -- formatting ----------------------------------------------------------------------
def _iso(ts: float | None) -> str:
    if ts is None:
        return ""
    return (
        datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def flatten(value: Any) -> dict[str, Any]:
    """Columns of a telemetry value: an ``a{sv}`` dict gives one column per key (variant
    values unwrapped), anything else a single ``value`` column."""
    if isinstance(value, dict):
        out = {}
        for name, item in value.items():
            shown = (
                item[1]
                if (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str))
                else item
            )
            out[str(name)] = json.dumps(shown) if isinstance(shown, (list, dict)) else shown
        return out
    return {"value": json.dumps(value) if isinstance(value, (list, dict)) else value}


def _events_text(args: Any) -> str:
    """``charge:4:1800 discharge:8:1800`` for EnergyMethod args, else compact JSON."""
    try:
        (cmds,) = args
        return " ".join(f"{c}:{r}:{d}" for c, r, d in cmds)
    except (TypeError, ValueError):
        return json.dumps(args, separators=(",", ":"))


def _replies_text(replies: list[dict[str, Any]]) -> str:
    parts = []
    for r in replies:
        if r.get("ok"):
            parts.append(f"[green]{r.get('agent')} ok[/]")
        else:
            parts.append(f"[red]{r.get('agent')} {r.get('error')}: {r.get('message')}[/]")
    return ", ".join(parts) or "-"


# -- sef send --------------------------------------------------------------------------
def parse_event(token: str) -> list[Any]:
    """``charge:4:1800`` → ``["charge", 4, 1800]``; a missing duration is 0 (until the
    next command). Raises :class:`ValueError` with a clear message."""
    parts = token.split(":")
    if len(parts) not in (2, 3) or not parts[0]:
        raise ValueError(f"{token!r}: expected CMD:RATE_KW[:DURATION_S], e.g. charge:4:1800")
    names = ("rate (kW)", "duration (s)")
    numbers = []
    for name, text in zip(names, parts[1:], strict=False):
        try:
            numbers.append(int(text))
        except ValueError:
            raise ValueError(f"{token!r}: {name} must be an integer, got {text!r}") from None
    return [parts[0], numbers[0], numbers[1] if len(numbers) > 1 else 0]


def send(
    target: str = typer.Argument(..., help="Agent id, or group:NAME."),
    events: list[str] = typer.Argument(
        ...,
        help="Events CMD:RATE_KW[:DURATION_S], e.g. "
        "charge:4:1800 discharge:8:1800; a missing "
        "duration means until the next command.",
    ),
    api: str = typer.Option(DEFAULT_API, "--api", envvar="SEF_API", help=API_HELP),
    timeout: float = typer.Option(
        5.0, "--timeout", min=0.1, max=120.0, help="How long to wait for replies, s."
    ),
    no_reply: bool = typer.Option(False, "--no-reply", help="Send without asking for replies."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Send an event sequence to an agent or a group through the EMS API.

    Exit codes: 0 every reply ok (or sent with --no-reply); 1 an agent refused; 2 bad
    input or not reachable (nothing sent); 3 no reply (or not from every member) in time.
    """
    try:
        cmds = [parse_event(token) for token in events]
    except ValueError as exc:
        _fail(str(exc))
    try:
        dest = CallTarget.parse(target)
    except CallRefused as exc:
        _fail(f"bad target {target!r}: {exc}; expected an agent id or group:NAME")
    path = f"/{'groups' if dest.group else 'agents'}/{dest.name}/commands"
    result: dict[str, Any] = _request(
        "POST",
        api,
        path,
        timeout_s=timeout + 10.0,
        json={"cmds": cmds, "timeout_s": timeout, "reply": not no_reply},
    )
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        table = Table(title=f"{target}: {_events_text([cmds])}  (call {result['call_id']})")
        for column in ("agent", "result", "message"):
            table.add_column(column, overflow="fold")
        for r in result["replies"]:
            table.add_row(
                r["agent"],
                "[green]ok[/]" if r["ok"] else f"[red]{r['error']}[/]",
                r.get("message") or "",
            )
        for agent in result["missing"]:
            table.add_row(agent, "[yellow]no reply[/]", f"within {timeout} s")
        console.print(table)
    status = result["status"]
    if status == "error":
        raise typer.Exit(1)
    if status in ("timeout", "partial"):
        err.print(
            f"[yellow]no reply from {', '.join(result['missing']) or target} within {timeout} s[/]"
        )
        raise typer.Exit(3)


# -- sef telemetry ---------------------------------------------------------------------
def telemetry(
    agent: str = typer.Argument(..., help="Agent id."),
    since: str = typer.Option(
        "1h", "--since", help="From: a duration ago (90s, 15m, 1h, 2d), ISO 8601 or Unix s."
    ),
    until: str | None = typer.Option(None, "--until", help="To (same forms); default now."),
    key: str | None = typer.Option(
        None, "--key", "-k", help="Property, e.g. Telemetry or edu.pdx.powerlab.demo.Telemetry."
    ),
    every: float | None = typer.Option(
        None, "--every", min=0.001, help="Downsample: last value per this many s."
    ),
    limit: int = typer.Option(10_000, "--limit", min=1, max=100_000, help="Most rows."),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV (one column per field)."),
    as_json: bool = typer.Option(False, "--json", help="Print the API's JSON."),
    api: str = typer.Option(DEFAULT_API, "--api", envvar="SEF_API", help=API_HELP),
) -> None:
    """Telemetry history of an agent from the EMS store."""
    params: dict[str, Any] = {"since": since, "limit": limit}
    for name, value in (("until", until), ("key", key), ("every", every)):
        if value is not None:
            params[name] = value
    result: dict[str, Any] = _request("GET", api, f"/agents/{agent}/telemetry", params=params)
    points: list[dict[str, Any]] = result["points"]
    if as_json:
        print(json.dumps(result, indent=2))
        return
    rows = [
        {"time": _iso(p["ts"]), "ts": p["ts"], "key": p["key"], **flatten(p["value"])}
        for p in points
    ]
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    if as_csv:
        writer = csv.DictWriter(
            sys.stdout, fieldnames=columns or ["time", "ts", "key"], lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(rows)
        return
    table = Table(title=f"{agent}: {len(points)} points" + (f", every {every} s" if every else ""))
    shown = [c for c in columns if c != "ts"]
    for column in shown:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in shown))
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# -- sef history -----------------------------------------------------------------------
def history(
    target: str | None = typer.Option(None, "--target", "-t", help="Agent id or group:NAME."),
    since: str | None = typer.Option(
        None, "--since", help="From: a duration ago (1h), ISO 8601 or Unix s."
    ),
    limit: int = typer.Option(20, "--limit", min=1, max=10_000, help="Most entries."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    api: str = typer.Option(DEFAULT_API, "--api", envvar="SEF_API", help=API_HELP),
) -> None:
    """The command log: what was sent to whom, newest first, with the replies."""
    params: dict[str, Any] = {"limit": limit}
    if target is not None:
        params["target"] = target
    if since is not None:
        params["since"] = since
    entries: list[dict[str, Any]] = _request("GET", api, "/commands", params=params)
    if as_json:
        print(json.dumps(entries, indent=2))
        return
    table = Table(title="SEF command log", expand=True)
    for column in ("time", "sent by", "target", "method", "events", "status", "replies"):
        table.add_column(column, overflow="fold")
    colors = {"ok": "green", "error": "red", "refused": "red", "timeout": "yellow"}
    for e in entries:
        status = e["status"]
        shown = f"[{colors[status]}]{status}[/]" if status in colors else status
        if e.get("error"):
            shown += f" ({e['error']})"
        table.add_row(
            _iso(e["ts"]),
            e.get("sent_by") or "–",
            e["target"],
            e["method"],
            _events_text(e["args"]),
            shown,
            _replies_text(e.get("replies") or []),
        )
    console.print(table)


# -- sef registry ----------------------------------------------------------------------
registry_app = typer.Typer(no_args_is_help=True)


@registry_app.command("reset")
def registry_reset(
    agent: str = typer.Argument(..., help="Agent id."),
    api: str = typer.Option(DEFAULT_API, "--api", envvar="SEF_API", help=API_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the agent's JSON."),
) -> None:
    """Reset an agent's session state (after a forged or broken status locked it out).

    The EMS forgets the agent's session number and presence and asks it to re-announce.
    Exit codes: 0 done; 2 unknown agent or API not reachable.
    """
    result: dict[str, Any] = _request("POST", api, f"/agents/{agent}/reset")
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        console.print(
            f"{result['id']}: session state reset; asked to re-announce "
            f"(status now {result['status']})",
            highlight=False,
        )


@registry_app.command("approve")
def registry_approve(
    agents: list[str] = typer.Argument(..., help="Agent ids."),
    api: str = typer.Option(DEFAULT_API, "--api", envvar="SEF_API", help=API_HELP),
) -> None:
    """Admit agents that wait for approval (or ids not seen yet) into the EMS registry.

    Exit codes: 0 done; 2 bad id or API not reachable.
    """
    for agent in agents:
        result: dict[str, Any] = _request("POST", api, f"/agents/{agent}/approve")
        note = "was pending" if result["was_pending"] else "approved in advance"
        console.print(f"{result['agent']}: approved ({note})", highlight=False)


@registry_app.command("admission")
def registry_admission(
    api: str = typer.Option(DEFAULT_API, "--api", envvar="SEF_API", help=API_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the API's JSON."),
) -> None:
    """How the EMS admits new agents, the agents waiting for approval, and refusals."""
    result: dict[str, Any] = _request("GET", api, "/admission")
    if as_json:
        print(json.dumps(result, indent=2))
        return
    cap = result["max_agents"]
    rate = result["new_per_s"]
    console.print(
        f"agents {result['agents']}"
        + (f" of at most {cap}" if cap is not None else "")
        + f"; new agents: {'approval' if result['approval'] else 'admitted'}"
        + (f", allow-list {' '.join(result['allow'])}" if result["allow"] else "")
        + (f", at most {rate:g}/s (burst {result['burst']})" if rate is not None else ""),
        highlight=False,
    )
    refused = ", ".join(f"{k} {v}" for k, v in sorted(result["refused"].items())) or "none"
    console.print(f"refused: {result['refused_ids']} ids; messages: {refused}", highlight=False)
    table = Table(title=f"{len(result['pending'])} agents waiting for approval")
    for column in ("agent", "first seen", "last seen", "messages"):
        table.add_column(column)
    for p in result["pending"]:
        table.add_row(p["id"], _iso(p["first_seen"]), _iso(p["last_seen"]), str(p["messages"]))
    console.print(table)


# -- sef homes -------------------------------------------------------------------------
def _ago(seconds: float) -> str:
    """``42 s``, ``5 min``, ``3 h``, ``2 d``: a duration, s, roughly."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def homes(
    api: str = typer.Option(DEFAULT_API, "--api", envvar="SEF_API", help=API_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the API's JSON."),
) -> None:
    """Homes (gateways) known to the EMS: uplink up or down and since when, agents behind
    each (online of all), and the relay's queued and dropped messages."""
    result: list[dict[str, Any]] = _request("GET", api, "/homes")
    if as_json:
        print(json.dumps(result, indent=2))
        return
    now = datetime.now(tz=UTC).timestamp()
    table = Table(title=f"SEF homes of {api}: {len(result)}")
    for column in ("home", "uplink", "since (UTC)", "agents online", "queued", "dropped"):
        table.add_column(column, no_wrap=True)
    colors = {"up": "green", "down": "red"}
    for h in result:
        uplink = h["uplink"]
        stats = h.get("stats") or {}
        queued = stats.get("queued")
        limit = stats.get("queue_limit")
        table.add_row(
            h["home"],
            f"[{colors[uplink]}]{uplink}[/]" if uplink in colors else uplink,
            f"{_iso(h['since'])[:19].replace('T', ' ')} ({_ago(now - h['since'])} ago)",
            f"{h['online_agents']}/{h['agents']}",
            "-" if queued is None else f"{queued}" + (f"/{limit}" if limit is not None else ""),
            "-" if stats.get("dropped") is None else str(stats["dropped"]),
        )
    console.print(table)

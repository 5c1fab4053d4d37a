"""``sef ems``: run the EMS service (registry, store, REST API) until Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import sys

import typer
from rich.live import Live

from sef.cli.bus_commands import BROKER_HELP, agents_table, clock_option, console, err, run_async
from sef.ems import EMS, Event
from sef.ems.store import Store, StoreError


def ems(
    broker: str = typer.Option("mqtt://127.0.0.1:1883", "--broker", "-b", help=BROKER_HELP),
    host_id: str = typer.Option("ems", "--id", help="Id of this EMS (primary host)."),
    db: str | None = typer.Option(None, "--db", help="Store: sqlite:///PATH or "
                                  "postgresql://USER@HOST:PORT/DB. Without it nothing is kept "
                                  "across restarts."),
    clock: str | None = typer.Option(None, "--clock", help="real or scaled:SPEED[:START]."),
    keepalive: int = typer.Option(10, "--keepalive", help="MQTT keepalive, s."),
    json_events: bool = typer.Option(False, "--json", help="Print events as JSON lines."),
    api: str | None = typer.Option(None, "--api", help="Serve the REST API (docs at /docs, "
                                   "metrics at /metrics) on HOST:PORT, e.g. 127.0.0.1:8080."),
) -> None:
    """Run the EMS: discover agents, track presence, keep their last known state."""

    def print_event(event: Event) -> None:
        if json_events:
            detail = event.detail if isinstance(event.detail, (str, int, float, list, tuple,
                                                                type(None))) else str(event.detail)
            print(json.dumps({"event": event.kind, "agent": event.agent_id, "detail": detail}),
                  flush=True)

    listen: tuple[str, int] | None = None
    if api is not None:
        from sef.ems.api import parse_listen

        try:
            listen = parse_listen(api)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--api") from None
    store: Store | None = None
    if db is not None:
        try:
            store = Store.open(db)
        except StoreError as exc:
            err.print(f"[red]error:[/] {exc}")
            raise typer.Exit(2) from None

    async def main() -> None:
        service = EMS(broker, host_id, clock=clock_option(clock), keepalive_s=keepalive,
                      on_event=print_event, store=store)
        await service.start(timeout_s=None)
        server = None
        try:
            if listen is not None:
                from sef.ems.api import serve_api

                try:
                    server = await serve_api(service, *listen)
                except OSError as exc:
                    err.print(f"[red]error:[/] cannot serve the API on {api}: {exc}")
                    raise typer.Exit(2) from None
                print(f"API on {server.url}", flush=True)
            if json_events or not sys.stdout.isatty():
                if not json_events:
                    print(f"EMS {host_id} running on {service.bus.url}"
                          + (f", store {db}" if db else ""), flush=True)
                await asyncio.Event().wait()
            with Live(agents_table(service.agents()), console=console,
                      refresh_per_second=2) as live:
                while True:
                    await asyncio.sleep(0.5)
                    live.update(agents_table(service.agents(), f"SEF agents on {broker}"))
        finally:
            if server is not None:
                await server.stop()
            await service.stop()
            if store is not None:
                store.close()

    run_async(main())

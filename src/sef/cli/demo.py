"""``sef demo``: the whole system on this machine, a simulated day in about two minutes."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from sef.cli._signals import EXIT_ERROR, run_service

console = Console()


def demo(
    hours: float = typer.Option(
        24.0, "--hours", min=0.25, max=24.0, help="Simulated hours to run (from midnight)."
    ),
    speed: float = typer.Option(
        720.0, "--speed", min=1.0, help="Simulated seconds per real second (720: a day in 2 min)."
    ),
    batteries: int = typer.Option(3, "--batteries", min=1, max=50),
    waterheaters: int = typer.Option(3, "--waterheaters", min=1, max=50),
    out: Path = typer.Option(
        Path("sef-demo-report"),
        "--out",
        "-o",
        help="Report folder: PNG plots, CSV, summary.json, logs, ems.db.",
    ),
    api: str = typer.Option(
        "127.0.0.1:8080", "--api", help="Dashboard and REST API address (a free port if taken)."
    ),
    broker: str | None = typer.Option(
        None,
        "--broker",
        "-b",
        help="Use this broker (default: Mosquitto if installed, else the embedded broker).",
    ),
    no_browser: bool = typer.Option(False, "--no-browser", help="Do not open the dashboard."),
    headless: bool = typer.Option(False, "--headless", help="Plain log lines, no live table."),
    controller: str = typer.Option("mpc", "--controller", help="mpc or baseline."),
) -> None:
    """Run the SEF demo: EMS, battery and water-heater emulators with their agents (one
    process each), and the load-following control app; ends with a report.

    Ctrl-C (SIGINT) or SIGTERM stops every process cleanly; the exit code is then 0.
    """
    from sef.demo._processes import ProcessFailed
    from sef.demo._run import DemoOptions, run_demo
    from sef.ems.api import parse_listen

    try:
        listen = parse_listen(api)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--api") from None
    options = DemoOptions(
        hours=hours,
        speed=speed,
        batteries=batteries,
        waterheaters=waterheaters,
        out=out,
        api=listen,
        broker=broker,
        browser=not no_browser,
        live_table=not headless,
        controller=controller,
    )
    try:
        summary = run_service(run_demo(options, console), name="demo")
    except (ProcessFailed, TimeoutError) as exc:
        console.print(f"[red]demo failed:[/] {exc} (logs in {out / 'logs'})")
        raise typer.Exit(EXIT_ERROR) from None
    if summary is None:
        console.print("[yellow]stopped: every process was shut down[/]")

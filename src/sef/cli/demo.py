"""``sef demo``: the whole system on this machine, a simulated day in about two minutes."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from sef.cli._signals import EXIT_ERROR, EXIT_USAGE, run_service
from sef.security import SecurityError

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
    pv: int = typer.Option(
        0, "--pv", min=0, max=50, help="PV systems (SunSpec inverter emulator + sef inverter)."
    ),
    evs: int = typer.Option(
        0, "--evs", min=0, max=50, help="EV chargers (OCPP charge point + sef evse)."
    ),
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
        help="Use this plain-text broker (with --insecure only; default: a Mosquitto of the "
        "demo's own in mutual-TLS mode, or the embedded broker with --insecure or without "
        "Mosquitto).",
    ),
    no_browser: bool = typer.Option(False, "--no-browser", help="Do not open the dashboard."),
    headless: bool = typer.Option(False, "--headless", help="Plain log lines, no live table."),
    controller: str = typer.Option("mpc", "--controller", help="mpc or baseline."),
    insecure: bool = typer.Option(
        False,
        "--insecure",
        envvar="SEF_INSECURE",
        help="LAB ONLY: plain-text MQTT, no certificates, a dashboard without login.",
    ),
) -> None:
    """Run the SEF demo: EMS, battery and water-heater emulators with their agents (one
    process each), and the load-following control app; ends with a report. ``--pv N`` and
    ``--evs N`` add PV inverters and EV chargers (emulator + agent each): measured load on
    the feeder, not controlled; the report gives their energy.

    Secure by default: a throwaway CA in OUT/pki certifies every process, Mosquitto runs
    in mutual-TLS mode with per-identity ACLs, and the dashboard's admin token is printed
    at start. Ctrl-C (SIGINT) or SIGTERM stops every process cleanly; the exit code is
    then 0.
    """
    from sef.demo._processes import ProcessFailed
    from sef.demo._run import DemoOptions, run_demo
    from sef.ems.api import parse_listen

    try:
        listen = parse_listen(api)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--api") from None
    if broker is not None and not insecure:
        raise typer.BadParameter(
            "the secure demo runs its own broker, which trusts only the demo's throwaway CA; "
            "an external broker works with --insecure only",
            param_hint="--broker",
        )
    if insecure:
        console.print(
            "[bold red]WARNING:[/] sef demo runs INSECURE (--insecure): plain-text MQTT, no "
            "certificates, unsigned commands, a dashboard without login. For a lab only."
        )
    options = DemoOptions(
        hours=hours,
        speed=speed,
        batteries=batteries,
        waterheaters=waterheaters,
        pv=pv,
        evs=evs,
        out=out,
        api=listen,
        broker=broker,
        browser=not no_browser,
        live_table=not headless,
        controller=controller,
        insecure=insecure,
    )
    try:
        summary = run_service(run_demo(options, console), name="demo")
    except (ProcessFailed, TimeoutError) as exc:
        console.print(f"[red]demo failed:[/] {exc} (logs in {out / 'logs'})")
        raise typer.Exit(EXIT_ERROR) from None
    except SecurityError as exc:  # e.g. --out holds a CA that is not a demo's
        console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    if summary is None:
        console.print("[yellow]stopped: every process was shut down[/]")

"""``sef emulate``: run device emulators (``battery``; ``waterheater`` joins later).

Every command is a thin wrapper around a plain async function that tests start
in-process (``sef.emulators.battery.run_battery_emulator`` for ``battery``).
"""

from __future__ import annotations

import asyncio
import contextlib

import typer

from sef.clock import Clock, ClockSpecError, default_clock, parse_clock

app = typer.Typer(help="Run device emulators (battery, ...).", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Run device emulators (keeps ``battery`` a subcommand even while it is alone)."""


def _clock(spec: str | None) -> Clock:
    """The clock named by ``spec``, else the default (``SEF_CLOCK`` or real time)."""
    try:
        return parse_clock(spec) if spec else default_clock()
    except ClockSpecError as exc:
        raise typer.BadParameter(str(exc), param_hint="--clock") from exc


@app.command("battery")
def battery(
    port: int = typer.Option(..., "--port", "-p", min=0, max=65535, help="Modbus TCP port."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    unit: int = typer.Option(1, "--unit", min=1, max=247, help="Modbus unit (device) id."),
    clock: str | None = typer.Option(
        None,
        "--clock",
        help="Clock spec: real, scaled:SPEED or scaled:SPEED:START@ANCHOR (default: SEF_CLOCK).",
    ),
    soc: float = typer.Option(0.5, "--soc", min=0.0, max=1.0, help="Initial SOC (fraction)."),
) -> None:
    """Emulate an 8 kW / 60 kWh battery behind a SunSpec Modbus TCP map (1, 802, 124, 713)."""
    from sef.emulators.battery import BatteryEmulator, run_battery_emulator

    the_clock = _clock(clock)

    def announce(emulator: BatteryEmulator) -> None:
        bound_host, bound_port = emulator.address or (host, port)
        typer.echo(f"battery emulator listening on {bound_host}:{bound_port} unit {unit}")

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            run_battery_emulator(host, port, unit=unit, clock=the_clock, soc=soc, on_ready=announce)
        )

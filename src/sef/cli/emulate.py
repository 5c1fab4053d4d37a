"""``sef emulate``: run device emulators (``battery``, ``waterheater``, ``meter``).

Every command is a thin wrapper around a plain async function that tests start
in-process (``sef.emulators.battery.run_battery_emulator`` for ``battery``,
``sef.emulators.waterheater.run_sgd_emulator`` for ``waterheater``,
``sef.emulators.meter.run_meter_emulator`` for ``meter``). ``--ct HOST:PORT`` makes a
battery or water heater report its power to a meter emulator (``docs/meter.md``).
"""

from __future__ import annotations

import asyncio
import os

import typer

from sef.cli import evse_commands
from sef.cli._signals import run_service, run_until_stopped
from sef.cli.inverter_commands import emulate_inverter
from sef.cli.meter_commands import (
    CT_NAME_OPTION,
    CT_OPTION,
    check_ct,
    emulate_meter,
    start_ct_reporter,
)
from sef.clock import Clock, ClockSpecError, default_clock, parse_clock

app = typer.Typer(help="Run device emulators (battery, waterheater, meter).", no_args_is_help=True)


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
    ct: str | None = CT_OPTION,
    ct_name: str | None = CT_NAME_OPTION,
) -> None:
    """Emulate an 8 kW / 60 kWh battery behind a SunSpec Modbus TCP map (1, 802, 124, 713)."""
    from sef.emulators.battery import BatteryEmulator, run_battery_emulator

    the_clock = _clock(clock)
    check_ct(ct)

    def announce(emulator: BatteryEmulator) -> None:
        bound_host, bound_port = emulator.address or (host, port)
        typer.echo(f"battery emulator listening on {bound_host}:{bound_port} unit {unit}")
        model = emulator.model  # its AC power, + = charging = drawn from the grid (kW)
        start_ct_reporter(
            ct, ct_name or f"battery-{bound_port}", lambda: float(model.ac_power_kw[0]) * 1e3
        )

    run_service(
        run_until_stopped(
            run_battery_emulator(host, port, unit=unit, clock=the_clock, soc=soc, on_ready=announce)
        ),
        name="battery emulator",
    )


@app.command("waterheater")
def waterheater(
    pty: bool = typer.Option(False, "--pty", help="Create a pseudo-terminal; print its path."),
    serial: str | None = typer.Option(None, "--serial", help="Serial port to serve (19200 8N1)."),
    tcp: int | None = typer.Option(
        None, "--tcp", min=0, max=65535, help="CTA-2045 over TCP: port to listen on (0 = free)."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind with --tcp."),
    clock: str | None = typer.Option(
        None,
        "--clock",
        help="Clock spec: real, scaled:SPEED or scaled:SPEED:START@ANCHOR (default: SEF_CLOCK).",
    ),
    nodes: int = typer.Option(2, "--nodes", min=1, max=50, help="Tank nodes (model detail)."),
    start_temp: float | None = typer.Option(
        None,
        "--start-temp",
        min=0.0,
        max=100.0,
        help="Initial tank temperature, °C (default: setpoint 51.67 °C).",
    ),
    no_draws: bool = typer.Option(
        False, "--no-draws", help="No hot-water draws (default: DOE medium pattern)."
    ),
    ct: str | None = CT_OPTION,
    ct_name: str | None = CT_NAME_OPTION,
) -> None:
    """Emulate a CTA-2045 electric water heater (SGD). SIGUSR1 toggles the customer override.

    Prints one line ending in the pty path, the serial port or HOST:PORT once ready.
    """
    import signal

    import numpy as np

    from sef.emulators.waterheater import SGDEmulator, run_sgd_emulator
    from sef.models.waterheater import WaterHeaterParams

    if sum((pty, serial is not None, tcp is not None)) != 1:
        raise typer.BadParameter("give exactly one of --pty, --serial PATH, --tcp PORT")
    the_clock = _clock(clock)
    check_ct(ct)

    async def main() -> None:
        sgd = SGDEmulator(
            the_clock,
            params=WaterHeaterParams(nodes=nodes, initial_c=start_temp),
            draws=np.zeros(0) if no_draws else None,
        )
        start_ct_reporter(ct, ct_name or f"waterheater-{os.getpid()}", lambda: sgd.power_w)
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, sgd.press_override)
        await run_until_stopped(
            run_sgd_emulator(
                pty=pty,
                serial=serial,
                tcp_port=tcp,
                host=host,
                emulator=sgd,
                on_ready=lambda where: typer.echo(f"SGD emulator ready on {where}"),
            )
        )

    run_service(main(), name="SGD emulator")


app.command("meter")(emulate_meter)
app.command("inverter")(emulate_inverter)
app.command("evse")(evse_commands.emulate_evse)

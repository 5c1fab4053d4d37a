"""The ``sef`` command line. Each subcommand is a thin wrapper over a plain async function."""

from __future__ import annotations

import logging

import typer
from rich.console import Console
from rich.logging import RichHandler

from sef import __version__
from sef.cli import bus_commands, operator
from sef.cli.demo import demo
from sef.cli.ems_command import ems
from sef.cli.emulate import app as emulate_app
from sef.cli.gateway_command import gateway
from sef.cli.interface import app as interface_app
from sef.cli.simulate import simulate

app = typer.Typer(
    name="sef",
    help="SEF, the Smart Energy Framework: control distributed energy resources over MQTT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        print(f"sef {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    log_level: str = typer.Option(
        "WARNING",
        "--log-level",
        "-l",
        envvar="SEF_LOG_LEVEL",
        help="DEBUG, INFO, WARNING or ERROR.",
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Options shared by every subcommand."""
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        raise typer.BadParameter(f"unknown log level {log_level!r}")
    logging.basicConfig(
        level=level,
        format="%(name)s: %(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=err_console, show_path=False)],
    )


app.command("ems")(ems)
bus_commands.register(app)
operator.register(app)
app.command("demo")(demo)
app.command("simulate")(simulate)
app.command("gateway")(gateway)
app.add_typer(interface_app, name="interface", help="Check and show DER interface XML.")
app.add_typer(emulate_app, name="emulate", help="Run device emulators.")


def main() -> None:
    """Entry point of the ``sef`` console script."""
    app()

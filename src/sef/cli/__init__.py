"""The ``sef`` command line. Each subcommand is a thin wrapper over a plain async function."""

from __future__ import annotations

import logging

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from sef import __version__
from sef.cli import (
    api_token_command,
    bus_commands,
    enroll_command,
    evse_commands,
    meter_commands,
    operator,
)
from sef.cli.broker_command import broker
from sef.cli.certify_command import certify
from sef.cli.cluster_command import app as cluster_app
from sef.cli.demo import demo
from sef.cli.ems_command import ems
from sef.cli.emulate import app as emulate_app
from sef.cli.gateway_command import gateway
from sef.cli.interface import app as interface_app
from sef.cli.inverter_commands import inverter
from sef.cli.openadr import app as openadr_app
from sef.cli.pki_command import app as pki_app
from sef.cli.simulate import simulate
from sef.cli.swarm_command import swarm
from sef.cli.update_command import app as update_app

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
api_token_command.register(app)
enroll_command.register(app)
app.command("demo")(demo)
app.command("simulate")(simulate)
app.command("meter")(meter_commands.meter)
app.command("inverter")(inverter)
app.command("gateway")(gateway)
app.command("broker")(broker)
app.command("certify")(certify)
app.command("swarm")(swarm)
app.command("evse")(evse_commands.evse)
app.add_typer(cluster_app, name="cluster")
app.add_typer(interface_app, name="interface", help="Check and show DER interface XML.")
app.add_typer(emulate_app, name="emulate", help="Run device emulators.")
app.add_typer(update_app, name="update", help="Signed software updates (TUF).")
app.add_typer(pki_app, name="pki", help="The deployment PKI: CA, certificates, broker TLS + ACL.")
app.add_typer(openadr_app, name="openadr", help="Demand response (OpenADR) through the EMS API.")


EXTRA_OF_MODULE = {
    **dict.fromkeys(
        (
            "fastapi",
            "starlette",
            "pydantic",
            "uvicorn",
            "sqlalchemy",
            "alembic",
            "psycopg",
            "prometheus_client",
            "httpx",
            "orjson",
        ),
        "ems",
    ),
    **dict.fromkeys(("scipy", "matplotlib"), "control"),
    "iotcore": "demo",
}
"""Third-party modules of the optional extras (pyproject.toml), by top-level name."""


def main() -> None:
    """Entry point of the ``sef`` console script.

    A command that needs an optional extra that is not installed (``sef ems --db`` on an
    agent-only install) ends with a message naming the extra instead of a traceback.
    """
    try:
        app()
    except ModuleNotFoundError as exc:
        extra = EXTRA_OF_MODULE.get((exc.name or "").partition(".")[0])
        if extra is None:
            raise
        err_console.print(
            "[red]error:[/] "
            + escape(
                f"this command needs {exc.name!r}, from SEF's optional {extra!r} "
                f"dependencies: pip install 'sef[{extra}]' (or 'sef[all]')"
            ),
            highlight=False,
            soft_wrap=True,
        )
        raise SystemExit(1) from None

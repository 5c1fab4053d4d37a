"""``sef simulate``: run control apps on a scenario with the fleet simulator and write a report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

__all__ = ["run_simulation", "simulate"]

console = Console()


def run_simulation(
    scenario: str, out: Path, controllers: list[str], plots: bool = True, show_progress: bool = True
) -> dict[str, Any]:
    """Load ``scenario`` (file or built-in name), run ``controllers``, write the report.

    Returns the summary (also written to ``out/summary.json``).
    """
    from sef.control.controllers import make_controller
    from sef.control.report import write_report
    from sef.control.scenario import load_scenario
    from sef.control.simulator import SimResult
    from sef.control.simulator import simulate as run

    sc = load_scenario(scenario)
    results: list[SimResult] = []
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not show_progress,
    ) as progress:
        for name in controllers:
            task = progress.add_task(f"{sc.name} · {name}", total=sc.steps)

            def tick(done: int, total: int, task: TaskID = task) -> None:
                if done % 10 == 0 or done == total:
                    progress.update(task, completed=done)

            results.append(run(sc, make_controller(name), tick))
    return write_report(out, sc, results, plots=plots)


def simulate(
    scenario: str = typer.Argument(..., help="Scenario TOML file, or 'reference'."),
    out: Path = typer.Option(..., "--out", "-o", help="Report directory (created)."),
    controller: str = typer.Option(
        "all", "--controller", "-c", help="mpc, baseline, optimal or all."
    ),
    no_plots: bool = typer.Option(False, "--no-plots", help="Skip the PNG plots."),
) -> None:
    """Simulate a fleet following a target with a control app; write plots, CSV and summary."""
    from sef.control.controllers import CONTROLLERS

    names = list(CONTROLLERS) if controller == "all" else [controller]
    if any(n not in CONTROLLERS for n in names):
        raise typer.BadParameter(f"--controller must be one of {', '.join(CONTROLLERS)} or all")
    try:
        summary = run_simulation(scenario, out, names, plots=not no_plots)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    table = Table(title=f"{summary['scenario']} → {out}")
    cols = {
        "rmse_kw": "RMSE kW",
        "max_dev_kw": "max dev kW",
        "peak_kw": "peak kW",
        "energy_kwh": "kWh",
        "comfort_violations": "comfort viol.",
        "soc_violations": "SOC viol.",
        "throughput_kwh": "thru kWh",
        "ratio_to_optimal": "÷ optimal",
        "run_s": "run s",
    }
    table.add_column("controller")
    for head in cols.values():
        table.add_column(head, justify="right")
    per = summary["controllers"]
    assert isinstance(per, dict)
    for name, m in per.items():
        table.add_row(name, *(f"{m[c]:.2f}" if c in m else "-" for c in cols))
    console.print(f"report: {', '.join(str(f) for f in summary.get('files', []))}")
    console.print(table, width=max(console.width, 120))

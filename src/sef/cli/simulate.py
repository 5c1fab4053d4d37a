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

__all__ = ["run_simulation", "simulate", "summary_table"]

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
        "all", "--controller", "-c", help="mpc, baseline, greedy, optimal or all."
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
    console.print(f"report: {', '.join(str(f) for f in summary.get('files', []))}")
    wide = Console(width=max(console.width, 150))  # print(width=) does not widen a Table
    wide.print(summary_table(summary, str(out)))
    from sef.control.report_der import DER_HEADS, der_rows  # issue 17: PV and EV figures

    if rows := der_rows(summary):
        table = Table(title=f"{summary['scenario']} · PV and EVs")
        for head in ("controller", *(h for _, h, _ in DER_HEADS)):
            table.add_column(head, justify="right")
        for name, cells in rows:
            table.add_row(name, *cells)
        wide.print(table)


def _fmt(value: float | None, spec: str = ".2f") -> str:
    if value is None or value != value:  # missing or NaN
        return "-"
    return format(value, spec)


def summary_table(summary: dict[str, Any], where: str = "") -> Table:
    """Rich table of a report summary: the objective's energy-corrected score and its ratio
    to the optimum, RMSE (raw and corrected), peak (and its excursion over a cap or under
    a floor), battery SOC start → end, heater heat change, energy debt, violations."""
    objective = str(summary.get("objective", "track"))
    unit = "kW" if objective == "track" else "kWh"
    title = f"{summary['scenario']} · objective {objective}, end energy "
    title += f"{summary.get('end_energy', 'return')}" + (f" → {where}" if where else "")
    table = Table(title=title)
    heads = [f"score {unit}", "÷ optimal", "RMSE kW", "RMSE corr. kW", "peak kW"]
    if objective == "cap":
        heads.append("over cap %")
    elif objective == "floor":
        heads.append("under floor %")
    heads += ["SOC start→end", "heat Δ kWh", "debt kWh", "comfort viol.", "SOC viol."]
    heads += ["thru kWh", "events", "run s"]
    table.add_column("controller")
    for head in heads:
        table.add_column(head, justify="right")
    per = summary["controllers"]
    assert isinstance(per, dict)
    for name, m in per.items():
        row = [_fmt(m.get("score")), _fmt(m.get("ratio_to_optimal"), ".3f")]
        row += [
            _fmt(m.get("rmse_kw")),
            _fmt(m.get("rmse_corrected_kw")),
            _fmt(m.get("peak_kw"), ".1f"),
        ]
        if objective == "cap":
            row.append(_fmt(m.get("over_cap_max_pct"), "+.2f"))
        elif objective == "floor":
            row.append(_fmt(m.get("under_floor_max_pct"), "+.2f"))
        soc0, soc1 = m.get("soc_start_mean"), m.get("soc_end_mean")
        row.append(f"{_fmt(soc0)}→{_fmt(soc1)}")
        heat = m.get("wh_kwh_end", float("nan")) - m.get("wh_kwh_start", float("nan"))
        row += [_fmt(heat, "+.1f"), _fmt(m.get("energy_debt_kwh"), "+.1f")]
        row += [_fmt(m.get("comfort_violations"), ".0f"), _fmt(m.get("soc_violations"), ".0f")]
        row += [_fmt(m.get("throughput_kwh"), ".0f"), _fmt(m.get("wh_events"), ".0f")]
        row.append(_fmt(m.get("run_s"), ".1f"))
        table.add_row(name, *row)
    return table

"""``sef ems --broker-config``: refuse to start against a broker whose queue for the EMS
cannot hold the configured outage budget (``sef.broker``: :class:`QueueBudget`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from sef.broker import DEFAULT_BUDGET, BrokerLimits, QueueBudget

__all__ = ["check_outage_budget"]

_err = Console(stderr=True)


def check_outage_budget(
    broker_config: Path | None, outage_budget_s: float | None, expected_rate: float | None
) -> QueueBudget:
    """Check the broker's queue limits against the outage budget; return the budget.

    With ``broker_config`` (the broker's ``mosquitto.conf``) the limits are read and a
    queue too small for ``expected_rate × outage_budget_s`` messages ends the command
    with exit code 2 and the numbers. Without it nothing can be checked: when a budget
    was given, a warning says so.
    """
    budget = QueueBudget(
        rate_per_s=DEFAULT_BUDGET.rate_per_s if expected_rate is None else expected_rate,
        outage_s=DEFAULT_BUDGET.outage_s if outage_budget_s is None else outage_budget_s,
        message_bytes=DEFAULT_BUDGET.message_bytes,
    )
    if broker_config is None:
        if outage_budget_s is not None or expected_rate is not None:
            _err.print(
                "[yellow]warning:[/] the broker's queue limits are unknown (no "
                "--broker-config): cannot check that it holds the outage budget of "
                f"{budget.rate_per_s:g} msg/s x {budget.outage_s:g} s = {budget.messages} "
                "messages; past its queue the broker drops messages"
            )
        return budget
    try:
        limits = BrokerLimits.read(broker_config)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--broker-config") from None
    problem = limits.shortfall(budget)
    if problem is not None:
        _err.print(f"[red]error:[/] refusing to start: {problem} ({broker_config})")
        raise typer.Exit(2)
    held = limits.holds(budget)
    print(
        f"broker queue holds {held:g} messages for the EMS: "
        f"{held / budget.rate_per_s if budget.rate_per_s else float('inf'):.0f} s "
        f"at {budget.rate_per_s:g} msg/s (budget {budget.outage_s:g} s)",
        flush=True,
    )
    return budget

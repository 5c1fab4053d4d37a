"""Bench (issue 16 item 4): how long ``sef call`` takes with a large fleet on the broker,
before (an EMS reader that subscribes to every agent and settles) and now
(:func:`sef.cli._call.call_once`: no subscription for a shipped interface).

Method
------
A Mosquitto with ``sef broker``'s tuning for ``--agents`` holds that many agents' retained
state (``--per-agent`` QoS 1 messages of 750 bytes each, as in
``bench/broker_resubscribe.py``) plus one real agent (:class:`sef.agents.Agent`) that
answers ``sef.Agent.Ping``. Each round times, in this process, from start to the reply:

* **before**: what ``sef call`` did until this change — ``EMS(announce=False)``, start,
  ``settle(0.2, 1.5)``, ``call``; and the messages it received;
* **now**: ``call_once`` (a bare client and a caller).

Printed: the median over ``--rounds`` of each, the messages received, the ratio.

Run::

    .venv/bin/python bench/sef_call_start.py [--agents 100000] [--per-agent 6] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from broker_resubscribe import publish_fleet
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from sef.agents import Agent
from sef.broker import Mosquitto
from sef.broker_fleet import FleetSizing
from sef.cli._call import call_once
from sef.clock import default_clock
from sef.ems import EMS, CallTarget


async def before(url: str) -> tuple[float, int, bool]:
    """The former ``sef call``: seconds, messages received, reply ok."""
    start = time.monotonic()
    client = EMS(url, "cli", announce=False, request_rebirth=False)
    await client.start()
    try:
        await client.settle(0.2, 1.5)
        replies = await client.call("probe-1", "sef.Agent", "Ping", [], timeout_s=10)
    finally:
        await client.stop()
    return time.monotonic() - start, client.registry.messages, bool(replies and replies[0].ok)


async def now(url: str) -> tuple[float, int, bool]:
    """The lean ``sef call``: seconds, messages received, reply ok."""
    start = time.monotonic()
    outcome = await call_once(
        url, None, CallTarget.parse("probe-1"), "sef.Agent", "Ping", [],
        clock=default_clock(), timeout_s=10,
    )  # fmt: skip
    ok = bool(outcome.replies and outcome.replies[0].ok)
    return time.monotonic() - start, outcome.received, ok


async def measure(url: str, rounds: int) -> dict[str, list[tuple[float, int, bool]]]:
    agent = Agent("probe-1", url)
    await agent.start()
    results: dict[str, list[tuple[float, int, bool]]] = {"before": [], "now": []}
    try:
        for _ in range(rounds):
            results["before"].append(await before(url))
            results["now"].append(await now(url))
    finally:
        await agent.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=100_000)
    parser.add_argument("--per-agent", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with Mosquitto(tuning=FleetSizing(agents=args.agents).config()) as broker:
        with Progress(console=Console(stderr=True), transient=True) as progress:
            publish_fleet(broker.port, args.agents, args.per_agent, 750, progress)
        results = asyncio.run(measure(broker.url, args.rounds))
    table = Table(title=f"sef call to one agent, {args.agents} agents x {args.per_agent} retained")
    for column in ("sef call", "median s", "runs s", "messages received", "replies ok"):
        table.add_column(column, justify="right")
    medians = {}
    for name, runs in results.items():
        medians[name] = statistics.median(r[0] for r in runs)
        table.add_row(
            name, f"{medians[name]:.2f}", " ".join(f"{r[0]:.2f}" for r in runs),
            str(max(r[1] for r in runs)), f"{sum(r[2] for r in runs)}/{len(runs)}",
        )  # fmt: skip
    load = os.getloadavg()
    table.caption = (
        f"before/now {medians['before'] / medians['now']:.1f}x; load {load[0]:.2f} "
        f"{load[1]:.2f} {load[2]:.2f}"
    )
    Console(width=160).print(table)


if __name__ == "__main__":
    main()

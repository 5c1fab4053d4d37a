"""``sef swarm``: run N lightweight protocol-conformant agents (docs/swarm.md)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from sef.cli._signals import EXIT_USAGE, STOP_TIMEOUT_S, run_service
from sef.swarm import SwarmConfig, SwarmError, SwarmRunner

__all__ = ["swarm"]

_err = Console(stderr=True)
_CLK = os.sysconf("SC_CLK_TCK")


def _proc(pid: int) -> tuple[float, float]:
    """CPU seconds and RSS (MiB) of process ``pid`` (0, 0 when gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / _CLK
        rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        return cpu, rss
    except (OSError, IndexError, ValueError):
        return 0.0, 0.0


class _View:
    """The live summary: counters, rates, the workers' CPU and memory, the last calls."""

    def __init__(self, runner: SwarmRunner) -> None:
        self.runner = runner
        self.last: tuple[float, dict[str, Any], dict[int, float]] | None = None
        self.rates: dict[str, float] = {}
        self.cpu: dict[int, float] = {}

    def render(self) -> Group:
        now = time.monotonic()
        snap = self.runner.snapshot()
        cpus = {p.pid: _proc(p.pid) for p in self.runner.workers}
        if self.last is not None and now > self.last[0]:
            dt = now - self.last[0]
            for key in ("connects", "births", "telemetry", "calls_received", "replies"):
                self.rates[key] = (snap[key] - self.last[1][key]) / dt
            self.cpu = {
                pid: 100.0 * (c - self.last[2].get(pid, c)) / dt for pid, (c, _) in cpus.items()
            }
        self.last = (now, snap, {pid: c for pid, (c, _) in cpus.items()})
        table = Table(
            title=f"sef swarm: {self.runner.config.agents} agents on {self.runner.config.broker}"
        )
        cols = ("connected", "births", "telemetry", "calls_received", "replies", "rejected",
                "lost", "connect_failures")  # fmt: skip
        for col in cols:
            table.add_column(col.replace("_", " "), justify="right")
        table.add_row(*(str(snap[k]) for k in cols))
        table.add_row("", *(f"{self.rates.get(k, 0.0):.0f}/s" for k in cols[1:5]), "", "", "")
        procs = Table(title="workers")
        procs.add_column("pid")
        procs.add_column("CPU %", justify="right")
        procs.add_column("RSS MiB", justify="right")
        for pid, (_, rss) in cpus.items():
            procs.add_row(str(pid), f"{self.cpu.get(pid, 0.0):.0f}", f"{rss:.0f}")
        calls = Table(title="calls (latest 5)")
        for col in ("id", "method", "agents", "dups", "p50 ms", "p99 ms", "first→last s"):
            calls.add_column(col)
        for call_id, c in list(snap["calls"].items())[-5:]:
            spread = (c["last"] - c["first"]) if c["first"] is not None else 0.0
            calls.add_row(call_id[:24], c["method"], str(c["agents"]), str(c["duplicates"]),
                          f"{c['p50_ms']}", f"{c['p99_ms']}", f"{spread:.3f}")  # fmt: skip
        return Group(table, procs, calls)  # fmt: skip


async def _run(runner: SwarmRunner, duration_s: float | None, live: bool) -> None:
    await runner.start()
    view = _View(runner)
    deadline = None if duration_s is None else time.monotonic() + duration_s
    try:
        display = Live(view.render(), refresh_per_second=1) if live else None
        with display if display is not None else contextlib.nullcontext():
            while deadline is None or time.monotonic() < deadline:
                if runner.exited.is_set():
                    _err.print("[red]a swarm worker exited[/]: stopping")
                    break
                await asyncio.sleep(1.0)
                frame = view.render()
                if display is not None:
                    display.update(frame)
    finally:
        await asyncio.shield(runner.stop())


def swarm(
    agents: int = typer.Option(1000, "--agents", "-n", help="Number of agents."),
    broker: str = typer.Option(
        "mqtt://127.0.0.1:1883",
        "--broker",
        "-b",
        help="Broker URL (mqtt:// only); a comma-separated list: failover (each agent starts "
        "at a node chosen by its id).",
    ),
    group: list[str] = typer.Option(
        ["g1"], "--group", "-g", help="Group of every agent (repeat for more)."
    ),
    telemetry_s: float = typer.Option(
        60.0, "--telemetry-s", help="Telemetry period of each agent, s."
    ),
    keepalive_s: int = typer.Option(10, "--keepalive-s", help="MQTT keepalive of each agent, s."),
    processes: int | None = typer.Option(
        None,
        "--processes",
        "-p",
        help="Worker processes (default: enough for the file descriptor limit).",
    ),
    connect_rate: float = typer.Option(
        2000.0, "--connect-rate", help="New connections per second, all workers together."
    ),
    stats: Path | None = typer.Option(
        None, "--stats", help="JSON stats file, rewritten every second."
    ),
    prefix: str = typer.Option(
        "swarm", "--prefix", help="Agent ids are PREFIX-000000, PREFIX-000001, ..."
    ),
    root: str = typer.Option("sef", "--root", help="Topic root."),
    interface_topics: str = typer.Option(
        "v2",
        "--interface-topics",
        help="v2: interface XML once per hash ({root}/interfaces/{sha256}); "
        "v1: on every agent's interfaces/ topics (protocol version 1); both.",
    ),
    duration_s: float | None = typer.Option(
        None, "--duration-s", help="Stop after this long, s (default: until Ctrl-C)."
    ),
    sub_qos: int = typer.Option(
        1,
        "--sub-qos",
        help="QoS of the agents' subscriptions: 0 on a NATS cluster (a QoS 1 subscription "
        "is a JetStream consumer per agent there, refused with SUBACK 0x80 at scale).",
    ),
    puback_log: Path | None = typer.Option(
        None,
        "--puback-log",
        help="Append one line 'AGENT TS SEQ' per Telemetry update the broker acknowledged "
        "(TS: the update's sender time, Unix s), for exactly-once checks against the store.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No live summary."),
    insecure: bool = typer.Option(
        False, "--insecure", help="Required: swarm agents speak protocol version 1 over plain MQTT."
    ),
) -> None:
    """Run N lightweight, protocol-conformant agents, for load tests and demos."""
    if not insecure:
        _err.print("[red]error:[/] sef swarm speaks protocol version 1 over plain MQTT "
                   "(no TLS, unsigned calls): pass --insecure, for a local test broker only "
                   "(docs/swarm.md)")  # fmt: skip
        raise typer.Exit(EXIT_USAGE)
    config = SwarmConfig(
        agents, broker, list(group), prefix, root, telemetry_s, keepalive_s, processes,
        connect_rate, interface_topics, stats, sub_qos=sub_qos, puback_log=puback_log,
    )  # fmt: skip
    try:
        runner = SwarmRunner(config)
    except SwarmError as exc:
        _err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    _err.print(f"sef swarm: {agents} agents in {runner.processes} processes, "
               f"{connect_rate:g} connections/s, telemetry every {telemetry_s:g} s")  # fmt: skip
    run_service(
        _run(runner, duration_s, not quiet), stop_timeout_s=max(STOP_TIMEOUT_S, 30.0), name="swarm"
    )

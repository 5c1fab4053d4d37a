"""Bench (issue 19): home-gateway store-and-forward through an uplink cut or a frozen home broker.

Method
------
The rig of ``tests/store_forward.py`` (the CI tests of ``tests/gateway/
test_store_forward.py`` run the same rig, shorter): a control Mosquitto
(:class:`sef.broker.Mosquitto`, SEF's configuration), an EMS with a SQLite store in a
temporary directory (durable: every commit synced), one :class:`sef.gateway.Gateway`
whose uplink goes through a TCP relay that can be cut (``tests/tcp_cut.py``), and
``--agents`` in-process virtual batteries whose telemetry period (model step) is
``--telemetry-s``, MQTT keepalive ``--keepalive-s``, connected in plain text
(``--insecure``: TLS would add CPU per message, not change what is counted) to the
gateway's local listener. Gateway relay keepalive 2 s, reconnection backoff 1-2 s.

Every Telemetry update an agent produces is logged in the agent (its sender ``ts``), so
the truth does not depend on what crossed the network. Once every agent is online at the
EMS and ``--warmup-s`` have passed, the uplink is cut for ``--cut-s`` (the relay closes
every connection and stops listening) or the gateway's Mosquitto is stopped with SIGSTOP
for ``--freeze-s`` (then SIGCONT). Then the bench waits until every sample produced from
the agents' first birth up to the restore is in the store's ``telemetry`` table under its
(agent, key, ts), or ``--catch-up-timeout-s``, and 2 s more for late copies.

Figures: samples produced (during the outage), stored, missing, stored more than once
(``GROUP BY agent_id, key, ts HAVING count > 1``), samples the agents never handed to
their MQTT client, backfilled publishes, the EMS's gap and duplicate counts, rows the
store declined as already stored, dead letters, the relay's counters (forwarded, queued,
dropped, high water), Mosquitto's "Outgoing messages are being dropped" lines (gateway
and control broker), the restore-to-caught-up time (restore until the EMS received the
last required sample), the gateway Mosquitto's peak RSS (VmHWM) and this process's (EMS,
relay, agents: ru_maxrss), and the load average (2 CPUs shared with other work: say so
with the figures). It prints PASS/FAIL per criterion of issue 19 (every sample stored
exactly once, zero gaps, no queue overflow) and exits 0 whatever the result: it is a
measurement, not a test.

Run (the scenarios of issue 19)::

    .venv/bin/python bench/gateway_outage.py --agents 1 --telemetry-s 1 --cut-s 20
    .venv/bin/python bench/gateway_outage.py --agents 1 --telemetry-s 1 --cut-s 600
    .venv/bin/python bench/gateway_outage.py --agents 1 --telemetry-s 1 --freeze-s 30
    .venv/bin/python bench/gateway_outage.py --agents 200 --telemetry-s 10 --cut-s 1800
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bus_ingest import progress_bar
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from sef.broker import Mosquitto
from store_forward import OutageFigures, RigConfig, StoreForwardRig

console = Console()


class OutageProgress:
    """Two progress bars: the outage (s) and the catch-up (samples stored)."""

    def __init__(self, progress: Progress, label: str) -> None:
        self.progress = progress
        self.label = label
        self.tasks: dict[str, Any] = {}

    def __call__(self, phase: str, done: float, total: float) -> None:
        if phase not in self.tasks:
            what = self.label if phase == "outage" else "catch-up (samples stored)"
            self.tasks[phase] = self.progress.add_task(what, total=max(total, 1))
        self.progress.update(self.tasks[phase], completed=done, total=max(total, 1))


async def run(args: argparse.Namespace, control: Mosquitto, workdir: Path) -> OutageFigures:
    outage_s = args.cut_s if args.cut_s is not None else args.freeze_s
    config = RigConfig(
        agents=args.agents,
        telemetry_s=args.telemetry_s,
        agent_keepalive_s=args.keepalive_s,
        warmup_s=args.warmup_s,
        catch_up_timeout_s=args.catch_up_timeout_s or max(120.0, 0.5 * outage_s),
    )
    label = f"uplink cut ({outage_s:g} s)" if args.cut_s is not None else "home broker frozen"
    with progress_bar(console) as progress:
        rig = StoreForwardRig(control, workdir, config, OutageProgress(progress, label))
        console.print(f"starting {args.agents} agents behind gateway {rig.home_id} ...")
        async with rig:
            console.print(f"{args.agents} agents online at the EMS; warm-up {args.warmup_s:g} s")
            if args.cut_s is not None:
                return await rig.cut(args.cut_s)
            return await rig.freeze_home(args.freeze_s)


def report(figures: OutageFigures) -> None:
    what = "uplink cut" if figures.kind == "cut" else "home broker frozen (SIGSTOP)"
    table = Table(
        title=f"{what} {figures.outage_s:g} s, {figures.agents} agents at "
        f"{figures.telemetry_s:g} s telemetry"
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    relay = figures.relay
    rows: list[tuple[str, object]] = [
        ("samples produced (first birth → restore)", figures.produced),
        ("  of which during the outage", figures.produced_outage),
        ("outage samples stored", figures.stored_outage),
        ("samples missing (of the outage)", f"{figures.missing} ({figures.missing_outage})"),
        ("(agent, key, ts) stored more than once", figures.stored_more_than_once),
        ("samples never handed to the agent's MQTT client", figures.not_sent),
        ("backfilled publishes", figures.backfilled),
        ("EMS: sequence gaps counted", figures.gaps),
        ("EMS: duplicates counted", _text(figures.duplicates)),
        ("store: rows already stored (declined)", figures.store_duplicates),
        ("store: dead letters", figures.dead_letters),
        ("relay: forwarded / queued", f"{_text(relay['forwarded'])} / {_text(relay['queued'])}"),
        ("relay: dropped / high water",
         f"{_text(relay['dropped'])} / {_text(relay['high_water'])}"),
        ("Mosquitto 'dropped' lines: gateway / control",
         f"{figures.dropped_log_gateway} / {figures.dropped_log_control}"),
        ("restore → caught up, s",
         "not caught up" if figures.catch_up_s is None else f"{figures.catch_up_s:.2f}"),
        ("gateway Mosquitto peak RSS, MiB", _mib(figures.gateway_broker_peak_rss_kib)),
        ("bench process peak RSS (EMS, relay, agents), MiB",
         _mib(figures.process_peak_rss_kib)),
        ("load average (1, 5, 15 min) at the end",
         " ".join(f"{x:.2f}" for x in figures.load)),
    ]  # fmt: skip
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
    for criterion, passed, why in figures.criteria():
        console.print(f"{'PASS' if passed else 'FAIL'}  {criterion}: {why}")


def _text(value: int | None) -> str:
    return "n/a" if value is None else str(value)


def _mib(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, default=1, help="agents behind the gateway")
    ap.add_argument("--telemetry-s", type=float, default=1.0, help="telemetry period, s")
    outage = ap.add_mutually_exclusive_group(required=True)
    outage.add_argument("--cut-s", type=float, help="cut the uplink for this long, s")
    outage.add_argument("--freeze-s", type=float, help="SIGSTOP the home broker this long, s")
    ap.add_argument("--keepalive-s", type=int, default=2, help="agents' MQTT keepalive, s")
    ap.add_argument("--warmup-s", type=float, default=5.0, help="run before the outage, s")
    ap.add_argument(
        "--catch-up-timeout-s",
        type=float,
        default=None,
        help="longest wait for the catch-up, s (default: max(120, half the outage))",
    )
    ap.add_argument("--log-level", default="ERROR", help="log level of sef's loggers")
    args = ap.parse_args()
    if args.agents < 1 or args.telemetry_s <= 0 or (args.cut_s or args.freeze_s or 0) <= 0:
        ap.error("need --agents >= 1, --telemetry-s > 0 and an outage > 0 s")
    logging.basicConfig(level=args.log_level.upper())
    console.print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="sef-gateway-outage-") as tmp:
        (Path(tmp) / "control").mkdir()
        with Mosquitto(workdir=Path(tmp) / "control") as control:
            figures = asyncio.run(run(args, control, Path(tmp) / "rig"))
    report(figures)


if __name__ == "__main__":
    main()

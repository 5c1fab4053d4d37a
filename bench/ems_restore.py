"""Bench (issue 16): how long an EMS takes to put its fleet back from the store at start.

Method
------
Fills a fresh store (SQLite in a temp dir; ``--pg`` also a PostgreSQL started by
:class:`sef.ems.store.pgserver.PostgresServer`) with ``--agents`` agents the way a running
EMS records a virtual battery (``sef agent virtual-battery``): its agent row (About with
the real 12 fields, the demo and ``sef.Agent`` interface refs, one group, bdseq, times)
and the last values of its ``AssetName`` and ``Telemetry`` (the real 17-key ``a{sv}``)
properties, written through :meth:`Store.write_batch` as the recorder does (not timed).

Then, in the same process, times the three steps of ``EMS.start``'s restore separately:
:meth:`Store.load_agents`, :meth:`Store.load_properties`, and the registry restore
(``agent_record`` + :meth:`Registry.restore` + ``BirthTracker.restored`` for every agent),
best of ``--repeat`` runs, each on a fresh registry. Wall time (the machine is shared:
the load is printed). A check reads back every agent's About, groups and Telemetry.

``--baseline`` runs the same steps with the pre-issue-16-restore read side (SQLAlchemy
mappings, one ``AgentRow(**dict(row))`` per agent, ``json.loads`` per property, the
record decoded then re-packed), so the ratio against it is measured in the same run.

``--serve`` also starts ``sef ems --insecure --db sqlite:///... --max-agents 0`` (a
subprocess, on a Mosquitto of its own with no retained state) on the filled SQLite store
and times process start to the first ``/health`` that shows every agent and the broker
connected (imports, migrations, restore, command log, subscription); with ``--baseline``
the package as of ``--base`` (``git archive``) is timed the same way first.

Run::

    .venv/bin/python bench/ems_restore.py [--agents 30000] [--pg] [--baseline] [--serve]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from _battery_birth import battery_about, battery_soc_pct, battery_telemetry_json  # noqa: E402

from sef.ems._births import BirthTracker  # noqa: E402
from sef.ems._recorder import agent_record  # noqa: E402
from sef.ems._registry import Registry  # noqa: E402
from sef.ems.store import Store  # noqa: E402
from sef.ems.store._store import AgentRow, Batch, TelemetryIn  # noqa: E402

T0 = 1_767_225_600.0
GROUP = "feeder-1"
DEMO = "edu.pdx.powerlab.demo"
console = Console(width=None if sys.stdout.isatty() else 150)


def _rows(start: int, stop: int) -> Batch:
    """The store rows of agents ``start`` .. ``stop - 1`` (agent row + 2 properties)."""
    from sef.interface import builtin_xml

    refs = {
        name: hashlib.sha256(builtin_xml(name).encode()).hexdigest() for name in (DEMO, "sef.Agent")
    }
    batch = Batch()
    for i in range(start, stop):
        agent = f"bat-{i:07d}"
        ts = T0 + i / 1000.0
        about = battery_about(agent)
        soc = battery_soc_pct(i)
        telemetry = battery_telemetry_json(ts, soc)
        batch.agents[agent] = AgentRow(
            agent, True, int(ts * 1000), about, refs, [GROUP], ts, ts + 30, ts, None, None, 0
        )
        for seq, (key, value) in enumerate(
            ((f"{DEMO}.AssetName", agent), (f"{DEMO}.Telemetry", telemetry)), start=2
        ):
            batch.telemetry.append(TelemetryIn(agent, key, ts, seq, ts + 0.01, json.dumps(value)))
    return batch


def fill(store: Store, n: int, label: str) -> None:
    with Progress(
        TextColumn(f"fill {label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("fill", total=n)
        for start in range(0, n, 2000):
            stop = min(n, start + 2000)
            store.write_batch(_rows(start, stop))
            progress.update(task, completed=stop)


# -- the pre-change read side, for the baseline ------------------------------------------


def _old_load_agents(store: Store) -> list[Any]:
    import sqlalchemy as sa

    from sef.ems.store._schema import agents

    with store.engine.connect() as connection:
        rows = connection.execute(sa.select(agents)).mappings().all()
    return [AgentRow(**dict(row)) for row in rows]


def _old_load_properties(store: Store) -> dict[str, dict[str, tuple[Any, float | None, float]]]:
    import sqlalchemy as sa

    from sef.ems.store._schema import properties

    out: dict[str, dict[str, tuple[Any, float | None, float]]] = {}
    with store.engine.connect() as connection:
        for row in connection.execute(sa.select(properties)):
            out.setdefault(row.agent_id, {})[row.key] = (
                json.loads(row.value),
                row.ts,
                row.received,
            )
    return out


def _old_restore(rows: list[Any], props: dict[str, Any]) -> Registry:
    from sef.ems._records import AgentRecord, PropertyValue

    registry = Registry(freeze_every=None)
    births = BirthTracker(registry)
    for row in rows:
        record = AgentRecord(
            row.agent_id,
            online=row.online,
            bdseq=row.bdseq,
            about=dict(row.about),
            interfaces=dict(row.interfaces),
            groups=list(row.groups),
            properties={
                k: PropertyValue(v, ts, rx)
                for k, (v, ts, rx) in props.get(row.agent_id, {}).items()
            },
            first_seen=row.first_seen,
            last_seen=row.last_seen,
            online_since=row.online_since,
            offline_since=row.offline_since,
            offline_reason=row.offline_reason,
            gaps=row.gaps,
        )
        registry.restore(record)
        if record.about:  # (the old BirthTracker.restored decoded each About)
            births.restored(record)
    registry.sorted_ids()
    return registry


def _new_restore(rows: list[Any], props: dict[str, Any]) -> Registry:
    """What ``EMS.start`` does with the loaded rows."""
    from sef.ems.store._reads import _gc_paused

    registry = Registry(freeze_every=None)
    births = BirthTracker(registry)
    with _gc_paused():
        for row in rows:
            record = agent_record(row, props.get(row.agent_id, ()))
            registry.restore(record)
            births.restored(record)
    registry.sorted_ids()
    return registry


def _best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        out = None
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def measure(
    store: Store, n: int, repeat: int, baseline: bool
) -> list[tuple[str, dict[str, float]]]:
    results = []
    variants: list[tuple[str, Callable[[], Any], Callable[[], Any], Callable[..., Registry]]]
    variants = [("new", store.load_agents, store.load_property_texts, _new_restore)]
    if baseline:
        variants.insert(
            0,
            (
                "old",
                lambda: _old_load_agents(store),
                lambda: _old_load_properties(store),
                _old_restore,
            ),
        )
    for name, load_agents, load_properties, restore in variants:
        t_agents, rows = _best(load_agents, repeat)
        t_props, props = _best(load_properties, repeat)
        t_restore, registry = _best(functools.partial(restore, rows, props), repeat)
        assert len(registry.agents) == n, (len(registry.agents), n)
        check = registry.agents[f"bat-{n - 1:07d}"]
        assert check.about["DeviceName"] == check.agent_id and check.groups == (GROUP,)
        assert check.prop(DEMO, "Telemetry")["Sys_SOC"][0] == "d"
        assert len(registry.group_members(GROUP)) == n
        results.append(
            (name, {"load_agents": t_agents, "load_properties": t_props, "restore": t_restore})
        )
        del rows, props, registry
    return results


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(db_url: str, n: int, src: Path, label: str, timeout_s: float = 300.0) -> float:
    """Seconds from starting ``sef ems`` (the package under ``src``) on the store at
    ``db_url`` until its ``/health`` answers with all ``n`` agents and the broker
    connected; ``nan`` if it does not within ``timeout_s``. The EMS is then SIGKILLed."""
    from sef.broker import Mosquitto

    port = _free_port()
    with Mosquitto() as broker:
        env = dict(os.environ, PYTHONPATH=str(src))
        argv = [sys.executable, "-m", "sef", "ems", "--insecure", "--db", db_url]
        argv += ["--broker", broker.url, "--api", f"127.0.0.1:{port}", "--max-agents", "0"]
        t0 = time.perf_counter()
        ems = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=src
        )
        try:
            with Progress(
                TextColumn(f"sef ems ({label}) to /health"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            ) as progress:
                progress.add_task("serve", total=None)
                while time.perf_counter() - t0 < timeout_s and ems.poll() is None:
                    try:
                        with urllib.request.urlopen(
                            f"http://127.0.0.1:{port}/health", timeout=5
                        ) as answer:
                            body = json.loads(answer.read())
                    except (OSError, ValueError):
                        time.sleep(0.05)
                        continue
                    if body.get("agents") == n and body.get("broker_connected"):
                        return time.perf_counter() - t0
                    time.sleep(0.05)
            return float("nan")
        finally:
            ems.kill()
            ems.wait()


def _old_tree(rev: str, into: str) -> Path:
    """The package as of ``rev`` (``git archive``), for the baseline EMS process."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return Path(into) / "src"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=30_000, help="fleet size (100000: large)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per step (best is kept)")
    parser.add_argument("--pg", action="store_true", help="also a PostgreSQL store")
    parser.add_argument("--baseline", action="store_true", help="also the old read side")
    parser.add_argument(
        "--serve", action="store_true", help="also time `sef ems` start to /health (SQLite)"
    )
    parser.add_argument("--base", default="095eaae", help="baseline revision for --serve")
    args = parser.parse_args()
    load = os.getloadavg()
    console.print(f"{args.agents} agents; load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    backends: list[tuple[str, str]] = []
    serves: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="sef-restore-") as tmp:
        backends.append(("sqlite", f"sqlite:///{tmp}/ems.db"))
        server = None
        if args.pg:
            from sef.ems.store.pgserver import PostgresServer

            os.environ["PATH"] += os.pathsep + "/usr/local/sbin:/usr/sbin:/sbin"
            server = PostgresServer().start()
            backends.append(("postgresql", server.create_database("restore_bench")))
        table = Table(title=f"EMS restore of {args.agents} agents (best of {args.repeat})")
        for column in ("store", "read side", "load_agents s", "load_properties s", "restore s"):
            table.add_column(column)
        table.add_column("total s", justify="right")
        table.add_column("µs/agent", justify="right")
        table.add_column("vs old", justify="right")
        try:
            for label, url in backends:
                store = Store.open(url, durable=False)
                fill(store, args.agents, label)
                results = measure(store, args.agents, args.repeat, args.baseline)
                store.close()
                if args.serve and label == "sqlite":
                    old = _old_tree(args.base, tmp) if args.baseline else None
                    serves = [("new", serve(url, args.agents, REPO / "src", "new"))]
                    if old is not None:
                        serves.insert(0, ("old", serve(url, args.agents, old, args.base)))
                old_total = None
                for name, t in results:
                    total = sum(t.values())
                    old_total = total if name == "old" else old_total
                    ratio = (
                        "" if old_total is None or name == "old" else f"{old_total / total:.1f}x"
                    )
                    table.add_row(
                        label,
                        name,
                        f"{t['load_agents']:.2f}",
                        f"{t['load_properties']:.2f}",
                        f"{t['restore']:.2f}",
                        f"{total:.2f}",
                        f"{total / args.agents * 1e6:.1f}",
                        ratio,
                    )
        finally:
            if server is not None:
                server.stop()
    console.print(table)
    for name, seconds in serves:
        console.print(
            f"sef ems ({name}) start -> /health with {args.agents} agents: {seconds:.1f} s"
        )
    load = os.getloadavg()
    console.print(f"load after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()

"""Bench (issue 16): memory per agent and time to absorb births of the EMS registry at
10 k / 100 k / 1 M agents, against a baseline measured in the same run.

Method
------
Each (layout, size) runs in its own subprocess (clean memory). The subprocess builds the
births of ``size`` agents the way a virtual battery publishes them (``sef agent
virtual-battery``: its retained status, its About — the agent's real About fields, the
demo and ``sef.Agent`` interface refs, one group — and its ``AssetName`` and
``Telemetry`` properties, the real 17-key ``a{sv}`` telemetry; ``--xml`` adds the two
per-agent interface XML documents of a protocol-version-1 agent) in batches of
``--batch`` agents, and times only :meth:`Registry.handle` over them (message building
is not timed). Time is the process's CPU time in ``handle`` (the machine is shared: the wall time is
printed too). Memory is the growth of the process's resident set (RSS) over the whole
fill, after the allocator was warmed with one batch (so the batches' own memory is not
counted), divided by the agents. Garbage-collector time during the fill is measured
with :data:`gc.callbacks`.

Layouts:

* ``new``: this tree's registry (compact records, no parse cache, group index);
  ``--freeze-every N`` sets ``Registry.freeze_every`` (it calls :func:`gc.freeze` by
  itself every N agents added; 0: never);
* ``old``: the registry as of ``--base`` (default ``2682b44``, before issue 16),
  extracted with ``git archive`` into a temporary directory and imported from there;
  run up to ``--baseline-max`` agents (it takes 7.5 KB and >100 s at 1 M);
* ``bytes``: a floor: a dict of agent id -> the raw payloads, each ``json.loads``-ed
  once (what a store that keeps bytes and validates nothing costs).

It prints a table (KB/agent, absorb s, births/s, GC s, group_members and sorted_ids
times) with ratios new/old and PASS/FAIL against the targets (1 M agents: <= 2 KB per
agent, absorbed in < 60 s). It exits 0 even when a target is missed: a measurement.

Run::

    .venv/bin/python bench/registry.py [--sizes 10000,100000,1000000]
        [--baseline-max 100000] [--freeze-every 100000] [--xml] [--base REV]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

TARGET_KB = 2.0
TARGET_S = 60.0
T0 = 1_767_225_600.0
GROUP = "feeder-1"
REPO = Path(__file__).resolve().parent.parent

console = Console(width=None if sys.stdout.isatty() else 150)


# -- the child: fill one registry ---------------------------------------------------------


def _rss() -> int:
    """Resident set size of this process, bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _births(start: int, stop: int, xml: bool) -> Iterator[Any]:
    """The birth messages of agents ``start`` .. ``stop - 1`` (status, About, AssetName,
    Telemetry; with ``xml`` the two interface XML documents too)."""
    from _battery_birth import battery_about, battery_soc_pct, battery_telemetry_json

    from sef.bus import About, InterfaceRef, Message, PropertyUpdate, Status, Topics
    from sef.interface import builtin_xml

    topics = Topics()
    demo, agent_iface = "edu.pdx.powerlab.demo", "sef.Agent"
    xmls = {name: builtin_xml(name).encode() for name in (demo, agent_iface)}
    refs = [InterfaceRef(n, hashlib.sha256(x).hexdigest()) for n, x in xmls.items()]
    for i in range(start, stop):
        agent = f"bat-{i:07d}"
        ts = T0 + i / 1000.0
        bdseq = int(ts * 1000)
        fields = battery_about(agent)
        soc = battery_soc_pct(i)
        telemetry = battery_telemetry_json(ts, soc)
        yield Message(topics.status(agent), Status(True, bdseq, ts, 60, 0).to_payload(), 1, True)
        yield Message(
            topics.about(agent),
            About(fields, refs, [GROUP], bdseq, ts, 1).to_payload(),
            1,
            True,
        )
        if xml:
            for name, doc in xmls.items():
                yield Message(topics.interface_xml(agent, name), doc, 1, True)
        yield Message(
            topics.prop(agent, demo, "AssetName"),
            PropertyUpdate(agent, ts, 2).to_payload(),
            1,
            True,
        )
        yield Message(
            topics.prop(agent, demo, "Telemetry"),
            PropertyUpdate(telemetry, ts, 3).to_payload(),
            1,
            True,
        )


class _BytesStore:
    """The floor: agent id -> raw payloads, each decoded once (nothing kept decoded)."""

    def __init__(self) -> None:
        self.agents: dict[str, list[bytes]] = {}

    def handle(self, message: Any, now: float) -> list[Any]:
        json.loads(message.payload) if message.payload[:1] == b"{" else None
        agent = message.topic.split("/", 3)[2]
        kept = self.agents.get(agent)
        if kept is None:
            kept = self.agents[agent] = []
        kept.append(message.payload)
        return []


def child(
    layout: str, n: int, batch: int, xml: bool, freeze_every: int, traced: bool
) -> dict[str, Any]:
    """Fill one registry with ``n`` agents' births; its figures (JSON-able)."""
    import sef

    gc_time = [0.0, 0]
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            gc_time[0] += time.perf_counter() - started[0]
            gc_time[1] += info["generation"] == 2

    if traced:
        tracemalloc.start()
    # RSS with one batch of messages alive (as at the end, with the last batch alive)
    messages = list(_births(n, n + min(batch, n), xml))
    gc.collect()
    rss0 = _rss()
    traced0 = tracemalloc.get_traced_memory()[0] if traced else 0
    del messages
    registry: Any
    if layout == "bytes":
        registry = _BytesStore()
    else:
        from sef.ems._admission import Admission
        from sef.ems._registry import Registry

        registry = Registry(admission=Admission.open())
        if layout == "new":
            registry.freeze_every = freeze_every or None
    gc.callbacks.append(on_gc)
    absorb = cpu = 0.0
    for start in range(0, n, batch):
        messages = list(_births(start, min(start + batch, n), xml))
        handle = registry.handle
        t0, c0 = time.perf_counter(), time.process_time()
        for message in messages:
            handle(message, T0)
        absorb += time.perf_counter() - t0
        cpu += time.process_time() - c0
        print(f"P {min(start + batch, n)} {n}", flush=True)
    gc.callbacks.remove(on_gc)
    gc.collect()
    rss1 = _rss()
    traced1 = tracemalloc.get_traced_memory()[0] if traced else 0
    del messages
    out: dict[str, Any] = {
        "layout": layout,
        "agents": n,
        "stored": len(registry.agents),
        "sef": str(Path(sef.__file__).parent),
        "rss_mb": rss1 / 1e6,
        "bytes_per_agent": (rss1 - rss0) / n,
        "traced_per_agent": (traced1 - traced0) / n if traced else None,
        "absorb_s": absorb,
        "cpu_s": cpu,
        "gc_s": gc_time[0],
        "gc_full": gc_time[1],
        "messages_per_agent": 6 if xml else 4,
    }
    if layout != "bytes":
        record = registry.get(f"bat-{n - 1:07d}")
        out["complete"] = sum(
            1 for r in registry.agents.values() if r.online and r.groups and len(r.properties) == 2
        )
        out["check"] = record is not None and record.about.get("DeviceId") == record.agent_id
        t0 = time.perf_counter()
        members = registry.group_members(GROUP)
        out["group_members_s"] = time.perf_counter() - t0
        out["members"] = len(members)
        t0 = time.perf_counter()
        registry.sorted_ids()
        out["sorted_first_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        registry.sorted_ids()
        out["sorted_again_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        registry.page(after=f"bat-{n // 2:07d}", limit=100)
        out["page_s"] = time.perf_counter() - t0
    return out


# -- the parent: one subprocess per (layout, size) ----------------------------------------


def old_tree(base: str, into: Path) -> Path:
    """``src`` of revision ``base`` extracted into ``into``; the directory to import from."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", base, "src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def run_child(
    layout: str,
    n: int,
    args: argparse.Namespace,
    pythonpath: Path | None,
    progress: Progress,
    traced: bool = False,
) -> dict[str, Any]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    cmd = [sys.executable, __file__, "--child", layout, str(n), "--batch", str(args.batch)]
    cmd += ["--freeze-every", str(args.freeze_every)] + (["--xml"] if args.xml else [])
    cmd += ["--traced"] if traced else []
    task = progress.add_task(f"{layout} {n:,} agents{' (tracemalloc)' * traced}", total=n)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    result: dict[str, Any] = {}
    for line in proc.stdout:
        if line.startswith("P "):
            progress.update(task, completed=int(line.split()[1]))
        elif line.startswith("R "):
            result = json.loads(line[2:])
    if proc.wait() != 0 or not result:
        raise RuntimeError(f"{layout} {n}: child failed (exit {proc.returncode})")
    progress.remove_task(task)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="agent counts")
    ap.add_argument("--baseline-max", type=int, default=100_000, help="largest old layout run")
    ap.add_argument("--base", default="2682b44", help="revision of the old layout")
    ap.add_argument("--batch", type=int, default=20_000, help="agents built per batch")
    ap.add_argument(
        "--freeze-every", type=int, default=10_000, help="Registry.freeze_every (0: never)"
    )
    ap.add_argument("--xml", action="store_true", help="per-agent interface XML (v1)")
    ap.add_argument("--no-bytes", action="store_true", help="skip the bytes floor")
    ap.add_argument(
        "--tracemalloc",
        action="store_true",
        help="also measure memory with tracemalloc (one more run per size up to --baseline-max)",
    )
    ap.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child", nargs=2, metavar=("LAYOUT", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        res = child(
            args.child[0],
            int(args.child[1]),
            args.batch,
            args.xml,
            args.freeze_every,
            args.traced,
        )
        print("R " + json.dumps(res), flush=True)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    console.print(
        f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min); "
        f"Python {sys.version.split()[0]}; {os.cpu_count()} CPUs"
    )
    results: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress,
    ):
        old = old_tree(args.base, Path(tmp))
        for n in sizes:
            layouts = ["new"] + (["old"] if n <= args.baseline_max else [])
            layouts += [] if args.no_bytes else ["bytes"]
            for layout in layouts:
                res = run_child(layout, n, args, old if layout == "old" else None, progress)
                results.append(res)
                if args.tracemalloc and layout in ("new", "old") and n <= args.baseline_max:
                    traced = run_child(
                        layout, n, args, old if layout == "old" else None, progress, True
                    )
                    res["traced_per_agent"] = traced["traced_per_agent"]
                console.print(
                    f"{layout:>5} {n:>9,}: {res['bytes_per_agent'] / 1024:6.2f} KB/agent, "
                    f"absorb {res['absorb_s']:7.2f} s wall, {res['cpu_s']:7.2f} s CPU "
                    f"(GC {res['gc_s']:.2f} s), "
                    f"RSS {res['rss_mb']:,.0f} MB  (sef from {res['sef']})",
                    markup=False,
                )
    report(results, args)
    console.print(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    table = Table(title=f"Registry: births absorbed ({'6' if args.xml else '4'} messages/agent)")
    for col in (
        "layout",
        "agents",
        "KB/agent (RSS)",
        "KB/agent (traced)",
        "absorb s (wall)",
        "CPU s",
        "births/s (CPU)",
        "GC s",
        "full GCs",
        "group_members ms",
        "sorted_ids ms (1st/2nd)",
        "complete",
    ):
        table.add_column(col, justify="left" if col == "layout" else "right")
    for r in results:
        extra = (
            (
                f"{r['group_members_s'] * 1e3:.1f}",
                f"{r['sorted_first_s'] * 1e3:.0f}/{r['sorted_again_s'] * 1e3:.3f}",
                f"{r['complete']:,}",
            )
            if "group_members_s" in r
            else ("-", "-", "-")
        )
        table.add_row(
            r["layout"],
            f"{r['agents']:,}",
            f"{r['bytes_per_agent'] / 1024:.2f}",
            "-" if r.get("traced_per_agent") is None else f"{r['traced_per_agent'] / 1024:.2f}",
            f"{r['absorb_s']:.2f}",
            f"{r['cpu_s']:.2f}",
            f"{r['agents'] / r['cpu_s']:,.0f}",
            f"{r['gc_s']:.2f}",
            str(r["gc_full"]),
            *extra,
        )
    console.print(table)
    by = {(r["layout"], r["agents"]): r for r in results}
    for n in sorted({r["agents"] for r in results}):
        new, old = by.get(("new", n)), by.get(("old", n))
        if new and old:
            memory = new["bytes_per_agent"] / old["bytes_per_agent"]
            console.print(
                f"{n:>9,} agents: new/old memory {memory:.2f}, "
                f"absorb CPU time {new['cpu_s'] / old['cpu_s']:.2f}"
            )
    big = by.get(("new", max(r["agents"] for r in results)))
    if big is None:
        return

    def verdict(ok: bool) -> str:
        return "[bold green]PASS[/bold green]" if ok else "[bold red]FAIL[/bold red]"

    kb = big["bytes_per_agent"] / 1024
    console.print(
        f"{verdict(kb <= TARGET_KB)} {big['agents']:,} agents: {kb:.2f} KB/agent "
        f"(target <= {TARGET_KB} KB)"
    )
    console.print(
        f"{verdict(big['cpu_s'] < TARGET_S)} {big['agents']:,} agents absorbed in "
        f"{big['cpu_s']:.1f} s of CPU ({big['absorb_s']:.1f} s wall on this shared machine; "
        f"target < {TARGET_S:.0f} s)"
    )
    if big.get("complete") != big["agents"]:
        console.print("[bold red]WARNING: not every agent is complete in the registry[/bold red]")


if __name__ == "__main__":
    main()

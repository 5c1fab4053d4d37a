"""Issue 16 acceptance 3: SIGKILL a broker node and the leading EMS worker during ingest.

On a :class:`~sef.cluster.LocalCluster` (3 NATS nodes, 2 ``sef cluster worker``
processes, a real PostgreSQL) a ``sef swarm`` of N agents (QoS 0 subscriptions, QoS 1
sequence-numbered Telemetry, ``--puback-log``) runs until both workers list all N
online; then, during ingest, broker node 1 and the leader worker are SIGKILLed within
1 s and a group call to g1 is issued through the surviving worker's API
(``POST /groups/g1/commands``). Checks:

a. exactly once: every PUBACKed (agent, Telemetry ts) is in the store's ``telemetry``
   table once (SQL count per (agent, ts)), none missing;
b. every agent back online within 30 s of the kill: the swarm has all N born again and
   the survivor's ``GET /agents`` lists all N online, every agent that started on node 1
   with a ``bdseq`` newer than the kill (a new session);
c. the group call reaches every agent once it is back: the swarm's receipts per call id.
   Agents that were between two brokers when it was published (QoS 0, no session) do not
   get it; the control app re-issues a group command for members that did not answer
   (``docs/cluster-plan.md`` §3): here one group re-issue once every agent is back,
   counted apart;
d. figures: stored msg/s and worker CPU per message with 2 workers (before) and 1 (after),
   group-call fan-out p50/p99 (before the failure, baseline, and the re-issue), load.

    .venv/bin/python bench/cluster_failover.py --agents 1000
"""

from __future__ import annotations

import argparse
import atexit
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sef.bus import start_index
from sef.cluster import LocalCluster

console = Console(width=150)
CLK = os.sysconf("SC_CLK_TCK")
COMMAND = {"cmds": [["charge", 2, 600]], "timeout_s": 10}


def uptime() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of ``pid``, 0 when gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK
    except (OSError, IndexError, ValueError):
        return 0.0


def swarm_stats(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def health(api: str) -> dict[str, Any]:
    try:
        return dict(httpx.get(f"{api}/health", timeout=10).json())
    except (httpx.HTTPError, ValueError):
        return {}


def online(api: str) -> int:
    """Agents the worker at ``api`` lists online (``/health``)."""
    return int(health(api).get("online", 0))


def agents_page_all(api: str) -> list[dict[str, Any]]:
    """Every agent of ``GET /agents`` (pages of 1 000)."""
    out: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if cursor:
            params["cursor"] = cursor
        response = httpx.get(f"{api}/agents", params=params, timeout=30)
        response.raise_for_status()
        out.extend(response.json())
        cursor = response.headers.get("X-Next-Cursor")
        if not cursor:
            return out


def stored_telemetry(url: str) -> Counter[tuple[str, float]]:
    """(agent, ts) -> rows of Telemetry samples in the store."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            rows = c.execute(
                sa.text(
                    "SELECT agent_id, ts, count(*) FROM telemetry WHERE key LIKE '%Telemetry' "
                    "GROUP BY agent_id, ts"
                )
            ).all()
    finally:
        engine.dispose()
    return Counter({(a, round(float(ts), 6)): int(n) for a, ts, n in rows})


def stored_count(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            return int(c.execute(sa.text("SELECT count(*) FROM telemetry")).scalar_one())
    finally:
        engine.dispose()


def acked_log(path: Path) -> Counter[tuple[str, float]]:
    out: Counter[tuple[str, float]] = Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            agent, ts, _seq = line.split()
            out[(agent, round(float(ts), 6))] += 1
    return out


def wait(
    progress: Progress, what: str, total: int, value: Callable[[], int], timeout_s: float
) -> tuple[bool, float]:
    """Poll ``value`` until it reaches ``total``; (reached, seconds)."""
    task = progress.add_task(what, total=total)
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        got = value()
        progress.update(task, completed=got)
        if got >= total:
            return True, time.monotonic() - start
        time.sleep(0.5)
    return False, time.monotonic() - start


def not_back(api: str, node1: set[str], kill_ms: int) -> str:
    """Why agents do not count as back on ``api``: status counts, stale sessions."""
    try:
        listed = agents_page_all(api)
    except httpx.HTTPError as exc:
        return f"GET /agents failed: {exc!r}"
    status = Counter(str(a.get("status")) for a in listed)
    stale = [a["id"] for a in listed if a["id"] in node1 and (a.get("bdseq") or 0) < kill_ms]
    offline = [a["id"] for a in listed if a.get("status") != "online"]
    return (
        f"{len(listed)} listed, {dict(status)}; {len(stale)} of node 1 with the old session"
        f" {stale[:5]}; not online {offline[:5]}"
    )


def call_after(calls: dict[str, Any], at: float) -> dict[str, Any]:
    """The first group call (not a per-agent ``reconcile-`` one) the swarm received after
    ``at`` (Unix s): how a call is found when the API did not answer with its id."""
    found = [
        c
        for k, c in calls.items()
        if not k.startswith("reconcile-") and (c.get("first") or 0) >= at and c["agents"] > 1
    ]
    return dict(min(found, key=lambda c: c["first"])) if found else {}


def group_call(api: str) -> dict[str, Any]:
    try:
        response = httpx.post(f"{api}/groups/g1/commands", json=COMMAND, timeout=60)
        return dict(response.json()) | {"http": response.status_code}
    except (httpx.HTTPError, ValueError) as exc:
        return {"error": repr(exc)}


def per_cpu(cpu: float) -> str:
    """Worker CPU per stored message, its inverse and the load."""
    return (
        f"{cpu * 1000:.2f} ms worker CPU/msg ({1 / max(cpu, 1e-9):.0f} msg per CPU s); {uptime()}"
    )


def ingest_window(url: str, pids: list[int], seconds: float) -> tuple[float, float]:
    """(stored msg/s, worker CPU s per stored message) over ``seconds``."""
    n0, c0, t0 = stored_count(url), sum(map(cpu_s, pids)), time.monotonic()
    time.sleep(seconds)
    n1, c1, t1 = stored_count(url), sum(map(cpu_s, pids)), time.monotonic()
    stored = max(1, n1 - n0)
    return stored / (t1 - t0), (c1 - c0) / stored


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=ap_fmt())
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--processes", type=int, default=2, help="swarm processes")
    ap.add_argument("--telemetry-s", type=float, default=10.0)
    ap.add_argument("--connect-rate", type=float, default=300.0)
    ap.add_argument("--ack-wait", type=float, default=10.0, help="JetStream ack_wait, s")
    ap.add_argument("--window-s", type=float, default=15.0, help="ingest measuring window, s")
    ap.add_argument("--born-timeout-s", type=float, default=600.0)
    ap.add_argument(
        "--js-api-timeout",
        type=float,
        default=None,
        help="NATS mqtt { js_api_timeout }, s (default: NATS's 5 s)",
    )
    args = ap.parse_args()
    n: int = args.agents
    rows: list[tuple[str, str, str]] = []
    verdicts: list[tuple[str, bool, str]] = []
    tmp = Path(tempfile.mkdtemp(prefix="sef-accept3-"))
    log_path, stats_path = tmp / "puback.log", tmp / "swarm.json"
    console.print(f"load at start: {uptime()}; files in {tmp}")
    cluster = LocalCluster(
        nodes=3,
        workers=2,
        workdir=tmp,
        ack_wait_s=args.ack_wait,
        max_agents=n + 1000,
        js_api_timeout_s=args.js_api_timeout,
    )
    t = time.monotonic()
    atexit.register(cluster.stop)  # also on Ctrl-C or an error (stop twice is harmless)
    cluster.start(timeout_s=180)
    assert cluster.broker is not None and cluster.store_url is not None
    store = cluster.store_url
    rows.append(
        ("cluster up (3 nodes, PostgreSQL, 2 workers)", f"{time.monotonic() - t:.1f} s", uptime())
    )
    apis = cluster.api_urls
    err_file = (tmp / "swarm.err").open("w")  # closed with the process, at exit
    swarm = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sef",
            "swarm",
            "--insecure",
            "--quiet",
            "--agents",
            str(n),
            "--broker",
            ",".join(cluster.broker.urls),
            "--group",
            "g1",
            "--telemetry-s",
            f"{args.telemetry_s:g}",
            "--processes",
            str(args.processes),
            "--connect-rate",
            f"{args.connect_rate:g}",
            "--sub-qos",
            "0",
            "--puback-log",
            str(log_path),
            "--stats",
            str(stats_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=err_file,
    )
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            ok, took = wait(
                progress,
                "swarm born",
                n,
                lambda: int(swarm_stats(stats_path).get("connected", 0)),
                args.born_timeout_s,
            )
            s = swarm_stats(stats_path)
            rows.append(
                (
                    "swarm born",
                    f"{took:.1f} s ({n / max(took, 0.1):.0f}/s)",
                    f"failures {s.get('connect_failures')}, lost {s.get('lost')}; {uptime()}",
                )
            )
            for i, api in enumerate(apis):
                ok_w, took_w = wait(
                    progress,
                    f"worker {i} lists online",
                    n,
                    functools.partial(online, api),
                    180,
                )
                rows.append((f"worker {i} lists {n} online", f"{took_w:.1f} s more", uptime()))
                ok = ok and ok_w
        if not ok:
            console.print(
                f"[red]not all born/listed[/]: {swarm_stats(stats_path).get('connected')}"
                f" born, health {[health(a) for a in apis]}"
            )
            return 1
        pids = [p.process.pid for p in cluster.procs]
        rate2, cpu2 = ingest_window(store, pids, args.window_s)
        offered = n / args.telemetry_s
        rows.append(
            (
                "ingest, 2 workers",
                f"{rate2:.0f} msg/s stored (offered {offered:.0f})",
                per_cpu(cpu2),
            )
        )
        base = group_call(apis[0])
        time.sleep(3)
        calls = swarm_stats(stats_path).get("calls", {})
        b = calls.get(base.get("call_id", ""), {})
        rows.append(
            (
                "group call before (baseline)",
                f"{b.get('agents')} of {n} agents",
                f"p50 {b.get('p50_ms')} / p99 {b.get('p99_ms')} ms; API {base.get('status')},"
                f" {len(base.get('replies', []))} replies",
            )
        )
        # -- the failure ---------------------------------------------------------------
        leaders = [bool(health(a).get("leader")) for a in apis]
        leader = leaders.index(True) if True in leaders else 1
        survivor = 1 - leader
        node_proc = cluster.broker.members[1].process
        assert node_proc is not None
        lost_before = int(swarm_stats(stats_path).get("lost", 0))
        kill_at = time.time()
        os.kill(node_proc.pid, signal.SIGKILL)  # both first, then the helpers' bookkeeping
        os.kill(cluster.procs[leader].process.pid, signal.SIGKILL)
        kill_took = time.time() - kill_at
        cluster.broker.kill(1)
        cluster.kill_worker(leader)
        console.print(
            f"SIGKILL node 1 and worker {leader} (leader: {leaders}) in {kill_took:.3f} s;"
            f" load {uptime()}"
        )
        pool = ThreadPoolExecutor(1)
        time.sleep(0.5)
        during_at = time.time()
        during_future = pool.submit(group_call, apis[survivor])  # while we watch them return
        swarm_back: list[float] = []

        node1 = {f"swarm-{i:06d}" for i in range(n) if start_index(f"swarm-{i:06d}", 3) == 1}
        kill_ms = int(kill_at * 1000)

        def back() -> int:
            now = swarm_stats(stats_path)
            connected = int(now.get("connected", 0))
            if connected < n or int(now.get("lost", 0)) < lost_before + len(node1):
                return connected // 2  # not yet seen the node-1 agents drop and come back
            if not swarm_back:
                swarm_back.append(time.time() - kill_at)
            try:
                listed = agents_page_all(apis[survivor])
            except httpx.HTTPError:
                return n // 2
            good = sum(
                1
                for a in listed
                if a.get("status") == "online"
                and (a["id"] not in node1 or (a.get("bdseq") or 0) >= kill_ms)
            )
            return good

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            ok_back, _ = wait(progress, "back online (swarm + survivor API)", n, back, 180)
        back_s = time.time() - kill_at
        if not ok_back:
            console.print(f"not back: {not_back(apis[survivor], node1, kill_ms)}")
        during = during_future.result()
        pool.shutdown()
        rows.append(
            (
                "group call during the failure (API)",
                f"HTTP {during.get('http')}: {during.get('status')}",
                f"{len(during.get('replies', []))} replies, "
                f"{len(during.get('missing', []))} missing {during.get('error', '')}",
            )
        )
        s = swarm_stats(stats_path)
        verdicts.append(
            (
                "(b) every agent back online within 30 s",
                ok_back and back_s <= 30,
                f"{back_s:.1f} s after the kill ({len(node1)} agents started on node 1;"
                f" failovers {s.get('failovers')}, lost {s.get('lost')})",
            )
        )
        h = health(apis[survivor])
        verdicts.append(
            (
                "control app on the survivor",
                bool(h.get("leader")),
                f"/health leader={h.get('leader')}",
            )
        )
        rows.append(
            (
                "swarm: every agent born again",
                f"{swarm_back[0] if swarm_back else -1:.1f} s",
                "after the kill (the swarm's count; the API check follows)",
            )
        )
        calls = swarm_stats(stats_path).get("calls", {})
        d = calls.get(during.get("call_id", "")) or call_after(calls, during_at)
        rows.append(
            (
                "group call during the failure (swarm)",
                f"{d.get('agents')} of {n} agents",
                f"dups {d.get('duplicates')}, p50 {d.get('p50_ms')} / p99 {d.get('p99_ms')} ms",
            )
        )
        again_at = time.time()
        again = group_call(apis[survivor]) if (d.get("agents") or 0) < n else {}
        time.sleep(3)
        calls = swarm_stats(stats_path).get("calls", {})
        r = (calls.get(again.get("call_id", "")) or call_after(calls, again_at)) if again else {}
        if again:
            rows.append(
                (
                    "group call re-issued once all are back",
                    f"{r.get('agents')} of {n} agents",
                    f"dups {r.get('duplicates')}, p50 {r.get('p50_ms')} / p99 {r.get('p99_ms')} ms;"
                    f" API {again.get('status')}, {len(again.get('missing', []))} missing"
                    f" {again.get('error', '')}",
                )
            )
        reached = max(int(d.get("agents") or 0), int(r.get("agents") or 0))
        verdicts.append(
            (
                "(c) group call reaches every agent once back",
                reached >= n,
                f"during: {d.get('agents')}, "
                f"re-issue: {r.get('agents') if again else 'not needed'}",
            )
        )
        survivors = [cluster.procs[survivor].process.pid]
        rate1, cpu1 = ingest_window(store, survivors, args.window_s)
        rows.append(
            (
                "ingest, 1 worker (after)",
                f"{rate1:.0f} msg/s stored (offered {offered:.0f})",
                per_cpu(cpu1),
            )
        )
        nats_cpu = sum(
            cpu_s(m.process.pid) for m in cluster.broker.members if m.process and m.running
        )
        rows.append(("NATS CPU (2 surviving nodes, whole run)", f"{nats_cpu:.1f} s", ""))
    finally:
        swarm.send_signal(signal.SIGTERM)
        try:
            swarm.wait(40)
        except subprocess.TimeoutExpired:
            swarm.kill()
            swarm.wait()
    # -- exactly once ---------------------------------------------------------------------
    try:
        acked = acked_log(log_path)
        twice_logged = sum(1 for v in acked.values() if v > 1)
        deadline = time.monotonic() + args.ack_wait * 3 + 30
        while True:
            stored = stored_telemetry(store)
            missing = [k for k in acked if k not in stored]
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(2)
        dups = {k: v for k, v in stored.items() if v > 1}
        verdicts.insert(
            0,
            (
                "(a) every PUBACKed update stored exactly once",
                not missing and not dups,
                f"{len(acked)} acked ({twice_logged} logged twice), {len(missing)} missing,"
                f" {len(dups)} stored more than once; {sum(stored.values())} Telemetry rows",
            ),
        )
        if missing:
            console.print(f"missing (first 10): {sorted(missing)[:10]}")
    finally:
        cluster.stop()
    table = Table(title=f"acceptance 3: {n} swarm agents, 3 NATS nodes, 2 workers, PostgreSQL")
    for col in ("step", "result", "detail"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for name, passed, detail in verdicts:
        console.print(f"{'[green]PASS' if passed else '[red]FAIL'}[/] {name}: {detail}")
    console.print(f"load at the end: {uptime()}")
    return 0 if all(p for _, p, _ in verdicts) else 1


def ap_fmt() -> type[argparse.RawDescriptionHelpFormatter]:
    return argparse.RawDescriptionHelpFormatter


if __name__ == "__main__":
    sys.exit(main())

"""Bench (issue 16, acceptance 1): a fresh ``sef ems`` lists a ``sef swarm`` fleet, again
after SIGKILL, and a group call through the API reaches every agent.

Method
------
1. The RLIMIT_NOFILE hard limit caps what one Mosquitto process can hold (one socket per
   agent): past it the bench caps ``--agents`` and says so (``--refuse``: exit 2).
2. A Mosquitto with SEF's production tuning for the fleet
   (:class:`sef.broker_fleet.FleetSizing`) and a swarm of ``--agents`` agents in group
   ``g1`` (:class:`sef.swarm.SwarmRunner`: connect time, worker memory).
3. **Baseline, same run**: a bare MQTT client (the swarm's lean client, no JSON decoding)
   subscribes to every agent's retained About and counts them: the time the broker needs
   to hand the fleet's births to one subscriber.
4. A fresh ``sef ems --insecure`` (subprocess, SQLite store in a temp dir, ``--api``,
   admission opened to the fleet: ``--max-agents 0 --new-agents-per-s 0``): the time
   until ``GET /agents`` (paginated, 1 000 per page) lists every agent online with its
   About (``device_name``) and groups ``["g1"]`` — checked once ``GET /health`` counts
   them all.
5. SIGKILL the EMS, start it again on the same store: the same measure, and the agents
   still incomplete (``/health`` ``agents_incomplete`` and the listing) at the end.
6. ``POST /groups/g1/commands`` (EnergyMethod): replies, and from the swarm's receipt
   statistics (per call id: agents that received it, latency receipt − call ``ts``) the
   p50/p99 receipt latency.

Targets (issue 16): listing < 60 s fresh and after restart, none incomplete, every agent
receives the group call, p99 < 1 s. The machine is shared: the load average is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from sef.broker import Mosquitto, free_port
from sef.broker_fleet import FleetSizing, agents_for_descriptors, raise_nofile_limit
from sef.bus import Call
from sef.swarm import SwarmConfig, SwarmRunner, percentile
from sef.swarm._mqtt import MqttConnection, connect_packet, subscribe_packet

PAGE = 1000
BENCH_CLIENTS = 10
"""Connections besides the agents: the EMS, the baseline client, margin."""


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


CLK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` used so far (0 when gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK
    except (OSError, IndexError, ValueError):
        return 0.0


def cpu_of(pids: dict[str, list[int]]) -> dict[str, float]:
    return {name: sum(cpu_s(p) for p in group) for name, group in pids.items()}


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class AboutCounter(MqttConnection):
    """Bare baseline client: counts retained Abouts (no decoding)."""

    def __init__(self, want: int) -> None:
        super().__init__()
        self.want, self.seen = want, 0
        self.done = asyncio.get_running_loop().create_future()

    def on_socket(self) -> None:
        self.send(connect_packet(f"bench-about-{os.getpid()}", 60))

    def on_connack(self, code: int, session_present: bool) -> None:
        self.send(subscribe_packet(self.next_packet_id(), ["sef/agents/+/about"]))

    def on_publish(self, topic: str, payload: bytes, retain: bool) -> None:
        self.seen += 1
        if self.seen >= self.want and not self.done.done():
            self.done.set_result(time.monotonic())


class Publisher(MqttConnection):
    """Bare baseline caller: publishes one group call straight to the broker."""

    def __init__(self) -> None:
        super().__init__()
        self.ready = asyncio.get_running_loop().create_future()

    def on_socket(self) -> None:
        self.send(connect_packet(f"bench-call-{os.getpid()}", 60))

    def on_connack(self, code: int, session_present: bool) -> None:
        self.ready.set_result(None)


async def direct_group_call(host: str, port: int, call_id: str) -> None:
    """Publish a group call (Ping, with a reply topic nobody reads) without the EMS."""
    loop = asyncio.get_running_loop()
    client = Publisher()
    await loop.create_connection(lambda: client, host, port)
    await asyncio.wait_for(client.ready, 10)
    now = time.time()
    call = Call(call_id, [], now, now + 60, "sef/clients/bench-direct/reply", "bench-direct")
    client.publish(b"sef/groups/g1/call/sef.Agent/Ping", call.to_payload(), 1)
    await asyncio.sleep(0.5)
    client.close()


async def receipts_of(swarm: SwarmRunner, call_id: str, n: int) -> dict[str, Any]:
    """The swarm's receipts of ``call_id`` once all ``n`` agents got it (or after 30 s)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = swarm.stats.calls().get(call_id)
        if found is not None and found.agents >= n:
            break
        await asyncio.sleep(0.5)
    found = swarm.stats.calls().get(call_id)
    if found is None:
        return {"received": 0}
    return {
        "received": found.agents, "duplicates": found.duplicates,
        "p50_ms": percentile(found.hist, 0.5), "p99_ms": percentile(found.hist, 0.99),
        "max_ms": max(found.hist), "spread_s": found.last - found.first,
    }  # fmt: skip


async def baseline(host: str, port: int, n: int, timeout_s: float) -> float | None:
    """Seconds for a bare client to receive ``n`` retained Abouts."""
    loop = asyncio.get_running_loop()
    client = AboutCounter(n)
    start = time.monotonic()
    await loop.create_connection(lambda: client, host, port)
    try:
        done: float = await asyncio.wait_for(client.done, timeout_s)
        return done - start
    except TimeoutError:
        print(f"  baseline: only {client.seen}/{n} Abouts in {timeout_s:g} s")
        return None
    finally:
        client.close()


class EmsProcess:
    """``sef ems --insecure`` on the bench's broker, store and API port."""

    def __init__(self, broker: str, db: str, api_port: int, log: Path) -> None:
        self.args = [
            sys.executable, "-m", "sef", "ems", "--insecure", "--broker", broker,
            "--id", "ems-bench", "--db", db, "--api", f"127.0.0.1:{api_port}",
            "--max-agents", "0", "--new-agents-per-s", "0",
        ]  # fmt: skip
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=out)
        return time.monotonic()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


async def listing(api: httpx.AsyncClient) -> tuple[int, int]:
    """Agents listed online with About and groups ["g1"], and agents listed in all."""
    good = total = 0
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": PAGE}
        if cursor:
            params["cursor"] = cursor
        response = await api.get("/agents", params=params, timeout=60)
        response.raise_for_status()
        page = response.json()
        total += len(page)
        good += sum(
            1
            for a in page
            if a["status"] == "online" and a.get("device_name") and a["groups"] == ["g1"]
        )
        cursor = response.headers.get("X-Next-Cursor")
        if not cursor:
            return good, total


async def time_to_list(
    api: httpx.AsyncClient, n: int, since: float, limit_s: float
) -> dict[str, Any]:
    """Poll /health, then the listing, until every agent is listed complete."""
    health: dict[str, Any] = {}
    good, up_s = 0, None
    while time.monotonic() - since < limit_s:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            health = (await api.get("/health", timeout=10)).json()
            up_s = time.monotonic() - since if up_s is None else up_s
            if health.get("online", 0) >= n and not health.get("agents_incomplete"):
                good, _ = await listing(api)
                if good >= n:
                    took = time.monotonic() - since
                    return {"s": took, "up_s": up_s, "listed": good, "health": health}
        await asyncio.sleep(0.5)
    with contextlib.suppress(httpx.HTTPError, ValueError):
        good, _ = await listing(api)
    return {"s": None, "up_s": up_s, "listed": good, "health": health}


async def token(db: str) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "sef", "api-token", "create", "bench", "--role", "operator",
         "--db", db, "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return str(json.loads(run.stdout)["token"])


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


async def run(args: argparse.Namespace) -> int:
    soft, hard = raise_nofile_limit()
    fits = agents_for_descriptors(hard) - BENCH_CLIENTS
    n = args.agents
    if n > fits:
        print(f"!! one Mosquitto process here holds at most {fits} agent connections "
              f"(RLIMIT_NOFILE hard limit {hard}, not raisable without CAP_SYS_RESOURCE); "
              f"{n} asked.")  # fmt: skip
        if args.refuse:
            return 2
        n = fits
        print(f"!! capped to {n} agents (acceptance 1 asks 30 000: it needs a broker with a "
              "higher limit, or a cluster)")  # fmt: skip
    print(f"swarm_fleet: {n} agents, {load()}, RLIMIT_NOFILE {soft}/{hard}")
    tmp = Path(tempfile.mkdtemp(prefix="sef-swarm-fleet-"))
    db = f"sqlite:///{tmp / 'ems.db'}"
    api_port = free_port()
    results: dict[str, Any] = {"agents": n}
    (tmp / "mq").mkdir()
    with Mosquitto(tuning=FleetSizing(agents=n).config(), workdir=tmp / "mq") as broker:
        config = SwarmConfig(n, broker.url, processes=args.processes,
                             telemetry_s=args.telemetry_s, connect_rate=args.connect_rate,
                             stats_path=tmp / "swarm.json")  # fmt: skip
        swarm = SwarmRunner(config)
        start = time.monotonic()
        await swarm.start()
        born = await swarm.wait_connected(timeout_s=args.limit_s * 5)
        connect_s = time.monotonic() - start
        worker_mib = sum(rss_mib(p.pid) for p in swarm.workers)
        assert broker.process is not None
        results["swarm"] = {
            "born": swarm.stats.totals()["connected"], "connect_s": connect_s,
            "rate": n / connect_s, "processes": swarm.processes, "worker_mib": worker_mib,
            "kib_per_agent": worker_mib * 1024 / n, "broker_mib": rss_mib(broker.process.pid),
        }  # fmt: skip
        print(f"swarm: {results['swarm']['born']}/{n} born in {connect_s:.1f} s "
              f"({n / connect_s:.0f}/s, {swarm.processes} processes), workers {worker_mib:.0f} "
              f"MiB ({worker_mib * 1024 / n:.1f} KiB/agent), broker "
              f"{results['swarm']['broker_mib']:.0f} MiB; {load()}")  # fmt: skip
        if not born:
            print("!! not every agent was born: stopping")
            await swarm.stop()
            return 1
        results["baseline_s"] = await baseline(broker.host, broker.port, n, args.limit_s)
        print(f"baseline: a bare client received {n} retained Abouts in "
              f"{results['baseline_s'] or float('nan'):.2f} s")  # fmt: skip
        auth = {"Authorization": f"Bearer {await token(db)}"}
        ems = EmsProcess(broker.url, db, api_port, tmp / "ems.log")
        try:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{api_port}", headers=auth
            ) as api:
                for phase in ("fresh", "restart"):
                    if phase == "restart":
                        ems.kill()
                    since = ems.start()
                    got = await time_to_list(api, n, since, args.limit_s)
                    results[phase] = got
                    keys = ("agents", "online", "agents_incomplete", "agents_birth_pending")
                    health = {k: got["health"].get(k) for k in keys}
                    took = got["s"] if got["s"] is not None else float("nan")
                    print(f"{phase}: listed {got['listed']}/{n} in {took:.1f} s (API up after "
                          f"{got['up_s'] or float('nan'):.1f} s); "
                          f"/health {health}; {load()}")  # fmt: skip
                assert ems.proc is not None
                pids = {"broker": [broker.process.pid], "swarm": [p.pid for p in swarm.workers],
                        "ems": [ems.proc.pid]}  # fmt: skip
                before = cpu_of(pids)
                sent = time.monotonic()
                response = await api.post(
                    "/groups/g1/commands",
                    json={"cmds": [["charge", 4, 600]], "timeout_s": 60.0},
                    timeout=120,
                )
                body = response.json()
                call_id = body.get("call_id", "")
                results["call"] = {"http": response.status_code, "status": body.get("status"),
                                   "replies": len(body.get("replies", [])),
                                   "api_s": time.monotonic() - sent}  # fmt: skip
                results["call"].update(await receipts_of(swarm, call_id, n))
                after = cpu_of(pids)
                results["call"]["cpu_s"] = {k: after[k] - before[k] for k in pids}
                print(f"group call through the API: {results['call']}; {load()}")
                await asyncio.sleep(2.0)
                before = cpu_of(pids)
                await direct_group_call(broker.host, broker.port, "bench-direct")
                results["direct"] = await receipts_of(swarm, "bench-direct", n)
                after = cpu_of(pids)
                results["direct"]["cpu_s"] = {k: after[k] - before[k] for k in pids}
                print(f"baseline group call straight to the broker: {results['direct']}; {load()}")
        finally:
            ems.stop()
            await swarm.stop()
    table(results, n)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


def table(r: dict[str, Any], n: int) -> None:
    fresh, again, call = r.get("fresh", {}), r.get("restart", {}), r.get("call", {})
    base = r.get("baseline_s")
    rows = [
        ("fresh EMS lists all with About+groups", fresh.get("s"), "< 60 s",
         fresh.get("s") is not None and fresh["s"] < 60),
        ("after SIGKILL: lists all again", again.get("s"), "< 60 s",
         again.get("s") is not None and again["s"] < 60),
        ("after SIGKILL: incomplete", again.get("health", {}).get("agents_incomplete"), "0",
         again.get("health", {}).get("agents_incomplete") == 0 and again.get("listed") == n),
        ("group call: agents that received it", call.get("received"), f"{n}",
         call.get("received") == n),
        ("group call: receipt p99, ms", call.get("p99_ms"), "< 1000",
         call.get("p99_ms") is not None and call["p99_ms"] < 1000),
    ]  # fmt: skip
    print(f"\nacceptance 1 at {n} agents ({load()}):")
    print(f"{'check':44} {'value':>12} {'target':>10}  verdict")
    for name, value, target, ok in rows:
        shown = f"{value:.1f}" if isinstance(value, float) else str(value)
        print(f"{name:44} {shown:>12} {target:>10}  {verdict(ok)}")
    direct = r.get("direct", {})
    if direct.get("p99_ms") is not None and call.get("p99_ms") is not None:
        print(f"group call receipt p50/p99: through the API {call['p50_ms']:.0f}/"
              f"{call['p99_ms']:.0f} ms, straight to the broker {direct['p50_ms']:.0f}/"
              f"{direct['p99_ms']:.0f} ms (baseline)")  # fmt: skip
    if base and fresh.get("s"):
        print(f"fresh listing / bare-client baseline: {fresh['s'] / base:.1f}x "
              f"(baseline {base:.2f} s)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=30_000)
    parser.add_argument("--processes", type=int, default=None)
    parser.add_argument("--connect-rate", type=float, default=2000.0)
    parser.add_argument("--telemetry-s", type=float, default=60.0)
    parser.add_argument("--limit-s", type=float, default=120.0, help="give up a phase after, s")
    parser.add_argument("--refuse", action="store_true", help="exit 2 instead of capping")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 1000:
        print("RLIMIT_NOFILE hard limit too low for this bench")
        return 2
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())

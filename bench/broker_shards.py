"""Spike (issue 16, acceptance 1 on this machine): more agents than one Mosquitto may hold
sockets for, with bridged Mosquitto shards.

One process here may hold at most RLIMIT_NOFILE's hard limit (20 000) sockets, so one
Mosquitto cannot serve 30 000 agents. This bench runs a *core* Mosquitto (the EMS's) and
``--shards`` *edge* Mosquittos bridged to it (:class:`sef.broker_shards.ShardedBroker`:
SEF's topics each in the direction it flows, ``try_private`` so nothing loops), all with
``sef broker``'s tuning. ``--agents``
MQTT 3.1.1 clients (raw sockets, ``bench/group_fanout.py``'s workers, on 127.0.0.x
source addresses) are spread over the edges; each retains a status (its birth) and
subscribes to the group-call topic. Then:

1. an EMS-like clean-session client subscribes to ``sef/agents/#`` **on the core**: does
   it see every agent's retained status, and how fast;
2. ``--rounds`` group calls published **on the core**: receipts at the agents (all?),
   latency p50/p99, the time to reach all, and each broker's CPU per call.

Run::

    .venv/bin/python bench/broker_shards.py [--agents 30000] [--shards 2] [--workers 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import struct
import time

from broker_resubscribe import resubscribe
from group_fanout import (
    FORK,
    PAYLOAD_BYTES,
    TOPIC,
    broker_cpu_s,
    connect_packet,
    percentile,
    publish_packet,
    run_worker,
    wait_connected,
)
from rich.console import Console
from rich.progress import Progress

from sef.broker import Mosquitto
from sef.broker_fleet import raise_nofile_limit
from sef.broker_shards import ShardedBroker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=30_000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    raise_nofile_limit()
    console = Console(stderr=True)
    with (
        ShardedBroker(agents=args.agents, shards=args.shards) as shards,
        Progress(console=console, transient=True) as progress,
    ):
        assert shards.core is not None
        run(shards.core, shards.edges, args, progress)


def run(
    core: Mosquitto, edges: list[Mosquitto], args: argparse.Namespace, progress: Progress
) -> None:
    workers = args.workers
    shares = [
        args.agents // workers + (1 if i < args.agents % workers else 0) for i in range(workers)
    ]
    pipes, procs = [], []
    start = time.monotonic()
    for index, share in enumerate(shares):
        mine, theirs = FORK.Pipe()
        port = edges[index % len(edges)].port
        proc = FORK.Process(target=run_worker, args=(index, share, port, theirs, False, True))
        proc.start()
        pipes.append(mine)
        procs.append(proc)
    wait_connected(
        pipes, progress, f"{args.agents} agents connect to {len(edges)} edges", args.agents
    )
    connected_s = time.monotonic() - start
    time.sleep(2.0)  # the last births cross the bridges
    received, resub_s = asyncio.run(resubscribe(core.port, args.agents, progress))
    pids = {"core": core.process.pid} | {f"edge {i}": e.process.pid for i, e in enumerate(edges)}  # type: ignore[union-attr]
    pub = socket.create_connection(("127.0.0.1", core.port))
    pub.sendall(connect_packet("fan-publisher"))
    pub.recv(4)
    latencies: list[float] = []
    lasts: list[float] = []
    cpu: dict[str, list[float]] = {name: [] for name in pids}
    missing = 0
    for round_no in range(args.rounds):
        time.sleep(1.0)
        before = {name: broker_cpu_s(pid) for name, pid in pids.items()}
        payload = struct.pack(">id", round_no, time.monotonic()).ljust(PAYLOAD_BYTES, b" ")
        pub.sendall(publish_packet(round_no + 1, TOPIC, payload))
        pub.recv(4)
        got: list[float] = []
        waiting = set(range(workers))
        deadline = time.monotonic() + 60
        while waiting and time.monotonic() < deadline:
            for index in list(waiting):
                if pipes[index].poll(0.01):
                    kind, number, values = pipes[index].recv()
                    if kind == "round" and number == round_no:
                        got += values
                        waiting.discard(index)
        time.sleep(0.3)
        for name, pid in pids.items():
            cpu[name].append((broker_cpu_s(pid) - before[name]) * 1000)
        missing += args.agents - len(got)
        latencies += got
        lasts.append(max(got) if got else float("nan"))
    for pipe in pipes:
        pipe.send(("stop",))
    for proc in procs:
        proc.join(10)
    pub.close()
    load = os.getloadavg()
    ms = 1000.0
    print(f"broker shards: {args.agents} agents over {len(edges)} bridged edges + core; "
          f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip
    print(f"  connect + birth: {connected_s:.1f} s")
    print(
        f"  EMS-like resubscribe on the core: {received}/{args.agents} statuses in {resub_s:.1f} s"
    )
    print(f"  group calls on the core: {args.agents * args.rounds - missing}/"
          f"{args.agents * args.rounds} receipts; p50 {percentile(latencies, 0.5) * ms:.0f} ms, "
          f"p99 {percentile(latencies, 0.99) * ms:.0f} ms, all reached (median) "
          f"{statistics.median(lasts) * ms:.0f} ms")  # fmt: skip
    for name, values in cpu.items():
        print(f"  {name} CPU per group call: {statistics.median(values):.1f} ms")


if __name__ == "__main__":
    main()

"""Bench (issue 16 item 5): how long a client given a broker URL list takes to be working
again on the next broker after its broker's process is SIGKILLed.

Method
------
Each run starts three Mosquitto brokers (:class:`sef.broker.Mosquitto`, free ports) and:

1. **BusClient** (``BusClient("mqtt://A,mqtt://B,mqtt://C", id)``, keepalive 10 s, one
   subscription): the *baseline* is its first connection (``start()``: TCP, CONNECT,
   SUBSCRIBE/SUBACK) on an idle broker; then the process of its broker gets SIGKILL and
   the *failover* is the time from the kill until it is connected and subscribed on the
   next broker (loss seen, backoff 0.1 s +-20 %, next node).
2. **sef swarm** (``--agents N`` in one process over the two brokers left): SIGKILL of
   the first; the time until the last of its agents published its online status (new
   birth) on the other one, seen by a client subscribed there.

Printed: every run's figures, the medians, the ratio failover / first connection
(same run), and ``uptime``'s load. A measurement, not a test: it exits 0.

Run::

    .venv/bin/python bench/bus_failover.py [--runs 5] [--agents 300]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

from sef.broker import Mosquitto
from sef.bus import BusClient, Message, decode_object, start_index
from sef.swarm import SwarmConfig, SwarmRunner


def kill(broker: Mosquitto) -> None:
    assert broker.process is not None
    broker.process.kill()
    broker.process.wait(5)


async def until(predicate: object, timeout_s: float, step_s: float = 0.002) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(step_s)


async def one_run(run: int, agents: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory(prefix="sef-failover-") as tmp:
        brokers = []
        try:
            for n in range(3):
                (Path(tmp) / f"b{n}").mkdir()
                brokers.append(Mosquitto(workdir=Path(tmp) / f"b{n}").start())
            urls = ",".join(b.url for b in brokers)
            client_id = f"bench-failover-{run}"
            first = start_index(client_id, 3)
            client = BusClient(urls, client_id)
            await client.subscribe("bench/failover/#")
            t0 = time.perf_counter()
            await client.start()
            connect_s = time.perf_counter() - t0
            following = brokers[(first + 1) % 3].port
            t0 = time.perf_counter()
            kill(brokers[first])
            await until(lambda: client.connected and client.url.port == following, 30.0)
            failover_s = time.perf_counter() - t0
            await client.stop()

            alive = [b for b in brokers if b.process is not None and b.process.poll() is None]
            reborn: dict[str, float] = {}

            def on_status(message: Message) -> None:
                status = decode_object(message.payload)
                if status.get("state") == "online" and not message.retain:
                    reborn.setdefault(message.topic.split("/")[2], time.perf_counter())

            watch = BusClient(alive[1].url, f"bench-watch-{run}", on_message=on_status)
            await watch.subscribe("sef/agents/+/status")
            await watch.start()
            config = SwarmConfig(agents, ",".join(b.url for b in alive), processes=1)
            async with SwarmRunner(config) as swarm:
                if not await swarm.wait_connected(timeout_s=60):
                    raise RuntimeError(f"swarm not connected: {swarm.stats.totals()}")
                ids = [f"swarm-{i:06d}" for i in range(agents)]
                moved = [a for a in ids if start_index(a, 2) == 0]
                t0 = time.perf_counter()
                kill(alive[0])
                await until(lambda: all(a in reborn for a in moved), 60.0, 0.01)
                swarm_s = max(reborn[a] for a in moved) - t0
            await watch.stop()
            return connect_s, failover_s, swarm_s
        finally:
            for broker in brokers:
                broker.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--agents", type=int, default=300)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(f"load before: {os.getloadavg()}")
    rows = []
    for run in range(args.runs):
        connect_s, failover_s, swarm_s = await one_run(run, args.agents)
        rows.append((connect_s, failover_s, swarm_s))
        print(
            f"run {run}: first connection {connect_s * 1000:.1f} ms, BusClient failover "
            f"{failover_s * 1000:.1f} ms, swarm of {args.agents}: last moved agent born "
            f"again after {swarm_s:.2f} s"
        )
    connect = statistics.median(r[0] for r in rows)
    failover = statistics.median(r[1] for r in rows)
    swarm = statistics.median(r[2] for r in rows)
    print(
        f"median of {args.runs}: first connection {connect * 1000:.1f} ms, failover "
        f"{failover * 1000:.1f} ms (ratio failover/first connection {failover / connect:.1f}), "
        f"swarm {swarm:.2f} s"
    )
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    asyncio.run(main())

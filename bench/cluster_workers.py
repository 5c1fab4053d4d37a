"""Bench (issue 16 items 5 and 6): ingest of QoS 1 telemetry by 1 and by 2 EMS workers
(``sef cluster worker`` processes, :class:`sef.cluster.WorkerEMS`) on a 3-node NATS cluster
into one real PostgreSQL, in the same run.

Method
------
For each row a fresh :class:`sef.cluster.LocalCluster` (3 nodes, W workers, a fresh
database on one PostgreSQL started here): the workers start (their shared durable
consumer exists), are paused (SIGSTOP), producer *processes* (paho, MQTT 3.1.1, QoS 1,
1 000 in flight, spread over the nodes) publish ``--messages`` telemetry updates of
``--agents`` agents (distinct sender times: every one is a sample of its own) and wait
for every PUBACK; then the workers continue (SIGCONT) and the clock runs until the store
holds every message (``SELECT count(*) FROM telemetry``, every 0.2 s). The workers are
thus the bottleneck by construction: rate = messages / drain time, through the whole
worker path (JetStream fetch, registry, recorder commit to PostgreSQL, ack after commit).

Per process CPU seconds during the drain come from ``/proc/PID/stat`` (workers, NATS
nodes; PostgreSQL is not included). Prints the rows, the 2-vs-1 ratio and the load
(``uptime``): the machine is shared, read the figures with it. Exits 0: a measurement.

Run::

    .venv/bin/python bench/cluster_workers.py [--messages 20000] [--agents 500]
        [--producers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import sqlalchemy as sa
from _producers import run_producers
from paho.mqtt.enums import CallbackAPIVersion

from sef.bus import PropertyUpdate
from sef.cluster import LocalCluster
from sef.ems.store.pgserver import PostgresServer

TOPIC = "sef/agents/{agent}/props/edu.pdx.powerlab.demo/Telemetry"
_CLK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (0 when gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK
    except (OSError, IndexError, ValueError):
        return 0.0


def produce(url: str, first: int, count: int, agents: int, base: float, done: Any) -> None:
    """Publish ``count`` QoS 1 updates (numbers ``first``...) and wait for every PUBACK."""
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{first}", protocol=mqtt.MQTTv311
    )
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    acked = threading.Event()
    left = [count]

    def on_publish(*_: Any) -> None:
        left[0] -= 1
        if left[0] == 0:
            acked.set()

    client.on_publish = on_publish
    client.connect(host, int(port), keepalive=30)
    client.loop_start()
    for number in range(first, first + count):
        update = PropertyUpdate({"n": number, "Sys_SOC": 0.5}, ts=base + number * 1e-3, seq=number)
        client.publish(TOPIC.format(agent=f"a{number % agents}"), update.to_payload(), qos=1)
    ok = acked.wait(600)
    client.disconnect()
    client.loop_stop()
    done.put(ok)


def publish(urls: list[str], messages: int, agents: int, producers: int) -> float:
    """Publish ``messages`` from ``producers`` processes, round robin over ``urls``; s."""
    return run_producers(
        produce, urls, messages, producers, agents, time.time() - 3600, timeout_s=700
    )


def stored(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sa.text("SELECT count(*) FROM telemetry")).scalar_one())


def row(
    server: PostgresServer, workers: int, messages: int, agents: int, producers: int
) -> dict[str, Any]:
    """One row: W workers drain ``messages``; figures."""
    url = server.create_database(f"bench_{uuid.uuid4().hex[:10]}")
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with tempfile.TemporaryDirectory(prefix="sef-bench-workers-") as tmp:
        local = LocalCluster(
            nodes=3, workers=workers, workdir=Path(tmp), store_url=url, ack_wait_s=120
        )
        local.start()
        try:
            assert local.broker is not None
            pids = [proc.process.pid for proc in local.procs]
            nodes = [n.process.pid for n in local.broker.members if n.process is not None]
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            print(f"{workers} worker(s) up and paused; publishing", file=sys.stderr, flush=True)
            publish_s = publish(local.broker.urls, messages, agents, producers)
            print(f"published in {publish_s:.1f} s; draining", file=sys.stderr, flush=True)
            before = {pid: cpu_s(pid) for pid in pids + nodes}
            start = time.monotonic()
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
            count = 0
            while count < messages and time.monotonic() - start < 600:
                time.sleep(0.2)
                count = stored(engine)
                print(f"  stored {count}", file=sys.stderr, end="\r", flush=True)
            drain_s = time.monotonic() - start
            after = {pid: cpu_s(pid) for pid in pids + nodes}
        finally:
            local.stop()
            engine.dispose()
    worker_cpu = [after[p] - before[p] for p in pids]
    return {
        "workers": workers,
        "stored": count,
        "publish_msg_s": messages / publish_s,
        "drain_s": drain_s,
        "msg_s": count / drain_s,
        "worker_cpu_s": worker_cpu,
        "msg_per_worker_cpu_s": count / max(sum(worker_cpu), 1e-9),
        "nats_cpu_s": sum(after[p] - before[p] for p in nodes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--producers", type=int, default=2)
    args = parser.parse_args()
    path = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{path}:/usr/sbin:/sbin"  # runuser, for PostgreSQL as root
    server = PostgresServer().start()
    try:
        rows = [row(server, w, args.messages, args.agents, args.producers) for w in (1, 2)]
    finally:
        server.stop()
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"{args.messages} QoS 1 messages, {args.agents} agents, {args.producers} producers")
    print(
        f"{'workers':>7} {'stored':>7} {'publish/s':>9} {'drain s':>8} {'msg/s':>8} "
        f"{'worker CPU s':>16} {'msg/CPU s':>9} {'NATS CPU s':>10}"
    )
    for r in rows:
        cpus = "+".join(f"{c:.1f}" for c in r["worker_cpu_s"])
        print(
            f"{r['workers']:>7} {r['stored']:>7} {r['publish_msg_s']:>9.0f} {r['drain_s']:>8.2f} "
            f"{r['msg_s']:>8.0f} {cpus:>16} {r['msg_per_worker_cpu_s']:>9.0f} "
            f"{r['nats_cpu_s']:>10.1f}"
        )
    print(f"2 workers / 1 worker: {rows[1]['msg_s'] / rows[0]['msg_s']:.2f}x msg/s")
    print(f"load: {load}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()

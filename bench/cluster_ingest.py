"""Bench (issue 16 item 5, spike): QoS 1 telemetry ingest through a 3-node NATS cluster
(MQTT listeners, :class:`sef.cluster.BrokerCluster`) to 1 and 2 consumers, against one
Mosquitto (:class:`sef.broker.Mosquitto`) measured in the same run.

Method
------
Producer *processes* (paho, MQTT 3.1.1, QoS 1, 1 000 in flight) publish ``--messages``
telemetry messages of ~100 bytes to ``sef/agents/{agent}/props/edu.pdx.powerlab.demo/
Telemetry`` (dotted interface name: NATS maps ``.`` to ``//``), spread over ``--agents``
agents, while the consumers are away; once every message is acknowledged the consumers
drain. The consumer is thus the bottleneck by construction. Rate = messages / (last
receipt - first receipt), over all consumers of a row.

Rows:

* ``mosquitto mqtt x1``: one persistent MQTT session (clean session off) on Mosquitto;
* ``nats mqtt x1``: the same on node 1 of the cluster, producers on nodes 0 and 2;
* ``nats js-pull x1`` / ``x2``: 1 or 2 worker processes (nats-py) sharing one durable
  JetStream pull consumer on the MQTT QoS 1 stream (``$MQTT_msgs``, filter
  ``$MQTT.msgs.sef.agents.>``), acknowledging each message: how EMS workers share the
  ingest (NATS has no MQTT ``$share`` subscriptions).

Prints figures, the ratios against the Mosquitto row and the load (``uptime``): the
machine is shared, read the figures with it. Exits 0: a measurement, not a test.

Run::

    .venv/bin/python bench/cluster_ingest.py [--messages 20000] [--agents 1000]
        [--producers 2] [--retain]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import multiprocessing as mp
import os
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from _producers import run_producers
from paho.mqtt.enums import CallbackAPIVersion

from sef.broker import Mosquitto, QueueBudget
from sef.cluster import BrokerCluster

TOPIC = "sef/agents/{agent}/props/edu.pdx.powerlab.demo/Telemetry"


def _hostport(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    return host, int(port)


def _client(cid: str, clean: bool) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=cid, clean_session=clean, protocol=mqtt.MQTTv311
    )
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    return client


def produce(url: str, first: int, count: int, agents: int, retain: bool, done: Any) -> None:
    """Publish ``count`` QoS 1 messages (seq ``first``...) and wait for every PUBACK."""
    client = _client(f"bench-pub-{first}", True)
    acked = threading.Event()
    left = [count]

    def on_publish(*_: Any) -> None:
        left[0] -= 1
        if left[0] == 0:
            acked.set()

    client.on_publish = on_publish
    client.connect(*_hostport(url), keepalive=30)
    client.loop_start()
    for seq in range(first, first + count):
        agent = f"a{seq % agents}"
        payload = json.dumps({"value": {"TimeStamp": seq, "Sys_SOC": 0.5}, "ts": 1.0, "seq": seq})
        client.publish(TOPIC.format(agent=agent), payload.encode(), qos=1, retain=retain)
    ok = acked.wait(300)
    client.disconnect()
    client.loop_stop()
    done.put(ok)


def load(urls: list[str], messages: int, agents: int, producers: int, retain: bool) -> float:
    """Publish ``messages`` from ``producers`` processes (round-robin over ``urls``); s."""
    return run_producers(produce, urls, messages, producers, agents, retain)


class MqttDrain:
    """A persistent MQTT session that counts what it receives (first/last receipt times)."""

    def __init__(self, url: str, cid: str) -> None:
        self.url, self.cid = url, cid
        self.count = 0
        self.first = self.last = 0.0
        self.seqs: set[int] = set()

    def _session(self) -> tuple[mqtt.Client, threading.Event]:
        client = _client(self.cid, False)
        subscribed = threading.Event()
        client.on_connect = lambda c, *_: c.subscribe("sef/agents/+/props/#", qos=1)
        client.on_subscribe = lambda *_: subscribed.set()

        def on_message(_c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
            now = time.time()
            if not self.count:
                self.first = now
            self.count += 1
            self.last = now
            self.seqs.add(json.loads(message.payload)["seq"])

        client.on_message = on_message
        client.connect(*_hostport(self.url), keepalive=30)
        client.loop_start()
        return client, subscribed

    def prepare(self) -> None:
        """Create the session and its subscription, then go away."""
        client, subscribed = self._session()
        if not subscribed.wait(30):
            raise RuntimeError(f"no SUBACK from {self.url}")
        client.disconnect()
        client.loop_stop()

    def drain(self, expected: int, timeout_s: float = 300.0) -> float:
        """Reconnect and receive until ``expected`` distinct messages; msg/s."""
        client, _ = self._session()
        deadline = time.monotonic() + timeout_s
        while len(self.seqs) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        client.disconnect()
        client.loop_stop()
        return self.count / max(self.last - self.first, 1e-9)

    def forget(self) -> None:
        """End the session (a clean-session connection with its client id)."""
        client = _client(self.cid, True)
        client.connect(*_hostport(self.url), keepalive=30)
        client.loop_start()
        time.sleep(0.5)
        client.disconnect()
        client.loop_stop()


def js_worker(servers: list[str], expected: int, out: Any) -> None:
    """One EMS-worker stand-in: fetch from the shared durable consumer, ack each."""

    async def run() -> tuple[int, float, float, list[int]]:
        nats = importlib.import_module("nats")  # nats-py: pip install -e '.[cluster]'
        nc = await nats.connect(servers=servers)
        sub = await nc.jetstream().pull_subscribe_bind("ems", stream="$MQTT_msgs")
        seqs: list[int] = []
        first = last = 0.0
        idle = 0
        while idle < 3:
            try:
                batch = await sub.fetch(256, timeout=1.0)
            except TimeoutError:
                idle += 1
                continue
            idle = 0
            for message in batch:
                seqs.append(json.loads(message.data)["seq"])
                await message.ack()
            now = time.time()
            first = first or now
            last = now
        await nc.close()
        return len(seqs), first, last, seqs

    out.put(asyncio.run(run()))


def js_drain(cluster: BrokerCluster, workers: int, expected: int) -> tuple[float, int, int]:
    """Drain the durable consumer with ``workers`` processes: (msg/s, unique, duplicates)."""
    ctx = mp.get_context("fork")
    out: Any = ctx.Queue()
    procs = [
        ctx.Process(target=js_worker, args=(cluster.nats_urls, expected, out))
        for _ in range(workers)
    ]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=400) for _ in procs]
    for proc in procs:
        proc.join()
    total = sum(r[0] for r in results)
    first = min(r[1] for r in results if r[0])
    last = max(r[2] for r in results if r[0])
    seqs = [s for r in results for s in r[3]]
    per = "/".join(str(r[0]) for r in results)
    print(f"    per worker: {per}")
    return total / max(last - first, 1e-9), len(set(seqs)), len(seqs) - len(set(seqs))


async def make_consumer(servers: list[str]) -> None:
    nats = importlib.import_module("nats")
    api = importlib.import_module("nats.js.api")
    nc = await nats.connect(servers=servers)
    js = nc.jetstream()
    with contextlib.suppress(Exception):  # none yet
        await js.delete_consumer("$MQTT_msgs", "ems")
    await js.add_consumer(
        "$MQTT_msgs",
        api.ConsumerConfig(
            durable_name="ems",
            deliver_policy=api.DeliverPolicy.NEW,
            filter_subject="$MQTT.msgs.sef.agents.>",
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=30,
            max_ack_pending=20000,
        ),
    )
    await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument(
        "--retain", action="store_true", help="publish retained, as SEF agents publish properties"
    )
    args = parser.parse_args()
    n = args.messages - args.messages % args.producers
    rows: list[tuple[str, float, float]] = []
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} CPUs")

    budget = QueueBudget(rate_per_s=n, outage_s=2)
    with Mosquitto(budget=budget) as broker:
        drain = MqttDrain(broker.url, "bench-ems")
        drain.prepare()
        pub_s = load([broker.url], n, args.agents, args.producers, args.retain)
        rate = drain.drain(n)
        rows.append(("mosquitto mqtt x1", rate, n / pub_s))
        print(f"  mosquitto: got {len(drain.seqs)}/{n} ({drain.count} with duplicates)")

    with BrokerCluster(nodes=3, max_ack_pending=20000) as cluster:
        urls = cluster.urls
        drain = MqttDrain(urls[1], "bench-ems")
        drain.prepare()
        pub_s = load([urls[0], urls[2]], n, args.agents, args.producers, args.retain)
        rate = drain.drain(n)
        rows.append(("nats mqtt x1", rate, n / pub_s))
        print(f"  nats mqtt: got {len(drain.seqs)}/{n} ({drain.count} with duplicates)")
        drain.forget()
        for workers in (1, 2):
            asyncio.run(make_consumer(cluster.nats_urls))
            pub_s = load([urls[0], urls[2]], n, args.agents, args.producers, args.retain)
            rate, unique, dups = js_drain(cluster, workers, n)
            rows.append((f"nats js-pull x{workers}", rate, n / pub_s))
            print(f"  js-pull x{workers}: got {unique}/{n}, duplicates {dups}")

    base = rows[0][1]
    print(f"\n{'row':<20} {'drain msg/s':>12} {'vs mosq':>8} {'publish msg/s':>14}")
    for name, rate, pub in rows:
        print(f"{name:<20} {rate:>12.0f} {rate / base:>8.2f} {pub:>14.0f}")
    print(
        f"load after: {os.getloadavg()[0]:.2f} (1 min); messages {n}, agents {args.agents}, "
        f"retain {args.retain}"
    )


if __name__ == "__main__":
    main()

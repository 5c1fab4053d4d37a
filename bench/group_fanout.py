"""Bench (issue 16 item 2/5): group-call fan-out latency and broker CPU against the group
size K, with Mosquitto's ``allow_duplicate_messages`` false (its default) vs true (the
setting ``sef broker`` ships), plus the broker's CPU cost of a keepalive PINGREQ.

Method
------
For each K (``--ks``, default 1000,5000,10000) and each setting, a Mosquitto
(:class:`sef.broker.Mosquitto`) runs with ``sef broker``'s production tuning for K agents
(:class:`sef.broker_fleet.FleetSizing`), only ``allow_duplicate_messages`` changed. K MQTT
3.1.1 subscribers (raw asyncio sockets, clean session, keepalive 0) are spread over
``--workers`` processes, each binding its sockets to its own loopback source address
(127.0.0.2, .3, ...) so that K connections do not exhaust the ephemeral ports; each
subscribes at QoS 1 to the group-call topic ``sef/groups/g1/call/<iface>/<method>``, as
SEF agents of group g1 do. A publisher then sends ``--rounds`` group calls (QoS 1, 300
bytes, 1 s apart) carrying ``time.monotonic()`` (CLOCK_MONOTONIC, shared by the
processes); each subscriber records the receipt time and acknowledges. Figures:

* latency publish -> receipt over all K x rounds receipts: p50/p95/p99, and the
  median over rounds of the last receipt (the call has reached all K);
* broker CPU per group call (the Mosquitto process's CPU time from schedstat, the
  delivery of K messages and their K PUBACKs), median over rounds;
* receipts vs K x rounds (loss).

The ratio false/true at each K is the figure; the subscribers' own processing (Python,
on the same 2 CPUs) is in the latencies, not in the broker CPU.

``--mqtt5`` adds, at each K, MQTT 5 subscribers with duplicates checked (Mosquitto's
default), against the same baseline.

``--ping-rate R`` (default 5000, 0 to skip): after the rounds with duplicates allowed,
the subscribers send R PINGREQ/s in total for ``--ping-s`` s; the broker CPU over that
window minus an idle window of the same length, per PINGREQ, is the keepalive cost.

Run::

    .venv/bin/python bench/group_fanout.py [--ks 1000,5000,10000] [--workers 4]
        [--rounds 5] [--ping-rate 5000] [--ping-s 5] [--mqtt5] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import socket
import statistics
import struct
import sys
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from sef.broker import Mosquitto
from sef.broker_fleet import FleetSizing, raise_nofile_limit
from sef.bus import Topics

TOPIC = Topics().group_call("g1", "edu.pdx.powerlab.demo", "EnergyMethod")
PAYLOAD_BYTES = 300
console = Console(stderr=True)
FORK = mp.get_context("fork")


# -- MQTT 3.1.1 packets ---------------------------------------------------------------------


def _remaining(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">H", len(data)) + data


def connect_packet(client_id: str, keepalive: int = 0, v5: bool = False) -> bytes:
    level, props = (5, b"\x00") if v5 else (4, b"")
    body = _string("MQTT") + bytes([level, 0x02]) + struct.pack(">H", keepalive) + props
    body += _string(client_id)
    return b"\x10" + _remaining(len(body)) + body


def subscribe_packet(packet_id: int, topic: str, qos: int = 1, v5: bool = False) -> bytes:
    body = struct.pack(">H", packet_id) + (b"\x00" if v5 else b"") + _string(topic) + bytes([qos])
    return b"\x82" + _remaining(len(body)) + body


def publish_packet(packet_id: int, topic: str, payload: bytes) -> bytes:
    body = _string(topic) + struct.pack(">H", packet_id) + payload
    return b"\x32" + _remaining(len(body)) + body


async def _read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return first, await reader.readexactly(length) if length else b""


# -- the subscriber processes ---------------------------------------------------------------


class Worker:
    """``count`` subscribers on one loopback source address, in one process."""

    def __init__(
        self, index: int, count: int, port: int, conn: Connection, v5: bool, birth: bool = False
    ) -> None:
        self.index, self.count, self.port, self.conn, self.v5 = index, count, port, conn, v5
        self.birth = birth
        """Each subscriber also retains a status (``sef/agents/ID/status``), as an agent."""
        self.source = f"127.0.0.{2 + index}"
        self.writers: list[asyncio.StreamWriter] = []
        self.latencies: dict[int, list[float]] = {}
        self.pings = 0

    async def subscriber(self, number: int, gate: asyncio.Semaphore) -> None:
        async with gate:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", self.port, local_addr=(self.source, 0)
            )
            writer.write(connect_packet(f"fan-{self.index}-{number}", v5=self.v5))
            kind, _ = await _read_packet(reader)
            assert kind == 0x20, f"no CONNACK: {kind:#x}"
            writer.write(subscribe_packet(1, TOPIC, v5=self.v5))
            kind, _ = await _read_packet(reader)
            assert kind == 0x90, f"no SUBACK: {kind:#x}"
            if self.birth:
                body = _string(f"sef/agents/fan-{self.index}-{number}/status") + b"1"
                writer.write(b"\x31" + _remaining(len(body)) + body)
        self.writers.append(writer)
        while True:
            try:
                kind, body = await _read_packet(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if kind >> 4 != 3:
                continue  # PINGRESP
            now = time.monotonic()
            topic_len = struct.unpack_from(">H", body)[0]
            offset = 2 + topic_len
            if kind & 0x06:
                writer.write(b"\x40\x02" + body[offset : offset + 2])
                offset += 2
            if self.v5:  # skip the properties (a variable byte integer length)
                length, shift = 0, 0
                while True:
                    byte = body[offset]
                    offset += 1
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                offset += length
            round_no, sent = struct.unpack_from(">id", body, offset)
            self.latencies.setdefault(round_no, []).append(now - sent)
            if len(self.latencies[round_no]) == self.count:
                self.conn.send(("round", round_no, self.latencies.pop(round_no)))

    async def ping(self, rate: float, seconds: float) -> None:
        """Send ``rate`` PINGREQ/s over this worker's connections for ``seconds``."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        while (elapsed := loop.time() - start) < seconds:
            due = int(elapsed * rate) - sent
            for _ in range(max(0, due)):
                self.writers[sent % len(self.writers)].write(b"\xc0\x00")
                sent += 1
            await asyncio.sleep(0.01)
        self.pings = sent

    async def main(self) -> None:
        gate = asyncio.Semaphore(100)
        tasks = [asyncio.create_task(self.subscriber(i, gate)) for i in range(self.count)]
        while len(self.writers) < self.count:
            await asyncio.sleep(0.05)
            self.conn.send(("progress", len(self.writers)))
            if failed := [t for t in tasks if t.done() and t.exception()]:
                self.conn.send(("error", repr(failed[0].exception())))
                return
        self.conn.send(("ready", self.count))
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, self.conn.recv)
            if command[0] == "ping":
                await self.ping(command[1], command[2])
                self.conn.send(("pinged", self.pings))
            elif command[0] == "stop":
                for writer in self.writers:
                    writer.close()
                return


def run_worker(
    index: int, count: int, port: int, conn: Connection, v5: bool, birth: bool = False
) -> None:
    """A subscriber process (:class:`Worker`)."""
    raise_nofile_limit()
    asyncio.run(Worker(index, count, port, conn, v5, birth).main())


# -- the broker and the publisher ---------------------------------------------------------


def wait_connected(pipes: list[Any], progress: Progress, label: str, total: int) -> None:
    """Wait until every :func:`run_worker` process said ``ready``, showing the subscribers
    connected so far; a worker's ``error`` raises."""
    connecting = progress.add_task(label, total=total)
    counts = [0] * len(pipes)
    ready = 0
    while ready < len(pipes):
        for index, pipe in enumerate(pipes):
            while pipe.poll():
                kind, *rest = pipe.recv()
                if kind == "error":
                    raise RuntimeError(f"worker {index}: {rest[0]}")
                counts[index] = rest[0]
                ready += kind == "ready"
        progress.update(connecting, completed=sum(counts))
        time.sleep(0.05)
    progress.remove_task(connecting)


def broker_cpu_s(pid: int) -> float:
    """CPU time of process ``pid``'s threads so far, s (``/proc/PID/task/*/schedstat``:
    nanoseconds, unlike the 10 ms ticks of ``/proc/PID/stat``)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
            total += int(stat.read().split()[0])
    return total / 1e9


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Result:
    k: int
    duplicates: bool
    protocol: str
    receipts: int
    expected: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    last_ms: float
    cpu_ms: float
    ping_us: float | None = None


def measure(
    k: int, duplicates: bool, v5: bool, args: argparse.Namespace, progress: Progress
) -> Result:
    """One broker, K subscribers, ``args.rounds`` group calls."""
    tuning = (
        FleetSizing(agents=k)
        .config()
        .replace(
            "allow_duplicate_messages true", f"allow_duplicate_messages {str(duplicates).lower()}"
        )
    )
    label = (
        f"K={k} MQTT {'5' if v5 else '3.1.1'} duplicates {'allowed' if duplicates else 'checked'}"
    )
    with Mosquitto(tuning=tuning) as broker:
        assert broker.process is not None
        pid = broker.process.pid
        workers = min(args.workers, k)
        shares = [k // workers + (1 if i < k % workers else 0) for i in range(workers)]
        pipes, procs = [], []
        for index, share in enumerate(shares):
            mine, theirs = FORK.Pipe()
            proc = FORK.Process(target=run_worker, args=(index, share, broker.port, theirs, v5))
            proc.start()
            pipes.append(mine)
            procs.append(proc)
        wait_connected(pipes, progress, f"{label}: connect", k)
        pub = socket.create_connection(("127.0.0.1", broker.port))
        pub.sendall(connect_packet("fan-publisher"))
        pub.recv(4)
        latencies: list[float] = []
        lasts: list[float] = []
        cpus: list[float] = []
        rounding = progress.add_task(f"{label}: group calls", total=args.rounds)
        for round_no in range(args.rounds):
            time.sleep(1.0)
            cpu_before = broker_cpu_s(pid)
            payload = struct.pack(">id", round_no, time.monotonic())
            pub.sendall(publish_packet(round_no + 1, TOPIC, payload.ljust(PAYLOAD_BYTES, b" ")))
            pub.recv(4)  # PUBACK
            got: list[float] = []
            deadline = time.monotonic() + 60
            waiting = set(range(workers))
            while waiting and time.monotonic() < deadline:
                for index in list(waiting):
                    if pipes[index].poll(0.01):
                        kind, number, values = pipes[index].recv()
                        if kind == "round" and number == round_no:
                            got += values
                            waiting.discard(index)
            time.sleep(0.2)  # the last PUBACKs reach the broker
            cpus.append(broker_cpu_s(pid) - cpu_before)
            latencies += got
            if got:
                lasts.append(max(got))
            progress.advance(rounding)
        progress.remove_task(rounding)
        ping_us = None
        if duplicates and args.ping_rate > 0:
            time.sleep(0.5)
            idle_before = broker_cpu_s(pid)
            time.sleep(args.ping_s)
            idle = broker_cpu_s(pid) - idle_before
            before = broker_cpu_s(pid)
            for pipe, share in zip(pipes, shares, strict=True):
                pipe.send(("ping", args.ping_rate * share / k, args.ping_s))
            sent = sum(pipe.recv()[1] for pipe in pipes)
            ping_cpu = broker_cpu_s(pid) - before - idle
            ping_us = ping_cpu / sent * 1e6 if sent else None
        for pipe in pipes:
            pipe.send(("stop",))
        for proc in procs:
            proc.join(10)
        pub.close()
    ms = 1000.0
    return Result(
        k,
        duplicates,
        "5" if v5 else "3.1.1",
        len(latencies),
        k * args.rounds,
        percentile(latencies, 0.50) * ms if latencies else float("nan"),
        percentile(latencies, 0.95) * ms if latencies else float("nan"),
        percentile(latencies, 0.99) * ms if latencies else float("nan"),
        statistics.median(lasts) * ms if lasts else float("nan"),
        statistics.median(cpus) * ms,
        ping_us,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ks", default="1000,5000,10000", help="group sizes, comma-separated")
    parser.add_argument("--workers", type=int, default=4, help="subscriber processes")
    parser.add_argument("--rounds", type=int, default=5, help="group calls per setting")
    parser.add_argument("--ping-rate", type=float, default=5000.0, help="PINGREQ/s (0: skip)")
    parser.add_argument("--ping-s", type=float, default=5.0, help="ping window, s")
    parser.add_argument(
        "--mqtt5", action="store_true", help="also MQTT 5 subscribers with duplicates checked"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    soft, _ = raise_nofile_limit()
    if max(ks) + 200 > soft:
        sys.exit(f"K={max(ks)} needs more than the {soft} open files one broker may have here")
    results: list[Result] = []
    with Progress(console=console, transient=True) as progress:
        for k in ks:
            for duplicates in (False, True):
                results.append(measure(k, duplicates, False, args, progress))
            if args.mqtt5:
                results.append(measure(k, False, True, args, progress))
    load = os.getloadavg()
    if args.json:
        print(json.dumps({"load": load, "results": [asdict(r) for r in results]}, indent=2))
        return
    table = Table(title=f"Group-call fan-out, Mosquitto 2.0.11 (load {load[0]:.2f})")
    for column in ("K", "MQTT", "duplicates", "receipts", "p50 ms", "p95 ms", "p99 ms", "all ms",
                   "broker CPU ms/call", "ratio p99", "ratio CPU", "PINGREQ us"):  # fmt: skip
        table.add_column(column, justify="right")
    by_key = {(r.k, r.duplicates, r.protocol): r for r in results}
    for r in results:
        base = by_key.get((r.k, True, "3.1.1"))
        ratio_p99 = f"{r.p99_ms / base.p99_ms:.2f}" if base and not r.duplicates else ""
        ratio_cpu = f"{r.cpu_ms / base.cpu_ms:.2f}" if base and not r.duplicates else ""
        table.add_row(
            str(r.k), r.protocol, "allowed" if r.duplicates else "checked (default)",
            f"{r.receipts}/{r.expected}", f"{r.p50_ms:.1f}", f"{r.p95_ms:.1f}",
            f"{r.p99_ms:.1f}", f"{r.last_ms:.1f}", f"{r.cpu_ms:.1f}", ratio_p99, ratio_cpu,
            "" if r.ping_us is None else f"{r.ping_us:.1f}",
        )  # fmt: skip
    Console(width=180).print(table)


if __name__ == "__main__":
    main()

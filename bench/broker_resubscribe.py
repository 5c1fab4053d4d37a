"""Bench (issue 16 item 1): does an EMS (re)subscribe receive the whole retained fleet?

Method
------
A Mosquitto (:class:`sef.broker.Mosquitto`) holds ``--agents`` agents' retained state,
``--per-agent`` messages each (6 for a version-1 agent: status, About, interface XML,
properties) of ``--payload-bytes`` bytes on average (4.5 KB per agent / 6). It runs once
with the tuning SEF shipped before ``sef broker`` (the test broker's: queue sized for the
outage budget only) and once with ``sef broker --agents N``'s
(:class:`sef.broker_fleet.FleetSizing`). A fresh clean-session MQTT 3.1.1 client then
subscribes to ``sef/agents/#`` at QoS 1, as the EMS does at a restart, acknowledges every
message and counts them until nothing came for 3 s. Printed: received / retained, the
time to receive them, the broker's resident memory before and after.

Run::

    .venv/bin/python bench/broker_resubscribe.py [--agents 100000] [--per-agent 6]
        [--payload-bytes 750]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import time

from group_fanout import _read_packet, _remaining, _string, connect_packet, subscribe_packet
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from sef.broker import Mosquitto
from sef.broker_fleet import FleetSizing

KINDS = ("status", "about", "interfaces/edu.pdx.powerlab.demo", "props/d/Telemetry",
         "props/d/AssetName", "props/d/Mode", "props/d/Extra1", "props/d/Extra2")  # fmt: skip


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid``, MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def publish_fleet(port: int, agents: int, per_agent: int, size: int, progress: Progress) -> None:
    """Retain ``agents x per_agent`` messages at QoS 1, as agents' births are; returns
    once the broker acknowledged every one (so it holds them all)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(connect_packet("fleet-publisher"))
    sock.recv(4)
    payload = b"x" * size
    task = progress.add_task("retain the fleet", total=agents)
    batch = bytearray()
    acked = 0

    def drain(block: bool) -> int:
        sock.setblocking(block)
        got = 0
        try:
            while chunk := sock.recv(1 << 20):
                got += len(chunk)
                if block:
                    break
        except BlockingIOError:
            pass
        return got

    sent = 0
    for i in range(agents):
        for kind in KINDS[:per_agent]:
            sent += 1
            body = _string(f"sef/agents/a{i}/{kind}") + (sent % 65535 + 1).to_bytes(2, "big")
            body += payload
            batch += b"\x33" + _remaining(len(body)) + body
        if len(batch) > 1 << 20:
            sock.setblocking(True)
            sock.sendall(batch)
            batch.clear()
            acked += drain(False)
            progress.update(task, completed=i + 1)
    sock.setblocking(True)
    sock.sendall(batch)
    while acked < 4 * sent:  # every PUBACK is 4 bytes
        acked += drain(True)
    sock.close()
    progress.remove_task(task)


async def resubscribe(port: int, expected: int, progress: Progress) -> tuple[int, float]:
    """Subscribe like a restarted EMS; (messages received, seconds to the last one)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    writer.write(connect_packet("ems-restart"))
    await _read_packet(reader)
    start = time.monotonic()
    writer.write(subscribe_packet(1, "sef/agents/#"))
    received, last = 0, start
    task = progress.add_task("EMS resubscribe", total=expected)
    while True:
        try:
            kind, body = await asyncio.wait_for(_read_packet(reader), 3.0)
        except TimeoutError:
            break
        if kind >> 4 != 3:
            continue
        received += 1
        last = time.monotonic()
        if kind & 0x06:
            topic_len = int.from_bytes(body[:2], "big")
            writer.write(b"\x40\x02" + body[2 + topic_len : 4 + topic_len])
        if received % 10000 == 0:
            progress.update(task, completed=received)
            await writer.drain()
    writer.close()
    progress.remove_task(task)
    return received, last - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=100_000)
    parser.add_argument("--per-agent", type=int, default=6, choices=range(1, len(KINDS) + 1))
    parser.add_argument("--payload-bytes", type=int, default=750)
    args = parser.parse_args()
    expected = args.agents * args.per_agent
    setups = {
        "before sef broker (test broker's tuning)": None,
        f"sef broker --agents {args.agents}": FleetSizing(agents=args.agents).config(),
    }
    table = Table(title=f"EMS resubscribe, {args.agents} agents x {args.per_agent} retained")
    for column in ("configuration", "max_queued_messages", "received", "of", "s",
                   "RSS before MiB", "RSS after MiB"):  # fmt: skip
        table.add_column(column, justify="right")
    with Progress(console=Console(stderr=True), transient=True) as progress:
        for name, tuning in setups.items():
            with Mosquitto(tuning=tuning) as broker:
                assert broker.process is not None
                pid = broker.process.pid
                publish_fleet(
                    broker.port, args.agents, args.per_agent, args.payload_bytes, progress
                )
                before = rss_mib(pid)
                received, seconds = asyncio.run(resubscribe(broker.port, expected, progress))
                table.add_row(
                    name, str(broker.limits.max_queued_messages), str(received), str(expected),
                    f"{seconds:.1f}", f"{before:.0f}", f"{rss_mib(pid):.0f}",
                )  # fmt: skip
    load = os.getloadavg()
    table.caption = f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    Console(width=180).print(table)


if __name__ == "__main__":
    main()

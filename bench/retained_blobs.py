"""Retained state per agent in Mosquitto, interface XML per agent (protocol version 1) vs
once per hash (version 2), and the XML traffic of a reconnection wave (issue 16 item 2).

For each mode a fresh Mosquitto and ``--agents`` real :class:`VirtualBatteryAgent` s in
this process (the same birth as ``sef agent virtual-battery``):

* retained: a new subscriber to ``{root}/#`` sums the retained topics and payloads it
  gets; Mosquitto's own ``$SYS/broker/heap/current`` before and after the agents (its
  retained store and the agents' sessions);
* wave: every agent stops and starts again (a new connection and birth each); a
  controller-like subscriber to both XML topic kinds counts the XML bytes it receives.

Modes: ``v1`` (per-agent topics), ``v2`` (hash topics, published only when the broker
lacks them: SEF's default), ``v2-always`` (hash topics published at every birth, the
simpler policy the check replaces). The ratio is against ``v1`` of the same run.

    .venv/bin/python bench/retained_blobs.py --agents 200
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sef.agents.virtual_battery import VirtualBatteryAgent
from sef.broker import Mosquitto
from sef.bus import BusClient, Message

MODES = ("v1", "v2", "v2-always")


@dataclass
class Figures:
    mode: str
    retained: int = 0
    """Retained messages a new subscriber gets."""
    retained_bytes: int = 0
    """Their topics + payloads, bytes."""
    xml_bytes: int = 0
    """Of which interface XML (both topic kinds), bytes."""
    heap_delta: int | None = None
    """Mosquitto's heap with the agents minus without, bytes."""
    wave_xml_bytes: int = 0
    """XML bytes a controller receives while every agent reconnects."""
    wave_s: float = 0.0


def make_agent(agent_id: str, url: str, mode: str) -> VirtualBatteryAgent:
    os.environ["SEF_INTERFACE_TOPICS"] = "v2" if mode == "v2-always" else mode
    agent = VirtualBatteryAgent(agent_id, url, step_s=3600.0, keepalive_s=30)
    if mode == "v2-always":
        agent.blobs.check_and_publish = agent.blobs.publish_all  # type: ignore[method-assign]
    return agent


async def start_all(agents: list[VirtualBatteryAgent], batch: int = 50) -> None:
    for i in range(0, len(agents), batch):
        await asyncio.gather(*(a.start() for a in agents[i : i + batch]))
    await asyncio.gather(*(a.blobs.wait() for a in agents))


async def sys_value(url: str, topic: str, timeout_s: float = 4.0) -> int | None:
    """One value of Mosquitto's ``$SYS`` tree (published every ``sys_interval``)."""
    got: list[bytes] = []
    bus = BusClient(url, f"sys-{time.monotonic_ns()}", on_message=lambda m: got.append(m.payload))
    await bus.subscribe(topic, qos=0)
    await bus.start()
    deadline = time.monotonic() + timeout_s
    while not got and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.2)  # the next interval's value: after what just happened
    await bus.stop()
    return int(got[-1]) if got else None


async def retained(url: str, quiet_s: float = 1.0) -> list[Message]:
    seen: list[Message] = []
    bus = BusClient(url, f"snap-{time.monotonic_ns()}", on_message=seen.append)
    await bus.subscribe("sef/#")
    await bus.start()
    last = -1
    while last != len(seen):
        last = len(seen)
        await asyncio.sleep(quiet_s)
    await bus.stop()
    return [m for m in seen if m.retain]


def is_xml(topic: str) -> bool:
    return topic.startswith("sef/interfaces/") or "/interfaces/" in topic


async def run(mode: str, n: int, workdir: Path) -> Figures:
    figures = Figures(mode)
    broker = Mosquitto(workdir=workdir, extra_config="sys_interval 1\n")
    workdir.mkdir()
    broker.start()
    try:
        heap0 = await sys_value(broker.url, "$SYS/broker/heap/current")
        agents = [make_agent(f"vb-{i:05d}", broker.url, mode) for i in range(n)]
        await start_all(agents)
        await asyncio.sleep(1.0)
        heap1 = await sys_value(broker.url, "$SYS/broker/heap/current")
        if heap0 is not None and heap1 is not None:
            figures.heap_delta = heap1 - heap0
        for message in await retained(broker.url):
            size = len(message.topic) + len(message.payload)
            figures.retained += 1
            figures.retained_bytes += size
            if is_xml(message.topic):
                figures.xml_bytes += size

        wave: list[int] = []
        ems = BusClient(
            broker.url,
            "ems-like",
            on_message=lambda m: wave.append(len(m.payload)) if not m.retain else None,
        )
        await ems.subscribe("sef/interfaces/+")
        await ems.subscribe("sef/agents/+/interfaces/+")
        await ems.start()
        await asyncio.sleep(0.5)
        started = time.monotonic()
        await asyncio.gather(*(a.stop() for a in agents))
        agents = [make_agent(f"vb-{i:05d}", broker.url, mode) for i in range(n)]
        await start_all(agents)
        figures.wave_s = time.monotonic() - started
        await asyncio.sleep(1.0)
        figures.wave_xml_bytes = sum(wave)
        await ems.stop()
        await asyncio.gather(*(a.stop() for a in agents))
    finally:
        broker.stop()
    return figures


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(
        f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min); agents {args.agents}"
    )
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes.split(","):
            results.append(await run(mode, args.agents, Path(tmp) / mode))
    base = results[0]
    n = args.agents
    print(
        f"{'mode':10} {'retained':>8} {'B/agent':>8} {'XML B/agent':>11} {'heap B/agent':>12} "
        f"{'ratio':>6} {'wave XML KB':>11} {'wave s':>7}"
    )
    for f in results:
        heap = f"{f.heap_delta / n:12.0f}" if f.heap_delta is not None else f"{'n/a':>12}"
        print(
            f"{f.mode:10} {f.retained:8d} {f.retained_bytes / n:8.0f} {f.xml_bytes / n:11.0f} "
            f"{heap} {f.retained_bytes / base.retained_bytes:6.2f} "
            f"{f.wave_xml_bytes / 1024:11.1f} {f.wave_s:7.2f}"
        )
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())

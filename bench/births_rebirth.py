"""Bench (issue 16): retained births a broker drops at an EMS's subscription, and how long
the EMS takes to make every agent complete by asking rebirths.

Method
------
A Mosquitto (:class:`sef.broker.Mosquitto`) with a per-client queue of ``--queue``
messages (``max_queued_messages``; in-flight at the stock 20) and N real virtual-battery
agents (:class:`sef.agents.virtual_battery.VirtualBatteryAgent`, each its own MQTT
connection, group ``g1``, telemetry every ``--step`` s). Once their births are retained:

1. **baseline**: an EMS that counts incomplete births but asks nothing
   (``rebirth_rate=0``; the behaviour before issue 16): the retained agent messages it
   received versus the ones the broker holds (N x the per-agent count, read one agent at
   a time from a few agents), and the agents it holds complete (online, About, groups,
   Telemetry) once the drain is over plus ``--grace`` s;
2. **with rebirths**: an EMS with ``--rate`` agents/s: the time from its start until
   every agent is complete (or ``--timeout``), the rebirths it asked by reason, and the
   sequence gaps it saw (live rebirth messages the small queue dropped in turn).

An agent of which the EMS received nothing at all is unknown to it until its next
telemetry (up to ``--step`` s). Prints one line per N and the ratio of complete agents
with/without rebirths; notes the load (``uptime``). Exits 0: a measurement, not a test.

Run::

    .venv/bin/python bench/births_rebirth.py [--agents 50 500] [--queue 20] [--rate 20]
        [--grace 2] [--step 5] [--timeout 180]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import time
from pathlib import Path

from sef.agents.virtual_battery import VirtualBatteryAgent
from sef.broker import Mosquitto
from sef.bus import BusClient, Message, Topics
from sef.ems import EMS

TOPICS = Topics()
DEMO = "edu.pdx.powerlab.demo"


def complete(ems: EMS, agent_id: str) -> bool:
    record = ems.registry.get(agent_id)
    return (
        record is not None
        and record.online is True
        and bool(record.about)
        and list(record.groups) == ["g1"]
        and f"{DEMO}.Telemetry" in record.properties
    )


async def retained_per_agent(url: str, agent_ids: list[str]) -> float:
    """Mean retained messages per agent, read one agent at a time."""
    seen: list[Message] = []
    client = BusClient(url, f"count-{os.getpid()}", on_message=seen.append)
    await client.start()
    try:
        for agent_id in agent_ids:
            await client.subscribe(f"{TOPICS.root}/agents/{agent_id}/#", qos=1)
            await asyncio.sleep(0.5)
            client.unsubscribe(f"{TOPICS.root}/agents/{agent_id}/#")
        return sum(1 for m in seen if m.retain) / len(agent_ids)
    finally:
        await client.stop()


async def start_ems(url: str, host_id: str, rate: float, grace_s: float) -> tuple[EMS, list[int]]:
    ems = EMS(url, host_id, keepalive_s=10, rebirth_rate=rate, birth_grace_s=grace_s)
    retained = [0]
    handle = ems._on_message
    prefix = f"{TOPICS.root}/agents/"

    def counting(message: Message) -> object:
        if message.retain and message.topic.startswith(prefix):
            retained[0] += 1
        return handle(message)

    ems.bus._on_message = counting
    await ems.start()
    return ems, retained


async def run_one(n: int, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    broker = Mosquitto(
        workdir=workdir,
        extra_config=f"max_queued_messages {args.queue}\nmax_queued_bytes 0\n"
        "max_inflight_messages 20\n",
    )
    workdir.mkdir(parents=True, exist_ok=True)
    broker.start()
    agents = [
        VirtualBatteryAgent(f"vb-{i:04d}", broker.url, step_s=args.step, groups=["g1"])
        for i in range(n)
    ]
    ids = [a.agent_id for a in agents]
    try:
        for i in range(0, n, 50):
            await asyncio.gather(*(a.start() for a in agents[i : i + 50]))
        per_agent = await retained_per_agent(broker.url, ids[:3])
        held = per_agent * n
        loop = asyncio.get_running_loop()

        blind, received = await start_ems(broker.url, "ems-blind", 0.0, args.grace)
        try:
            while blind.births.draining(loop.time()):
                await asyncio.sleep(0.1)
            await asyncio.sleep(args.grace + 0.5)
            base_complete = sum(1 for a in ids if complete(blind, a))
            base = {"received": float(received[0]), "incomplete": float(blind.births.incomplete)}
        finally:
            await blind.stop()

        start = time.monotonic()
        ems, _ = await start_ems(broker.url, "ems-fixed", args.rate, args.grace)
        try:
            took = float("nan")
            while time.monotonic() - start < args.timeout:
                if all(complete(ems, a) for a in ids):
                    took = time.monotonic() - start
                    break
                await asyncio.sleep(0.2)
            fixed_complete = sum(1 for a in ids if complete(ems, a))
            gaps = sum(r.gaps for r in ems.registry.agents.values())
            reasons = {k: v for k, v in ems.rebirths_by_reason.items() if v}
        finally:
            await ems.stop()
        print(
            f"N={n:5d} queue={args.queue} rate={args.rate:g}/s: held {held:.0f} retained "
            f"({per_agent:.1f}/agent), baseline received {base['received']:.0f} "
            f"({held - base['received']:.0f} dropped, {100 * (1 - base['received'] / held):.1f} %)"
            f", complete {base_complete}/{n}, counted incomplete {base['incomplete']:.0f}; "
            f"with rebirths complete {fixed_complete}/{n} in {took:.1f} s, rebirths {reasons}, "
            f"gaps {gaps}; ratio complete {fixed_complete / max(1, base_complete):.1f}x",
            flush=True,
        )
        return {"took": took, "base_complete": base_complete, "complete": fixed_complete}
    finally:
        await asyncio.gather(*(a.stop() for a in agents), return_exceptions=True)
        broker.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[50, 500])
    parser.add_argument("--queue", type=int, default=20)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--grace", type=float, default=2.0)
    parser.add_argument("--step", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print("load:", os.popen("uptime").read().strip())
    with tempfile.TemporaryDirectory(prefix="sef-births-") as tmp:
        for n in args.agents:
            await run_one(n, args, Path(tmp) / f"mq-{n}")
    print("load:", os.popen("uptime").read().strip())


if __name__ == "__main__":
    asyncio.run(main())

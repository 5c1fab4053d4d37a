"""Bench (issue 16): what write coalescing (``sef.bus._coalesce``) saves an EMS-style consumer.

Method
------
A Mosquitto broker (:class:`sef.broker.Mosquitto`, queue limit raised) is started on a
free port. Two consumers, both :class:`sef.bus.BusClient` with a persistent session
(clean session off) subscribed to ``bench/coalesce/#``, differ only in
``coalesce_writes`` (``off``: gmqtt writes each packet to the socket at once, as before;
``on``: the writes of one event-loop iteration are one socket write). Each round, with
both sessions offline, an in-process producer publishes N QoS 1 messages (~100 B JSON,
each acknowledged by the broker) into each session's queue; then each consumer in turn
(order alternating per round) connects and drains its queue, decoding every payload with
``json.loads`` the way the EMS does, and acknowledging each message (PUBACK, gmqtt's
automatic acknowledgement, or ``--manual-ack``: the EMS-with-a-store path where the
handler returns a future). No producer runs while a consumer is measured.

Measured between the consumer's first and last message: wall time, CPU time of this
process (``time.process_time``; steadier than wall time on a shared machine) and the
number of writes handed to asyncio socket transports (``_SelectorSocketTransport.write``
is counted for both modes alike: each is at most one ``send()`` system call; with an
empty transport buffer exactly one). Printed: per mode the median over ``--rounds``
rounds of messages per wall second and per CPU second, transport writes per message, and
the ratio on/off measured in the same run. It is a measurement, not a test: it exits 0.

Run::

    .venv/bin/python bench/bus_write_coalescing.py [--messages 50000] [--rounds 3]
        [--manual-ack]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import statistics
import sys
import time
from asyncio import selector_events
from dataclasses import dataclass, field
from typing import Any

from sef.broker import Mosquitto
from sef.bus import BusClient, Message

PATTERN = "bench/coalesce/#"
SOCKET_TRANSPORT: Any = vars(selector_events)["_SelectorSocketTransport"]
"""asyncio's TCP transport class (private): its ``write`` is counted."""
IDLE_TIMEOUT_S = 3.0
MODES = {"off": False, "on": True}


class WriteCounter:
    """Counts ``write`` calls on every asyncio socket transport of this process."""

    def __init__(self) -> None:
        self.count = 0
        self._original = SOCKET_TRANSPORT.write

    def __enter__(self) -> WriteCounter:
        original = self._original
        counter = self

        def write(transport: Any, data: Any) -> None:
            counter.count += 1
            original(transport, data)

        SOCKET_TRANSPORT.write = write
        return self

    def __exit__(self, *exc: object) -> None:
        SOCKET_TRANSPORT.write = self._original


@dataclass
class Drain:
    """One consumer's drain of its queue."""

    received: int = 0
    first_wall: float = 0.0
    last_wall: float = 0.0
    first_cpu: float = 0.0
    last_cpu: float = 0.0
    writes_at_first: int = 0
    writes_at_last: int = 0
    payload_bytes: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def wall_s(self) -> float:
        return self.last_wall - self.first_wall

    @property
    def cpu_s(self) -> float:
        return self.last_cpu - self.first_cpu


def consumer(
    url: str, mode: str, drain: Drain | None, counter: WriteCounter, manual: bool, n: int
) -> BusClient:
    """The EMS-style consumer: decode each payload, count; ``drain`` None = just subscribe."""
    loop = asyncio.get_running_loop()

    def on_message(message: Message) -> object:
        if drain is not None:
            if drain.received == 0:
                drain.first_wall, drain.first_cpu = time.perf_counter(), time.process_time()
                drain.writes_at_first = counter.count
            json.loads(message.payload)
            drain.received += 1
            drain.payload_bytes += len(message.payload)
            drain.last_wall, drain.last_cpu = time.perf_counter(), time.process_time()
            drain.writes_at_last = counter.count
            if drain.received >= n:
                drain.done.set()
        if manual:
            future: asyncio.Future[None] = loop.create_future()
            future.set_result(None)
            return future
        return None

    return BusClient(
        url,
        f"bench-coalesce-{mode}",
        on_message=on_message,
        clean_session=False,
        manual_ack=manual,
        coalesce_writes=MODES[mode],
    )


async def fill(url: str, n: int, round_no: int) -> None:
    """Publish ``n`` QoS 1 messages, each acknowledged by the broker."""
    producer = BusClient(url, "bench-coalesce-producer", coalesce_writes=True)
    await producer.start()
    try:
        for start in range(0, n, 2000):
            batch = [
                producer.publish_acked(
                    f"bench/coalesce/a{k % 1000:04d}",
                    json.dumps(
                        {
                            "value": {"Sys_SOC": 20.0 + k % 80, "TimeStamp": k},
                            "ts": 1.767e9 + k,
                            "seq": round_no,
                        }
                    ).encode(),
                )
                for k in range(start, min(n, start + 2000))
            ]
            await asyncio.gather(*batch)
    finally:
        await producer.stop()


async def drain_once(url: str, mode: str, n: int, counter: WriteCounter, manual: bool) -> Drain:
    drain = Drain()
    client = consumer(url, mode, drain, counter, manual, n)
    await client.subscribe(PATTERN)
    await client.start()
    try:
        last = -1
        while not drain.done.is_set() and drain.received != last:
            last = drain.received
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(drain.done.wait(), IDLE_TIMEOUT_S)
        await asyncio.sleep(0.2)  # the last PUBACKs out before the clean disconnect
    finally:
        await client.stop()
    return drain


async def run(args: argparse.Namespace) -> None:
    counter = WriteCounter()
    extra = f"max_queued_messages {args.messages + 10_000}\nmax_inflight_messages 1000\n"
    with Mosquitto(extra_config=extra) as mosquitto, counter:
        print(
            f"Mosquitto on {mosquitto.url}; Python {sys.version.split()[0]}; "
            f"load {os.getloadavg()[0]:.2f}"
        )
        for mode in MODES:  # create both persistent sessions
            client = consumer(mosquitto.url, mode, None, counter, args.manual_ack, 0)
            await client.subscribe(PATTERN)
            await client.start()
            await client.stop()
        results: dict[str, list[Drain]] = {mode: [] for mode in MODES}
        for round_no in range(args.rounds):
            await fill(mosquitto.url, args.messages, round_no)
            order = list(MODES) if round_no % 2 == 0 else list(reversed(MODES))
            for mode in order:
                drain = await drain_once(
                    mosquitto.url, mode, args.messages, counter, args.manual_ack
                )
                results[mode].append(drain)
                writes = drain.writes_at_last - drain.writes_at_first
                print(
                    f"round {round_no + 1} {mode:>3}: {drain.received}/{args.messages} msgs, "
                    f"{drain.received / drain.wall_s:,.0f} msg/s, "
                    f"{drain.received / drain.cpu_s:,.0f} msg/CPU s, "
                    f"{writes:,} transport writes ({writes / max(1, drain.received):.3f}/msg)"
                )
        print(
            f"\nmedian of {args.rounds} rounds, {args.messages} QoS 1 messages each"
            f" ({'manual' if args.manual_ack else 'automatic'} acknowledgement), "
            f"load {os.getloadavg()[0]:.2f}:"
        )
        medians: dict[str, tuple[float, float, float]] = {}
        for mode, drains in results.items():
            wall = statistics.median(d.received / d.wall_s for d in drains)
            cpu = statistics.median(d.received / d.cpu_s for d in drains)
            per = statistics.median(
                (d.writes_at_last - d.writes_at_first) / max(1, d.received) for d in drains
            )
            medians[mode] = (wall, cpu, per)
            print(
                f"  coalescing {mode:>3}: {wall:>10,.0f} msg/s  {cpu:>10,.0f} msg/CPU s  "
                f"{per:.4f} writes/msg"
            )
        off, on = medians["off"], medians["on"]
        print(
            f"  on/off: {on[0] / off[0]:.2f}x msg/s, {on[1] / off[1]:.2f}x msg/CPU s, "
            f"{on[2] / off[2] if off[2] else 0:.4f}x writes"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=50_000, help="QoS 1 messages per drain")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--manual-ack", action="store_true", help="acknowledge through handler futures")
    args = ap.parse_args()
    if args.messages < 2 or args.rounds < 1:
        ap.error("need --messages >= 2 and --rounds >= 1")
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()

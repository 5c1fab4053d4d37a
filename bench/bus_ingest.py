"""Bench (issue 2): telemetry ingest rate of the EMS registry versus a bare MQTT client.

Method
------
A Mosquitto broker (:class:`sef.broker.Mosquitto`) is started on a free port. Two
consumers own a persistent MQTT session (clean session off) on it:

* ``bare gmqtt``: a plain gmqtt client (the library SEF uses) subscribed to
  ``sef/agents/+/props/#`` that ``json.loads`` every payload and counts it; this is the
  baseline "QoS 1 with JSON decoding" of the issue;
* ``SEF EMS``: :class:`sef.ems.EMS` (``announce=False``) on the full path
  ``BusClient -> EMS._on_message -> Registry.handle`` (topic parsing, JSON decoding,
  payload validation, per-agent sequence check, last value stored) counting the
  ``property`` events it emits.

Each round, both sessions are disconnected while producer *processes* publish N
telemetry messages at QoS 1 (``--qos 0`` also offered): topic
``sef/agents/{agent}/props/edu.pdx.powerlab.demo/Telemetry``, payload
``PropertyUpdate(value, ts, seq).to_payload()`` of about 100 bytes with an ``a{sv}``
value (``TimeStamp``, ``Sys_SOC``), spread round-robin over ``--agents`` simulated agents
with per-agent ``seq`` numbers counting up. Once the broker has acknowledged every
message (they sit in the two offline sessions' queues; the broker's queue limit is
raised for that), the consumers reconnect one after the other and drain their queue.
The consumer is thus the bottleneck by construction, and no producer runs while a
consumer is measured. Where the machine has two or more CPUs, the measuring process is
pinned to CPU 0 and Mosquitto to CPU 1 (one consumer on one core; ``--no-pin`` to
disable). The rate is messages / (time of last message - time of first message).

Each consumer's CPU time (``time.process_time`` of the measuring process, between its
first and last message) is measured too: on a shared, loaded machine the messages per CPU
second are a steadier figure than the wall-time rate, and are printed beside it.

The bench prints the median over ``--rounds`` rounds (consumer order alternates), the
messages received versus published, the EMS checks (every agent's last value stored,
sequence gaps, bad messages), the ratio EMS/bare and PASS/FAIL against the targets of
issue 2 (EMS >= 50 % of the bare client and >= 20 000 msg/s). It exits 0 even when a
target is missed: it is a measurement, not a test. ``--profile`` runs one more EMS
drain under cProfile and prints where the time goes.

Run::

    .venv/bin/python bench/bus_ingest.py [--messages N] [--agents N] [--qos 0|1]
        [--rounds 3] [--producers 2] [--profile] [--no-pin]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import logging
import multiprocessing as mp
import os
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import MQTTv311
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sef.broker import Mosquitto
from sef.bus import PropertyUpdate
from sef.ems import EMS
from sef.ems._admission import Admission
from sef.ems._registry import Event
from sef.interface import Variant, to_json

INTERFACE = "edu.pdx.powerlab.demo"
PROPERTY = "Telemetry"
PATTERN = "sef/agents/+/props/#"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, sender time of message 0
TARGET_RATIO = 0.5
TARGET_RATE = 20_000.0
IDLE_TIMEOUT_S = 3.0  # a consumer that received nothing for this long has got all it will
BARE = "bare gmqtt"
EMS_NAME = "SEF EMS"
BARE_ID = "bench-bare"
EMS_ID = "bench-ems"

console = Console()


def progress_bar(console: Console) -> Progress:
    """The benches' progress display: description, bar, done/total, elapsed."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        refresh_per_second=4,
        transient=True,
    )


# -- the stream -------------------------------------------------------------------------


def agent_id(index: int) -> str:
    return f"bat-{index:04d}"


def topic(index: int) -> str:
    return f"sef/agents/{agent_id(index)}/props/{INTERFACE}/{PROPERTY}"


def update(k: int, agents: int) -> PropertyUpdate:
    """Message ``k`` of the stream: agent ``k % agents``, its ``seq`` is ``k // agents``."""
    ts = round(T0 + k / 1000.0, 3)
    value = to_json(
        "a{sv}",
        {
            "TimeStamp": Variant("u", int(ts)),
            "Sys_SOC": Variant("d", round(20.0 + (k * 7 % 6000) / 100.0, 2)),
        },
    )
    return PropertyUpdate(value=value, ts=ts, seq=k // agents)


def produce(
    host: str, port: int, qos: int, messages: int, agents: int, part: int, parts: int, sent: Any
) -> None:
    """Producer process: publish this part's messages (agents ``i % parts == part``)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, range(os.cpu_count() or 1))  # not the measuring CPU only
    logging.basicConfig(level=logging.WARNING)
    batch = [
        (topic(k % agents), update(k, agents).to_payload())
        for k in range(messages)
        if (k % agents) % parts == part
    ]
    asyncio.run(_publish(host, port, qos, batch, sent))


async def _publish(
    host: str, port: int, qos: int, batch: list[tuple[str, bytes]], sent: Any
) -> None:
    client = gmqtt.Client(f"bench-producer-{os.getpid()}")
    await client.connect(host, port, keepalive=60, version=MQTTv311)
    storage = client._persistent_storage  # inflight QoS 1 publishes (not acknowledged yet)
    for i, (name, payload) in enumerate(batch, 1):
        client.publish(name, payload, qos=qos)
        if i % 500 == 0:
            await asyncio.sleep(0)  # let the loop write and read PUBACKs
            while len(storage._messages) > 20_000:
                await asyncio.sleep(0.001)
            sent.value = i
    await asyncio.wait_for(storage.wait_empty(), 60.0)  # the broker has every message
    sent.value = len(batch)
    await client.disconnect()


# -- consumers --------------------------------------------------------------------------


@dataclass
class Counter:
    """Messages a consumer got, and when the first and the last arrived (perf_counter s)."""

    expected: int
    count: int = 0
    first: float = 0.0
    last: float = 0.0
    cpu_first: float = 0.0
    cpu_last: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def tick(self) -> None:
        now = time.perf_counter()
        if not self.count:
            self.first = now
            self.cpu_first = time.process_time()
        self.count += 1
        self.last = now
        if self.count == self.expected:
            self.cpu_last = time.process_time()
            self.done.set()

    @property
    def rate(self) -> float:
        span = self.last - self.first
        return (self.count - 1) / span if self.count > 1 and span > 0 else 0.0

    @property
    def cpu_rate(self) -> float:
        """Messages per CPU second of this process (the consumer) between the first and
        the last message: a figure the load of a shared machine disturbs less."""
        span = self.cpu_last - self.cpu_first
        return (self.count - 1) / span if self.count > 1 and span > 0 else 0.0


@dataclass
class Result:
    consumer: str
    received: int
    seconds: float
    rate: float
    cpu_rate: float
    checks: dict[str, Any] = field(default_factory=dict)


async def wait_drained(counter: Counter, progress: Progress, label: str) -> None:
    """Until the counter is complete or idle for :data:`IDLE_TIMEOUT_S`; shows a bar."""
    task = progress.add_task(label, total=counter.expected)
    seen, idle_since = -1, time.monotonic()
    while not counter.done.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(counter.done.wait(), 0.25)
        progress.update(task, completed=counter.count)
        if counter.count != seen:
            seen, idle_since = counter.count, time.monotonic()
        elif time.monotonic() - idle_since > IDLE_TIMEOUT_S:
            break
    progress.update(task, completed=counter.count)
    progress.remove_task(task)


async def bare_session(
    host: str, port: int, on_message: Callable[..., int] | None = None
) -> gmqtt.Client:
    client = gmqtt.Client(BARE_ID, clean_session=False)
    subscribed = asyncio.get_running_loop().create_future()
    client.on_message = on_message or (lambda *a: 0)

    def on_subscribe(*_: Any) -> None:
        if not subscribed.done():
            subscribed.set_result(None)

    client.on_subscribe = on_subscribe
    await client.connect(host, port, keepalive=60, version=MQTTv311)
    client.subscribe(PATTERN, qos=1)
    # on a reconnect the broker may send the whole queued session before the SUBACK
    await asyncio.wait_for(subscribed, 120.0)
    return client


async def drain_bare(host: str, port: int, expected: int, progress: Progress) -> Result:
    counter = Counter(expected)
    loads, tick = json.loads, counter.tick

    def on_message(client: Any, name: str, payload: bytes, qos: int, props: Any) -> int:
        loads(payload)
        tick()
        return 0

    client = await bare_session(host, port, on_message)
    await wait_drained(counter, progress, "  drain bare gmqtt")
    await client.disconnect()
    return Result(BARE, counter.count, counter.last - counter.first, counter.rate, counter.cpu_rate)


def make_ems(url: str, on_event: Callable[[Event], None] | None = None) -> EMS:
    # every agent admitted at once and no rebirth asked: the bench measures ingest, not
    # admission (the default Admission caps a registry at 10 000 agents and takes 100 new
    # ones a second) nor the rebirth requests to its telemetry-only (incomplete) agents
    ems = EMS(
        url,
        EMS_ID,
        announce=False,
        on_event=on_event,
        admission=Admission.open(),
        request_rebirth=False,
    )
    ems.bus.client_id = EMS_ID  # a fixed id and a persistent session, to find the queue again
    ems.bus.clean_session = False
    return ems


async def drain_ems(
    url: str,
    expected: int,
    agents: int,
    progress: Progress,
    profile: cProfile.Profile | None = None,
) -> Result:
    counter = Counter(expected)
    tick = counter.tick

    def on_event(event: Event) -> None:
        if event.kind == "property":
            tick()

    ems = make_ems(url, on_event)
    if profile is not None:
        profile.enable()
    await ems.start(timeout_s=120.0)  # a loaded machine: the broker answers late
    await wait_drained(counter, progress, "  drain SEF EMS" + (" (cProfile)" if profile else ""))
    if profile is not None:
        profile.disable()
    await ems.stop()
    return Result(
        EMS_NAME,
        counter.count,
        counter.last - counter.first,
        counter.rate,
        counter.cpu_rate,
        check_registry(ems, expected, agents),
    )


def check_registry(ems: EMS, expected: int, agents: int) -> dict[str, Any]:
    """Every agent's last value stored, no sequence gaps, no bad messages."""
    registry = ems.registry
    last_ok = 0
    key = f"{INTERFACE}.{PROPERTY}"
    for a in range(agents):
        last_k = a + ((expected - 1 - a) // agents) * agents if a < expected else None
        record = registry.get(agent_id(a))
        if last_k is None or record is None:
            continue
        want, got = update(last_k, agents), record.properties.get(key)
        if (
            got is not None
            and got.value == want.value
            and got.ts == want.ts
            and record.expected_seq == (want.seq or 0) + 1
        ):
            last_ok += 1
    return {
        "agents": len(registry.agents),
        "last_value_ok": last_ok,
        "gaps": sum(r.gaps for r in registry.agents.values()),
        "bad_messages": registry.bad_messages,
        "registry_messages": registry.messages,
    }


# -- orchestration ----------------------------------------------------------------------


async def produce_all(
    mosquitto: Mosquitto, args: argparse.Namespace, progress: Progress, label: str
) -> float:
    ctx = mp.get_context("spawn")
    counters = [ctx.Value("q", 0) for _ in range(args.producers)]
    procs = [
        ctx.Process(
            target=produce,
            args=(
                mosquitto.host,
                mosquitto.port,
                args.qos,
                args.messages,
                args.agents,
                p,
                args.producers,
                counters[p],
            ),
            daemon=True,
        )
        for p in range(args.producers)
    ]
    task = progress.add_task(label, total=args.messages)
    t0 = time.perf_counter()
    for proc in procs:
        proc.start()
    while any(proc.is_alive() for proc in procs):
        progress.update(task, completed=sum(c.value for c in counters))
        await asyncio.sleep(0.1)
    elapsed = time.perf_counter() - t0
    progress.remove_task(task)
    bad = [proc.exitcode for proc in procs if proc.exitcode]
    if bad:
        raise RuntimeError(f"a producer failed (exit codes {bad})")
    return elapsed


async def run(args: argparse.Namespace, mosquitto: Mosquitto) -> list[list[Result]]:
    url, host, port = mosquitto.url, mosquitto.host, mosquitto.port
    # create both persistent sessions, then leave them offline so the broker queues for them
    client = await bare_session(host, port)
    await client.disconnect()
    ems = make_ems(url)
    await ems.start(timeout_s=120.0)  # a loaded machine: the broker answers late
    await asyncio.sleep(0.3)  # the EMS subscribes without waiting for SUBACK
    await ems.stop()

    rounds: list[list[Result]] = []
    with progress_bar(console) as progress:
        for r in range(args.rounds + bool(args.profile)):
            profiling = r == args.rounds
            title = "profile" if profiling else f"round {r + 1}/{args.rounds}"
            seconds = await produce_all(mosquitto, args, progress, f"{title}: publish")
            console.print(
                f"{title}: published {args.messages:,} messages at QoS {args.qos} in "
                f"{seconds:.1f} s ({args.producers} producer processes)"
            )
            if profiling:
                profile = cProfile.Profile()
                await drain_ems(url, args.messages, args.agents, progress, profile)
                await drain_bare(host, port, args.messages, progress)  # empty its queue
                print_profile(profile)
                break
            results: list[Result] = []
            order = ("bare", "ems") if r % 2 == 0 else ("ems", "bare")
            for which in order:
                if which == "bare":
                    results.append(await drain_bare(host, port, args.messages, progress))
                else:
                    results.append(await drain_ems(url, args.messages, args.agents, progress))
                res = results[-1]
                console.print(
                    f"  {res.consumer}: {res.received:,} messages, {res.rate:,.0f} msg/s "
                    f"({res.cpu_rate:,.0f} msg per CPU second)"
                )
            rounds.append(results)
    return rounds


def print_profile(profile: cProfile.Profile) -> None:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    console.print("[bold]cProfile of one EMS drain (sorted by own time)[/bold]")
    console.print(out.getvalue(), markup=False, highlight=False)


def report(args: argparse.Namespace, rounds: list[list[Result]]) -> None:
    bare = [next(res for res in results if res.consumer == BARE) for results in rounds]
    ems = [next(res for res in results if res.consumer == EMS_NAME) for results in rounds]
    ratios = [e.rate / b.rate if b.rate else 0.0 for b, e in zip(bare, ems, strict=True)]

    cpu_ratios = [
        e.cpu_rate / b.cpu_rate if b.cpu_rate else 0.0 for b, e in zip(bare, ems, strict=True)
    ]
    per_round = Table(title="Rounds (msg/s of wall time; msg per CPU second of the consumer)")
    for col in ("round", BARE, EMS_NAME, "EMS / bare", "bare CPU", "EMS CPU", "ratio CPU"):
        per_round.add_column(col, justify="right")
    for i, (b, e, ratio, cpu_ratio) in enumerate(
        zip(bare, ems, ratios, cpu_ratios, strict=True), 1
    ):
        per_round.add_row(
            str(i),
            f"{b.rate:,.0f}",
            f"{e.rate:,.0f}",
            f"{ratio:.1%}",
            f"{b.cpu_rate:,.0f}",
            f"{e.cpu_rate:,.0f}",
            f"{cpu_ratio:.1%}",
        )
    console.print(per_round)

    table = Table(
        title=f"Telemetry ingest: QoS {args.qos}, {args.agents:,} agents, "
        f"median of {args.rounds} rounds"
    )
    for col in ("consumer", "published", "received", "seconds", "msg/s"):
        table.add_column(col, justify="left" if col == "consumer" else "right")
    medians: dict[str, float] = {}
    for name, results in ((BARE + " + json.loads", bare), (EMS_NAME + " registry", ems)):
        medians[name] = rate = statistics.median(res.rate for res in results)
        mid = min(results, key=lambda res: abs(res.rate - rate))
        table.add_row(
            name, f"{args.messages:,}", f"{mid.received:,}", f"{mid.seconds:.2f}", f"{rate:,.0f}"
        )
    console.print(table)

    want_last = min(args.agents, args.messages)
    for i, res in enumerate(ems, 1):
        c = res.checks
        console.print(
            f"EMS round {i}: agents {c['agents']:,}/{args.agents:,}, last value "
            f"stored {c['last_value_ok']:,}/{want_last:,}, registry messages "
            f"{c['registry_messages']:,}, gaps {c['gaps']}, bad messages "
            f"{c['bad_messages']}"
        )
    complete = all(res.received == args.messages for res in bare + ems)
    consistent = all(
        res.checks["gaps"] == 0
        and res.checks["bad_messages"] == 0
        and res.checks["last_value_ok"] == want_last
        for res in ems
    )
    received = " / ".join(f"{res.received:,}" for res in bare + ems)
    console.print(
        f"received vs published ({args.messages:,} per consumer and round; bare "
        f"rounds, then EMS rounds): {received}: "
        + ("[green]none lost[/green]" if complete else "[red]MESSAGES LOST[/red]")
    )
    console.print(
        "EMS registry consistent (every last value, 0 gaps, 0 bad messages): "
        + ("[green]yes[/green]" if consistent else "[red]NO[/red]")
    )

    ems_rate = medians[EMS_NAME + " registry"]
    bare_rate = medians[BARE + " + json.loads"]
    ratio = statistics.median(ratios)
    console.print(
        f"ratio EMS / bare: {ratio:.1%} (median of the per-round ratios; ratio of "
        f"the medians {ems_rate / bare_rate if bare_rate else 0.0:.1%})"
    )

    def verdict(ok: bool) -> str:
        return "[bold green]PASS[/bold green]" if ok else "[bold red]FAIL[/bold red]"

    console.print(
        f"{verdict(ratio >= TARGET_RATIO)} EMS >= {TARGET_RATIO:.0%} of the bare "
        f"client: {ratio:.1%}"
    )
    console.print(
        f"{verdict(ems_rate >= TARGET_RATE)} EMS >= {TARGET_RATE:,.0f} msg/s: {ems_rate:,.0f} msg/s"
    )
    cpu_ratio = statistics.median(cpu_ratios)
    ems_cpu = statistics.median(res.cpu_rate for res in ems)
    console.print(
        f"per CPU second of the consumer (load {os.getloadavg()[0]:.1f}): EMS / bare "
        f"{cpu_ratio:.1%} {verdict(cpu_ratio >= TARGET_RATIO)}, EMS {ems_cpu:,.0f} msg/s "
        f"{verdict(ems_cpu >= TARGET_RATE)}"
    )
    if not (complete and consistent):
        console.print(
            "[bold red]WARNING: messages were lost or the registry is inconsistent; "
            "the rates above are not comparable[/bold red]"
        )


def pin(pid: int, cpu: int) -> bool:
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        return False
    os.sched_setaffinity(pid, {cpu})
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=200_000, help="messages per round")
    ap.add_argument("--agents", type=int, default=1000, help="simulated agents")
    ap.add_argument("--qos", type=int, choices=(0, 1), default=1, help="publish QoS")
    ap.add_argument("--rounds", type=int, default=3, help="rounds (the median is reported)")
    ap.add_argument("--producers", type=int, default=2, help="producer processes")
    ap.add_argument("--profile", action="store_true", help="profile one more EMS drain")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    args = ap.parse_args()
    if args.messages < 2 or args.agents < 1 or args.rounds < 1 or args.producers < 1:
        ap.error("need --messages >= 2 and --agents, --rounds, --producers >= 1")
    logging.basicConfig(level=logging.WARNING)

    # both offline sessions must hold a whole round; QoS 0 is only queued when asked to
    extra = f"max_queued_messages {args.messages + 10_000}\nqueue_qos0_messages true\n"
    with Mosquitto(extra_config=extra) as mosquitto:
        assert mosquitto.process is not None
        pinned = not args.no_pin and pin(mosquitto.process.pid, 1) and pin(0, 0)
        console.print(
            f"Mosquitto on {mosquitto.url}; consumer process "
            + ("pinned to CPU 0, broker to CPU 1" if pinned else "not pinned")
            + f"; Python {sys.version.split()[0]}, gmqtt {gmqtt.__version__}"
        )
        sample = update(args.messages - 1, args.agents).to_payload()
        console.print(f"payload example ({len(sample)} bytes): {sample.decode()}")
        rounds = asyncio.run(run(args, mosquitto))
    report(args, rounds)


if __name__ == "__main__":
    main()

"""Bench (issue 3): latency from an EMS call to the battery's register change, via the BIS.

Method
------
Three processes, so that no event loop measures itself:

* the **battery emulator** (:class:`sef.emulators.battery.BatteryEmulator`, real clock) in
  its own process, subclassed by one hook only: when a Modbus write has been stored in
  the SunSpec image, ``_apply`` records ``time.monotonic_ns()`` for a write of model 124
  ``InWRte``/``OutWRte`` (the power window; the setpoint changes at that instant) and for
  a write of ``StorCtl_Mod`` (the last control write of a command), and sends
  ``(kind, value, t)`` to the bench through a pipe;
* the **BIS** (:class:`sef.agents.bis.BISAgent`, default ``poll_s`` 1 s, real clock) in its
  own process, connected to the emulator over Modbus TCP and to Mosquitto. Unless
  ``--no-trace``, its instance is wrapped (no class or library change) to timestamp each
  stage of a call: MQTT message in, handler entered, sequencer applies the event,
  ``write_points`` entered, each Modbus write sent and answered; one record per call
  goes back through a second pipe;
* the **EMS** (:class:`sef.ems.EMS`) in the bench process, which makes the calls.

Mosquitto (:class:`sef.broker.Mosquitto`) runs on a free port. ``time.monotonic_ns()``
is ``CLOCK_MONOTONIC``, one system-wide clock on Linux, so timestamps taken in the three
processes are directly comparable.

Each call is ``EnergyMethod([[cmd, 4, 0]])`` to the BIS, alternating ``charge`` and
``discharge`` at 4 kW (open-ended), so every call moves ``InWRte`` between +50 % and
-50 % (``WChaMax`` = 8 kW). Calls are made with ``ems.call(..., reply=True)`` (the
default; ``--no-reply`` sends them with ``reply=False``); the latency that counts is
**from just before ``ems.call`` to the emulator storing the new ``InWRte``**, whatever
the reply does. Calls are serial: the next one starts once the emulator has seen the
command's last write (``StorCtl_Mod``), the reply has arrived and the BIS trace record is
in. ``--warmup`` calls (20) are made first and not counted, then ``--calls`` (1 000).

Baseline, same run, same emulator, after the EMS calls (the BIS is still connected and
polling once a second, as during the EMS calls): a bare
``pymodbus.client.AsyncModbusTcpClient`` in the bench process writes the same four
model-124 registers the BIS writes in one FC16 request (``OutWRte``, ``InWRte``,
``InOutWRte_WinTms``, ``InOutWRte_RvrtTms``, alternating ±50 %), ``--warmup`` + ``--calls``
times, serially; its round trip is timed in the bench process (and its one-way time to
the emulator's register change is shown too).

The bench prints p50/p90/p99/max (ms) for both, the ratio
p99(EMS→register) / p99(raw write round trip), PASS/FAIL against the target of issue 3
(p99 < 50 ms on loopback) and, with the trace, where the time goes stage by stage.
It exits 0 whatever the result: it is a measurement, not a test. A default run takes
about 50 s (each call waits for its reply, which the MQTT hop delays; see below).

Two knobs are there for diagnosis only: ``--nodelay broker|clients|all`` sets
``TCP_NODELAY`` on Mosquitto's sockets (``set_tcp_nodelay true``) and/or on the EMS's and
the BIS's MQTT sockets (SEF ships neither), to show the cost of Nagle's algorithm on the
MQTT hop; ``--gap-ms`` pauses between calls, so that the poll the BIS starts right after
each control write is over before the next call (back to back by default).

Run::

    .venv/bin/python bench/bis_latency.py [--calls 1000] [--warmup 20] [--no-reply]
        [--no-trace] [--poll 1.0] [--gap-ms 0] [--nodelay none|broker|clients|all]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing as mp
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import pymodbus
from pymodbus.client import AsyncModbusTcpClient
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sef.agents.bis import BISAgent
from sef.broker import Mosquitto
from sef.bus import BusClient, Message
from sef.ems import EMS, Event
from sef.emulators.battery import BatteryEmulator
from sef.interface import DEMO_INTERFACE
from sef.protocols.sunspec.mdef import encode_point, model_def

TARGET_P99_MS = 50.0
RATE_KW = 4
AGENT_ID = "bis-bench"
KIND_RATE, KIND_MODE = 1, 2  # emulator events: InWRte/OutWRte stored, StorCtl_Mod stored
RATE_POINTS = ("OutWRte", "InWRte", "InOutWRte_WinTms", "InOutWRte_RvrtTms")
WAIT_S = 5.0  # a call whose register change is not seen within this is counted as lost

console = Console()


def now_ns() -> int:
    """CLOCK_MONOTONIC in ns: one clock for every process of the machine (Linux)."""
    return time.monotonic_ns()


# -- emulator process -------------------------------------------------------------------


class TimedBattery(BatteryEmulator):
    """The emulator, reporting the instant each model-124 control write is stored."""

    def __init__(self, conn: Connection, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._conn = conn

    def _apply(self, new: dict[tuple[int, str], Any]) -> None:
        t = now_ns()  # _write calls _apply right after storing the registers
        super()._apply(new)
        if (124, "InWRte") in new:
            self._conn.send((KIND_RATE, float(new[(124, "InWRte")]), t))
        if (124, "StorCtl_Mod") in new:
            self._conn.send((KIND_MODE, float(new[(124, "StorCtl_Mod")]), t))


def emulator_main(conn: Connection) -> None:
    """Emulator process: serve on a free port, report (port, OutWRte address), then run."""
    logging.basicConfig(level=logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_emulator(conn))


async def _serve_emulator(conn: Connection) -> None:
    emulator = TimedBattery(conn, port=0)
    _, port = await emulator.start()
    conn.send(("ready", port, emulator.image.address(124, RATE_POINTS[0])))
    try:
        await emulator.run()
    finally:
        await emulator.stop()


# -- BIS process ------------------------------------------------------------------------


def bis_main(
    broker_url: str, modbus_port: int, poll_s: float, conn: Connection | None, nodelay: bool
) -> None:
    """BIS process: the unmodified agent, its instance wrapped for timestamps if ``conn``."""
    logging.basicConfig(level=logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_bis(broker_url, modbus_port, poll_s, conn, nodelay))


async def _serve_bis(
    broker_url: str, modbus_port: int, poll_s: float, conn: Connection | None, nodelay: bool
) -> None:
    agent = BISAgent(
        AGENT_ID, broker_url, modbus_host="127.0.0.1", modbus_port=modbus_port, poll_s=poll_s
    )  # pymodbus wants a running loop to build its client
    if conn is not None:
        instrument(agent, conn)
    await agent.start()
    if nodelay:
        set_nodelay(agent.bus)
    try:
        await asyncio.Event().wait()
    finally:
        await asyncio.shield(agent.stop())


def set_nodelay(bus: BusClient) -> None:
    """TCP_NODELAY on a connected bus client's socket (gmqtt leaves Nagle on)."""
    transport = bus._client._connection._transport  # type: ignore[union-attr]
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def instrument(agent: BISAgent, conn: Connection) -> None:
    """Timestamp the stages of each EnergyMethod call (instance attributes only).

    A record is ``{"n": calls received so far, stage: t_ns, ...}`` sent once the controls
    are written; stages: ``recv`` (MQTT message handed to the agent), ``handler``
    (EnergyMethod entered, after the call queue and argument decoding), ``apply`` (the
    sequencer applies the event), ``write_points`` (model-124 write entered, i.e. after
    the lock), ``w1``/``w1_done`` (FC16 rates sent/answered; before ``w1``: the scale
    factor read), ``w2``/``w2_done`` (FC6 ``StorCtl_Mod``, same) and ``reply``.
    """
    state: dict[str, Any] = {"n": 0, "rec": {}}

    def mark(stage: str) -> None:
        state["rec"].setdefault(stage, now_ns())

    on_message = agent.bus._on_message

    def traced_on_message(message: Message) -> None:
        if message.topic.endswith("/call/" + DEMO_INTERFACE + "/EnergyMethod"):
            state["n"] += 1
            state["rec"] = {"n": state["n"], "recv": now_ns()}
        on_message(message)

    agent.bus._on_message = traced_on_message

    key = (DEMO_INTERFACE, "EnergyMethod")
    handler = agent._handlers[key]

    async def traced_handler(*args: Any) -> Any:
        mark("handler")
        return await handler(*args)

    agent._handlers[key] = traced_handler

    apply = agent.sequencer.apply

    async def traced_apply(event: Any) -> None:
        mark("apply")
        result = apply(event)
        if isinstance(result, Awaitable):
            await result

    agent.sequencer.apply = traced_apply

    write_points = agent.device.modbus.write_points

    async def traced_write_points(*args: Any, **kwargs: Any) -> None:
        mark("write_points")
        await write_points(*args, **kwargs)

    write_registers = agent.device.modbus.write_registers

    async def traced_write_registers(address: int, values: list[int]) -> None:
        stage = "w1" if "w1" not in state["rec"] else "w2"
        mark(stage)
        await write_registers(address, values)
        mark(stage + "_done")

    device_apply = agent.device.apply

    async def traced_device_apply(event: Any, left_s: float | None) -> None:
        rec = state["rec"]
        await device_apply(event, left_s)
        if "recv" in rec and "sent" not in rec:
            rec["sent"] = 1
            conn.send(dict(rec))

    reply = agent.calls._reply

    def traced_reply(*args: Any) -> None:
        mark("reply")
        reply(*args)

    setattr(agent.device.modbus, "write_points", traced_write_points)  # noqa: B010 (method slot)
    setattr(agent.device.modbus, "write_registers", traced_write_registers)  # noqa: B010
    setattr(agent.device, "apply", traced_device_apply)  # noqa: B010
    setattr(agent.calls, "_reply", traced_reply)  # noqa: B010


# -- the bench process --------------------------------------------------------------------


@dataclass
class Inbox:
    """Messages arriving on a pipe, read by the event loop as they come."""

    conn: Connection
    items: list[Any] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def attach(self) -> None:
        asyncio.get_running_loop().add_reader(self.conn.fileno(), self._read)

    def detach(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self.conn.fileno())

    def _read(self) -> None:
        try:
            while self.conn.poll():
                self.items.append(self.conn.recv())
        except (EOFError, OSError):
            self.detach()
        self.arrived.set()

    async def wait_for(
        self, pick: Callable[[Any], bool], start: int, deadline: float
    ) -> tuple[Any, int] | None:
        """First item from index ``start`` on that ``pick`` accepts (and its index)."""
        while True:
            for i in range(start, len(self.items)):
                if pick(self.items[i]):
                    return self.items[i], i
            start = len(self.items)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), remaining)


@dataclass
class CallSample:
    """One EMS call: bench, BIS and emulator timestamps (ns, CLOCK_MONOTONIC)."""

    t0: int
    rate: int | None = None  # emulator stored InWRte
    mode: int | None = None  # emulator stored StorCtl_Mod
    reply: int | None = None  # bench got the reply
    trace: dict[str, int] = field(default_factory=dict)


@dataclass
class RawSample:
    t0: int
    done: int
    stored: int | None


@dataclass
class Results:
    calls: list[CallSample] = field(default_factory=list)
    raw: list[RawSample] = field(default_factory=list)
    lost_calls: int = 0
    lost_raw: int = 0
    bad_replies: int = 0


def spawn(target: Callable[..., None], *args: Any) -> mp.process.BaseProcess:
    proc = mp.get_context("spawn").Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


async def wait_bis_ready(
    ems: EMS, seen: asyncio.Event, bis: mp.process.BaseProcess, timeout_s: float = 15.0
) -> None:
    """Until the EMS has the BIS's telemetry with a battery reading in it."""

    def ready() -> bool:
        record = ems.registry.get(AGENT_ID)
        if record is None:
            return False
        value = record.prop(DEMO_INTERFACE, "Telemetry")
        return isinstance(value, dict) and "Sys_SOC" in value

    deadline = time.monotonic() + timeout_s
    while not ready():
        if not bis.is_alive():
            raise RuntimeError(f"the BIS process exited with code {bis.exitcode}")
        if time.monotonic() > deadline:
            raise RuntimeError("the BIS did not report a battery reading in time")
        seen.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(seen.wait(), 0.2)


def rate_stored(want: float, t0: int) -> Callable[[Any], bool]:
    """Picks the emulator event "InWRte = ``want`` stored after ``t0``"."""
    return lambda e: bool(e[0] == KIND_RATE and e[2] >= t0 and abs(e[1] - want) < 1e-6)


def mode_stored(e: Any) -> bool:
    return bool(e[0] == KIND_MODE)


def call_number(n: int) -> Callable[[Any], bool]:
    """Picks the BIS trace record of the ``n``-th EnergyMethod call received."""
    return lambda r: bool(r.get("n") == n)


async def ems_calls(
    args: argparse.Namespace,
    ems: EMS,
    emu: Inbox,
    trace: Inbox | None,
    progress: Progress,
    results: Results,
) -> None:
    total = args.warmup + args.calls
    task = progress.add_task("EMS → BIS → emulator calls", total=total)
    for k in range(total):
        cmd = "charge" if k % 2 == 0 else "discharge"
        want_rate = 100.0 * RATE_KW / 8.0 * (1 if cmd == "charge" else -1)
        emu_start = len(emu.items)
        t0 = now_ns()
        replies = await ems.call(
            AGENT_ID, DEMO_INTERFACE, "EnergyMethod", [[[cmd, RATE_KW, 0]]], reply=not args.no_reply
        )
        sample = CallSample(t0)
        if not args.no_reply:
            sample.reply = now_ns()
            if not replies or not replies[0].ok:
                results.bad_replies += k >= args.warmup
        deadline = time.monotonic() + WAIT_S
        got = await emu.wait_for(rate_stored(want_rate, t0), emu_start, deadline)
        if got is not None:
            sample.rate = got[0][2]
            mode = await emu.wait_for(mode_stored, got[1] + 1, deadline)
            sample.mode = mode[0][2] if mode is not None else None
        if trace is not None:
            rec = await trace.wait_for(call_number(k + 1), 0, deadline)
            if rec is not None:
                sample.trace = rec[0]
            trace.items = [r for r in trace.items if r.get("n", 0) > k + 1]
        del emu.items[:]  # every event of this call has been looked at
        if args.gap_ms > 0:
            await asyncio.sleep(args.gap_ms / 1000)
        if k >= args.warmup:
            if sample.rate is None:
                results.lost_calls += 1
            results.calls.append(sample)
        progress.update(task, completed=k + 1)
    progress.remove_task(task)


async def raw_writes(
    args: argparse.Namespace,
    port: int,
    address: int,
    emu: Inbox,
    progress: Progress,
    results: Results,
) -> None:
    mdef = model_def(124)
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2.0, retries=0)
    if not await client.connect():
        raise RuntimeError("raw pymodbus client cannot connect to the emulator")
    frames = []
    for pct in (50.0, -50.0):
        values = {"OutWRte": -pct, "InWRte": pct, "InOutWRte_WinTms": 0, "InOutWRte_RvrtTms": 60}
        regs: list[int] = []
        for name in RATE_POINTS:
            p = mdef.point(name)
            regs += encode_point(p, values[name], -2 if name.endswith("WRte") else 0)
        frames.append((pct, regs))
    total = args.warmup + args.calls
    task = progress.add_task("raw pymodbus write_registers", total=total)
    try:
        for k in range(total):
            pct, regs = frames[k % 2]
            start = len(emu.items)
            t0 = now_ns()
            rr = await client.write_registers(address, regs, device_id=1)
            done = now_ns()
            if rr.isError():
                raise RuntimeError(f"raw write refused: {rr}")
            got = await emu.wait_for(rate_stored(pct, t0), start, time.monotonic() + WAIT_S)
            del emu.items[:]
            if k >= args.warmup:
                results.lost_raw += got is None
                results.raw.append(RawSample(t0, done, got[0][2] if got else None))
            progress.update(task, completed=k + 1)
    finally:
        client.close()
        progress.remove_task(task)


async def run(args: argparse.Namespace, mosquitto: Mosquitto) -> Results:
    results = Results()
    ctx = mp.get_context("spawn")
    emu_rx, emu_tx = ctx.Pipe(duplex=False)
    emulator = spawn(emulator_main, emu_tx)
    procs = [emulator]
    try:
        if not emu_rx.poll(15.0):
            raise RuntimeError("the emulator process did not start")
        _, port, address = emu_rx.recv()
        trace_rx, trace_tx = ctx.Pipe(duplex=False) if not args.no_trace else (None, None)
        procs.append(
            spawn(
                bis_main,
                mosquitto.url,
                port,
                args.poll,
                trace_tx,
                args.nodelay in ("clients", "all"),
            )
        )
        seen = asyncio.Event()

        def on_event(event: Event) -> None:
            seen.set()

        emu = Inbox(emu_rx)
        trace = Inbox(trace_rx) if trace_rx is not None else None
        emu.attach()
        if trace is not None:
            trace.attach()
        ems = EMS(mosquitto.url, "ems-bench", on_event=on_event)
        await ems.start()
        if args.nodelay in ("clients", "all"):
            set_nodelay(ems.bus)
        try:
            await wait_bis_ready(ems, seen, procs[1])
            console.print(
                f"emulator (pid {emulator.pid}) on 127.0.0.1:{port}, BIS "
                f"(pid {procs[1].pid}) polling every {args.poll:g} s, EMS in the "
                f"bench (pid {os.getpid()}); calls with reply="
                f"{not args.no_reply}, BIS trace {'off' if args.no_trace else 'on'}"
            )
            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
            )
            with Progress(
                *columns, console=console, refresh_per_second=8, transient=True
            ) as progress:
                await ems_calls(args, ems, emu, trace, progress, results)
                await raw_writes(args, port, address, emu, progress, results)
        finally:
            await ems.stop()
            emu.detach()
            if trace is not None:
                trace.detach()
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.join(5)
    return results


# -- report -------------------------------------------------------------------------------


def ms(values: Sequence[float]) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.asarray(values, dtype=np.float64) / 1e6


def stats(values: np.ndarray[Any, np.dtype[np.float64]]) -> dict[str, float]:
    if values.size == 0:
        return {k: float("nan") for k in ("p50", "p90", "p99", "max", "mean")}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": float(values.max()),
        "mean": float(values.mean()),
    }


def add_row(
    table: Table,
    label: str,
    values: np.ndarray[Any, np.dtype[np.float64]],
    style: str | None = None,
) -> dict[str, float]:
    s = stats(values)
    table.add_row(
        label,
        f"{values.size:,}",
        *(f"{s[k]:.2f}" for k in ("p50", "p90", "p99", "max", "mean")),
        style=style,
    )
    return s


# (label, from stage, to stage, counted in the latency) of the BIS trace; "t0" is the bench's
# time before ems.call, "rate"/"mode" the emulator's; the counted stages add up to the total
STAGES = (
    ("EMS call → BIS gets the MQTT message (EMS, Mosquitto, BIS)", "t0", "recv", True),
    ("BIS call queue + argument decoding → EnergyMethod", "recv", "handler", True),
    ("EnergyMethod → sequencer applies the event", "handler", "apply", True),
    ("apply → write_points entered (clip, wait for the BIS lock)", "apply", "write_points", True),
    ("scale-factor read before the write (1 Modbus read)", "write_points", "w1", True),
    ("FC16 rates sent → emulator stores InWRte", "w1", "rate", True),
    ("emulator stored InWRte → BIS gets the FC16 answer", "rate", "w1_done", False),
    ("FC16 answered → FC6 StorCtl_Mod sent (no SF to read)", "w1_done", "w2", False),
    ("FC6 sent → emulator stores StorCtl_Mod", "w2", "mode", False),
)
MQTT_SLOW_MS = 5.0  # a median MQTT hop this slow on loopback means stalled TCP segments


def report(args: argparse.Namespace, results: Results) -> None:
    ok = [c for c in results.calls if c.rate is not None]
    ems_rate = ms([c.rate - c.t0 for c in ok if c.rate is not None])
    ems_mode = ms([c.mode - c.t0 for c in ok if c.mode is not None])
    ems_reply = ms([c.reply - c.t0 for c in ok if c.reply is not None])
    raw_rt = ms([r.done - r.t0 for r in results.raw])
    raw_oneway = ms([r.stored - r.t0 for r in results.raw if r.stored is not None])

    table = Table(
        title=f"BIS latency on loopback: {args.calls:,} calls / writes after "
        f"{args.warmup} warm-up (ms)"
    )
    table.add_column("path", justify="left")
    for col in ("n", "p50", "p90", "p99", "max", "mean"):
        table.add_column(col, justify="right")
    main = add_row(table, "EMS call → emulator register change (InWRte)", ems_rate, style="bold")
    add_row(table, "EMS call → last control write stored (StorCtl_Mod)", ems_mode)
    if not args.no_reply:
        add_row(table, "EMS call → reply received by the EMS", ems_reply)
    raw = add_row(table, "raw pymodbus write_registers round trip", raw_rt, style="bold")
    add_row(table, "raw pymodbus write → emulator register change", raw_oneway)
    console.print(table)

    if results.lost_calls or results.lost_raw or results.bad_replies:
        console.print(
            f"[red]lost: {results.lost_calls} calls without a register change, "
            f"{results.lost_raw} raw writes, {results.bad_replies} failed replies "
            f"(waited {WAIT_S:g} s each)[/red]"
        )
    ratio = main["p99"] / raw["p99"] if raw["p99"] > 0 else float("nan")
    console.print(
        f"ratio p99(EMS → register) / p99(raw write round trip): {ratio:.1f}x "
        f"({main['p99']:.2f} ms / {raw['p99']:.2f} ms)"
    )
    passed = main["p99"] < TARGET_P99_MS and not results.lost_calls
    verdict = "[bold green]PASS[/bold green]" if passed else "[bold red]FAIL[/bold red]"
    console.print(
        f"{verdict} p99(EMS call → register change) < {TARGET_P99_MS:g} ms: {main['p99']:.2f} ms"
    )

    traced = [c for c in ok if c.trace]
    if traced:
        breakdown(args, traced)


def at(c: CallSample, stage: str) -> int | None:
    """The time (ns) of ``stage`` of call ``c``, None if not recorded."""
    if stage == "t0":
        return c.t0
    if stage == "rate":
        return c.rate
    if stage == "mode":
        return c.mode
    return c.trace.get(stage)


def span(c: CallSample, a: str, b: str) -> float | None:
    x, y = at(c, a), at(c, b)
    return None if x is None or y is None else (y - x) / 1e6


def breakdown(args: argparse.Namespace, calls: list[CallSample]) -> None:
    total = float(np.mean([span(c, "t0", "rate") for c in calls]))
    table = Table(title=f"Where the time goes (BIS trace, {len(calls):,} calls, ms)")
    table.add_column("stage", justify="left")
    for col in ("p50", "p99", "max", "share"):
        table.add_column(col, justify="right")
    for label, a, b, counted in STAGES:
        values = np.asarray([v for c in calls if (v := span(c, a, b)) is not None])
        if values.size == 0:
            continue
        st = stats(values)
        share = f"{st['mean'] / total:.0%}" if counted else "after"
        table.add_row(label, f"{st['p50']:.3f}", f"{st['p99']:.3f}", f"{st['max']:.3f}", share)
    console.print(table)
    console.print(
        "share: of the mean EMS → register latency; 'after': once the setpoint "
        "has changed (not in the latency)"
    )

    slow = sorted(calls, key=lambda c: span(c, "t0", "rate") or 0.0)[-max(1, len(calls) // 100) :]
    parts = [
        f"{b} {np.mean([span(c, a, b) or 0.0 for c in slow]):.2f}"
        for _, a, b, counted in STAGES
        if counted
    ]
    console.print(
        f"slowest 1 % ({len(slow)} calls, {span(slow[0], 't0', 'rate') or 0:.2f} ms "
        f"and up), mean ms per stage: {', '.join(parts)}"
    )
    hops = np.asarray([v for c in calls if (v := span(c, "t0", "recv")) is not None])
    hop = stats(hops)
    if hop["p50"] >= MQTT_SLOW_MS:
        console.print(
            f"[yellow]MQTT hop p50 {hop['p50']:.1f} ms, p99 {hop['p99']:.1f} ms, although a "
            f"loopback round trip is well under a millisecond and the Modbus side takes "
            f"{float(np.median(ms([c.rate - c.trace['recv'] for c in calls if c.rate]))):.2f} "
            "ms (p50): a small TCP segment held back by Nagle's algorithm until the peer's "
            "delayed ACK (up to 40 ms on Linux). "
            + (
                "Compare with --nodelay broker (Mosquitto set_tcp_nodelay true)."
                if args.nodelay == "none"
                else f"(--nodelay {args.nodelay} in this run)"
            )
            + "[/yellow]"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=1000, help="measured calls (and raw writes)")
    ap.add_argument("--warmup", type=int, default=20, help="calls/writes made first, not counted")
    ap.add_argument("--poll", type=float, default=1.0, help="BIS poll_s (real s)")
    ap.add_argument(
        "--gap-ms", type=float, default=0.0, help="pause between calls (default 0: back to back)"
    )
    ap.add_argument("--no-reply", action="store_true", help="call with reply=False")
    ap.add_argument(
        "--no-trace",
        action="store_true",
        help="run the BIS without stage timestamps (no breakdown)",
    )
    ap.add_argument(
        "--nodelay",
        choices=("none", "broker", "clients", "all"),
        default="none",
        help="TCP_NODELAY on the MQTT sockets: Mosquitto's (set_tcp_nodelay), the "
        "EMS's and the BIS's, or all (default none, as SEF ships)",
    )
    args = ap.parse_args()
    if args.calls < 1 or args.warmup < 0 or args.poll <= 0:
        ap.error("need --calls >= 1, --warmup >= 0, --poll > 0")
    logging.basicConfig(level=logging.WARNING)
    extra = "set_tcp_nodelay true\n" if args.nodelay in ("broker", "all") else ""
    with Mosquitto(extra_config=extra) as mosquitto:
        console.print(
            f"Mosquitto on {mosquitto.url}; Python {sys.version.split()[0]}, "
            f"pymodbus {pymodbus.__version__}, {os.cpu_count()} CPUs; clock "
            "CLOCK_MONOTONIC (time.monotonic_ns) in every process"
        )
        t = time.monotonic()
        results = asyncio.run(run(args, mosquitto))
    console.print(f"measured in {time.monotonic() - t:.1f} s")
    report(args, results)


if __name__ == "__main__":
    main()

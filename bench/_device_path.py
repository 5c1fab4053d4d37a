"""Device-path command latency for ``bench/security.py`` (issue 12).

What a user waits for when the EMS commands a device: ``EMS.call`` → Mosquitto → the BIS
(:class:`sef.agents.bis.BISAgent`, what ``sef bis`` runs) → Modbus TCP → the SunSpec
battery emulator storing the new setpoint (model 124 ``InWRte``), timed as
``bench/bis_latency.py`` does (the emulator, in its own process, stamps
``time.monotonic_ns()`` when it stores the write; ``CLOCK_MONOTONIC`` is one clock for
every process on Linux). The time until ``ems.call`` returns with the reply (verified,
when signed) is recorded separately.

Three rigs run side by side for the whole measurement, one per mode, each with its own
emulator process, BIS process and EMS (in the bench process):

* ``plaintext``: the plaintext broker, no credentials (protocol v1);
* ``tls-v1``: the mutual-TLS broker (the ACL of ``sef pki broker-config``), the EMS's and
  the BIS's bus clients with their certificates, no envelopes;
* ``tls-v2``: the same broker, ``EMS(security=...)`` and ``BISAgent(security=...)``:
  every call and reply is a signed envelope, verified before it is acted on.

After ``warmup`` calls per rig, ``rounds`` rounds each make ``calls // rounds`` serial calls
per mode, the modes taking turns call by call (plaintext, TLS, TLS + v2, then the order
rotated), so that a change of machine load hits every mode alike; the ratios against
plaintext are taken per round (p50: the median of the rounds' ratios) and over all calls
(p99). Taking turns also means each rig is idle while the two others make their calls,
as a real EMS's commands are far apart: caches are cold when a command arrives, which
makes the signature work cost more than the back-to-back figures of part 1 (the
verification of a call about 3x, ~0.3 ms, on the 2-CPU machine this was written on).
The rigs use brokers of their own (the caller's), so that the BISes' retained messages
do not reach the other parts of the bench.

With ``cpus=(agent, device)`` (what ``bench/security.py`` passes when it pins) every BIS
runs on the ``agent`` CPU (the EMS's) and every emulator on the ``device`` CPU (the
brokers'): a battery is a machine of its own, never the agent's CPU. Unpinned, Linux
wakes the emulator on the CPU of the BIS that wrote the request to it, where it waits
until the BIS has verified the call's envelope, which the BIS does while the request is
on the wire (:meth:`sef.agents.DeviceAdapter.prepare`): the bench would then charge a
co-location that no deployment has to the envelopes (``--no-pin`` shows it).

Each call is ``EnergyMethod([[cmd, 4, 0]])`` alternating charge and discharge, so every
call moves ``InWRte``; the next call starts when the emulator has stored the command's
last write (``StorCtl_Mod``) and the reply is in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bis_latency import RATE_KW, WAIT_S, Inbox, emulator_main, mode_stored, rate_stored
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from sef.agents.bis import BISAgent
from sef.ems import EMS, Event
from sef.interface import DEMO_INTERFACE
from sef.security import Role, Security

MODES = ("plaintext", "tls-v1", "tls-v2")
LABEL = {
    "plaintext": "plaintext v1",
    "tls-v1": "mutual TLS v1",
    "tls-v2": "mutual TLS + signed envelopes",
}
BIS_IDS = {"plaintext": "bench-bis-plain", "tls-v1": "bench-bis-v1", "tls-v2": "bench-bis-v2"}
EMS_IDS = {"plaintext": "bench-ems-dev", "tls-v1": "bench-ems-dev-v1", "tls-v2": "bench-ems-dev-v2"}
IDENTITIES: tuple[tuple[str, Role], ...] = (
    *((EMS_IDS[m], Role.EMS) for m in ("tls-v1", "tls-v2")),
    *((BIS_IDS[m], Role.AGENT) for m in ("tls-v1", "tls-v2")),
)
"""Certificates the deployment CA must issue for the TLS rigs (before the broker starts)."""
READY_S = 20.0

Files = tuple[str, str, str]
"""Certificate, key and CA file of an identity."""


def _unpin() -> None:
    """Children may run on every CPU (the bench process may be pinned to one)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, range(os.cpu_count() or 1))


def emulator_entry(conn: Connection) -> None:
    """Emulator process: ``bench/bis_latency.py``'s timed battery emulator."""
    _unpin()
    emulator_main(conn)


def bis_entry(
    url: str, modbus_port: int, poll_s: float, agent_id: str, files: Files | None, signed: bool
) -> None:
    """BIS process: the unmodified agent; with ``files``, over TLS, signing if ``signed``."""
    _unpin()
    logging.basicConfig(level=logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_bis(url, modbus_port, poll_s, agent_id, files, signed))


async def _serve_bis(
    url: str, modbus_port: int, poll_s: float, agent_id: str, files: Files | None, signed: bool
) -> None:
    security = Security.load(*map(Path, files)) if files is not None else None
    agent = BISAgent(  # pymodbus wants a running loop to build its client
        agent_id,
        url,
        modbus_host="127.0.0.1",
        modbus_port=modbus_port,
        poll_s=poll_s,
        security=security if signed else None,
    )
    if security is not None and not signed:
        agent.bus.tls = security.client_tls()
    await agent.start()
    try:
        await asyncio.Event().wait()
    finally:
        await asyncio.shield(agent.stop())


@dataclass
class Sample:
    """One call: ms from just before ``ems.call`` to the register change / to the reply."""

    register_ms: float | None
    reply_ms: float
    ok: bool


@dataclass
class Rig:
    """One mode's emulator, BIS and EMS, and its samples per round."""

    mode: str
    ems: EMS
    emu: Inbox
    procs: list[mp.process.BaseProcess]
    count: int = 0
    rounds: list[list[Sample]] = field(default_factory=list)

    @property
    def bis_id(self) -> str:
        return BIS_IDS[self.mode]


def _spawn(target: Callable[..., None], *args: Any) -> mp.process.BaseProcess:
    proc = mp.get_context("spawn").Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


async def start_rig(
    mode: str,
    url: str,
    files: Callable[[str], Files] | None,
    poll_s: float,
    cpus: tuple[int, int] | None = None,
) -> Rig:
    """Emulator, BIS and EMS of ``mode``; returns once the EMS has a battery reading.
    ``cpus``: the BIS's and the emulator's CPU (None: both unpinned)."""
    ctx = mp.get_context("spawn")
    rx, tx = ctx.Pipe(duplex=False)
    procs = [_spawn(emulator_entry, tx)]
    try:
        if not rx.poll(15.0):
            raise RuntimeError(f"{mode}: the emulator process did not start")
        _, port, _ = rx.recv()  # the emulator has unpinned itself: pinning now holds
        if cpus is not None:
            os.sched_setaffinity(procs[0].pid or 0, {cpus[1]})
        tls = mode != "plaintext"
        assert not tls or files is not None
        bis_files = files(BIS_IDS[mode]) if tls and files is not None else None
        procs.append(
            _spawn(bis_entry, url, port, poll_s, BIS_IDS[mode], bis_files, mode == "tls-v2")
        )
        seen = asyncio.Event()

        def on_event(event: Event) -> None:
            seen.set()

        security = Security.load(*map(Path, files(EMS_IDS[mode]))) if tls and files else None
        ems = EMS(
            url,
            EMS_IDS[mode],
            on_event=on_event,
            security=security if mode == "tls-v2" else None,
        )
        if security is not None and mode == "tls-v1":
            ems.bus.tls = security.client_tls()
        emu = Inbox(rx)
        emu.attach()
        await ems.start()
        rig = Rig(mode, ems, emu, procs)
        await _wait_ready(rig, seen)  # the BIS is up (and unpinned itself): pin it now
        if cpus is not None:
            os.sched_setaffinity(procs[1].pid or 0, {cpus[0]})
        return rig
    except BaseException:
        for proc in procs:
            proc.terminate()
        raise


async def _wait_ready(rig: Rig, seen: asyncio.Event) -> None:
    def ready() -> bool:
        record = rig.ems.registry.get(rig.bis_id)
        value = record.prop(DEMO_INTERFACE, "Telemetry") if record is not None else None
        return isinstance(value, dict) and "Sys_SOC" in value

    deadline = time.monotonic() + READY_S
    while not ready():
        if not rig.procs[1].is_alive():
            raise RuntimeError(f"{rig.mode}: the BIS exited with code {rig.procs[1].exitcode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{rig.mode}: the BIS did not report a battery reading in time")
        seen.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(seen.wait(), 0.2)


async def stop_rig(rig: Rig) -> None:
    with contextlib.suppress(Exception):
        await rig.ems.stop()
    rig.emu.detach()
    for proc in reversed(rig.procs):
        proc.terminate()
        proc.join(5)


async def calls(rig: Rig, n: int, progress: Progress, task: Any) -> list[Sample]:
    """``n`` serial calls; each waits for the register change, the last write, the reply."""
    out: list[Sample] = []
    emu = rig.emu
    for _ in range(n):
        cmd = "charge" if rig.count % 2 == 0 else "discharge"
        rig.count += 1
        want = 100.0 * RATE_KW / 8.0 * (1 if cmd == "charge" else -1)
        start = len(emu.items)
        t0 = time.monotonic_ns()
        replies = await rig.ems.call(
            rig.bis_id, DEMO_INTERFACE, "EnergyMethod", [[[cmd, RATE_KW, 0]]]
        )
        reply_ms = (time.monotonic_ns() - t0) / 1e6
        deadline = time.monotonic() + WAIT_S
        got = await emu.wait_for(rate_stored(want, t0), start, deadline)
        if got is not None:
            await emu.wait_for(mode_stored, got[1] + 1, deadline)
        del emu.items[:]
        register_ms = (got[0][2] - t0) / 1e6 if got is not None else None
        out.append(Sample(register_ms, reply_ms, bool(replies) and replies[0].ok))
        progress.advance(task)
    return out


@contextlib.contextmanager
def _progress_task(progress: Progress, label: str, total: int) -> Iterator[Any]:
    task = progress.add_task(label, total=total)
    try:
        yield task
    finally:
        progress.remove_task(task)


async def measure(
    urls: dict[str, str],
    files: Callable[[str], Files],
    *,
    calls_per_mode: int,
    rounds: int,
    warmup: int,
    poll_s: float,
    progress: Progress,
    console: Console,
    cpus: tuple[int, int] | None = None,
) -> dict[str, list[list[Sample]]]:
    """The three rigs, warmed up, then ``rounds`` rounds of calls interleaved mode by mode;
    samples per mode and round. ``cpus``: as for :func:`start_rig`."""
    rigs: list[Rig] = []
    try:
        for mode in MODES:
            rigs.append(await start_rig(mode, urls[mode], files, poll_s, cpus))
        if cpus is not None:
            console.print(
                f"device path: every BIS on CPU {cpus[0]} (with the EMS), every emulator "
                f"on CPU {cpus[1]} (with the brokers)"
            )
        console.print(
            f"device path: 3 rigs (emulator + BIS process each, BIS poll {poll_s:g} s); "
            f"{warmup} warm-up calls each, then {rounds} rounds of "
            f"{calls_per_mode // rounds} calls per mode, the modes taking turns call by call"
        )
        with _progress_task(progress, "  device path: warm-up", warmup * len(rigs)) as task:
            for rig in rigs:
                await calls(rig, warmup, progress, task)
        per_round = calls_per_mode // rounds
        for r in range(rounds):
            label = f"  device path: round {r + 1}/{rounds}"
            for rig in rigs:
                rig.rounds.append([])
            with _progress_task(progress, label, per_round * len(rigs)) as task:
                for i in range(per_round):  # one call per mode in turn, the order rotating
                    k = (r + i) % len(rigs)
                    for rig in rigs[k:] + rigs[:k]:
                        rig.rounds[-1] += await calls(rig, 1, progress, task)
    finally:
        for rig in rigs:
            await stop_rig(rig)
    return {rig.mode: rig.rounds for rig in rigs}


# -- report -------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if values else 0.0


def _register(samples: list[Sample]) -> list[float]:
    return [s.register_ms for s in samples if s.register_ms is not None]


def _table(
    title: str, results: dict[str, list[list[Sample]]], value: Callable[[list[Sample]], list[float]]
) -> tuple[Table, float, float]:
    """Rows per mode; returns the table and the TLS + v2 overheads (p50: median of the
    per-round ratios; p99: all calls)."""
    table = Table(title=title)
    cols = ("mode", "n", "p50", "p90", "p99", "max", "round p50s", "p50 vs plain", "p99 vs plain")
    for col in cols:
        table.add_column(col, justify="left" if col == "mode" else "right")
    base_rounds = [value(r) for r in results["plaintext"]]
    base = [v for r in base_rounds for v in r]
    overheads: dict[str, tuple[float, float]] = {}
    for mode, rounds in results.items():
        per_round = [value(r) for r in rounds]
        pooled = [v for r in per_round for v in r]
        ratio50 = statistics.median(
            pct(x, 50) / pct(b, 50) - 1 for x, b in zip(per_round, base_rounds, strict=True)
        )
        ratio99 = pct(pooled, 99) / pct(base, 99) - 1
        overheads[mode] = (ratio50, ratio99)
        table.add_row(
            LABEL[mode],
            f"{len(pooled):,}",
            *(f"{pct(pooled, q):.2f}" for q in (50, 90, 99)),
            f"{max(pooled, default=0.0):.2f}",
            " ".join(f"{pct(x, 50):.2f}" for x in per_round),
            f"{ratio50:+.0%}",
            f"{ratio99:+.0%}",
        )
    return table, *overheads["tls-v2"]


def report(results: dict[str, list[list[Sample]]], console: Console) -> tuple[float, float]:
    """Print both tables; returns the (p50, p99) overhead of TLS + signed envelopes on the
    EMS → register-change latency."""
    n = sum(len(r) for r in results["plaintext"])
    rounds = len(results["plaintext"])
    table, p50, p99 = _table(
        f"Device path: EMS.call → BIS → Modbus TCP → emulator stores InWRte, {n} calls per "
        f"mode in {rounds} interleaved rounds (ms)",
        results,
        _register,
    )
    console.print(table)
    replies, _, _ = _table(
        "Device path: EMS.call → reply received (v2: signature verified) at the EMS (ms)",
        results,
        lambda samples: [s.reply_ms for s in samples],
    )
    console.print(replies)
    lost = {m: sum(s.register_ms is None for r in rs for s in r) for m, rs in results.items()}
    failed = {m: sum(not s.ok for r in rs for s in r) for m, rs in results.items()}
    if any(lost.values()) or any(failed.values()):
        console.print(
            f"[red]calls without a register change within {WAIT_S:g} s: {lost}; "
            f"failed replies: {failed}[/red]"
        )
    plain = [v for r in results["plaintext"] for v in _register(r)]
    v2 = [v for r in results["tls-v2"] for v in _register(r)]
    v1 = [v for r in results["tls-v1"] for v in _register(r)]
    console.print(
        f"device path p50: plaintext {pct(plain, 50):.2f} ms, TLS "
        f"{pct(v1, 50) - pct(plain, 50):+.2f} ms, signed envelopes "
        f"{pct(v2, 50) - pct(v1, 50):+.2f} ms more"
    )
    return p50, p99

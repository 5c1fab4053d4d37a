"""The swarm runner: starts the worker processes, merges their stats, writes ``--stats``.

Agents are split evenly over the workers; each worker holds one socket per agent, so a
worker may hold at most its RLIMIT_NOFILE hard limit minus a margin
(:func:`plan_processes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import resource
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sef.bus import BrokerURL, BusError, check_id, is_url_list, parse_url_list
from sef.swarm._shared import INTERFACE_TOPICS
from sef.swarm._stats import SwarmStats
from sef.swarm._worker import MAX_PENDING, WorkerConfig

__all__ = ["SwarmConfig", "SwarmError", "SwarmRunner", "plan_processes"]

log = logging.getLogger("sef.swarm")

FD_MARGIN = 256
"""File descriptors a worker keeps free for everything but agent sockets."""


class SwarmError(RuntimeError):
    """A swarm cannot start as configured (the message says why)."""


def plan_processes(agents: int, processes: int | None = None) -> int:
    """Worker processes for ``agents``: ``processes`` if given (checked), else the fewest
    that keep each under RLIMIT_NOFILE's hard limit minus :data:`FD_MARGIN`."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    per = (hard - FD_MARGIN) if hard != resource.RLIM_INFINITY else 1_000_000
    if per < 1:
        raise SwarmError(f"RLIMIT_NOFILE hard limit {hard} leaves no room for agent sockets")
    needed = math.ceil(agents / per)
    if processes is None:
        return max(1, needed)
    if processes < 1:
        raise SwarmError(f"--processes must be at least 1, not {processes}")
    if processes < needed:
        raise SwarmError(
            f"{agents} agents in {processes} processes is {math.ceil(agents / processes)} "
            f"sockets per process; the file descriptor hard limit here is {hard}: use at "
            f"least {needed} processes"
        )
    return processes


@dataclass
class SwarmConfig:
    """A swarm: ``agents`` agents ``{prefix}-000000`` ... on ``broker``.

    Args:
        agents: number of agents.
        broker: broker URL (``mqtt://HOST:PORT``; TLS is not supported, see docs/swarm.md),
            or a comma-separated list of them: each agent starts at the node
            :func:`sef.bus.start_index` picks for its id and moves to the next one after a
            failed attempt or a lost connection.
        groups: groups every agent announces in its About and obeys.
        telemetry_s: period of each agent's Telemetry update, s.
        keepalive_s: MQTT keepalive, s.
        processes: worker processes (None: :func:`plan_processes`).
        connect_rate: new connections per second, over all workers.
        interface_topics: ``v2`` (interface XML once per hash), ``v1`` (per agent) or ``both``.
        stats_path: JSON file rewritten every second with the merged stats.
        sub_qos: QoS of the agents' subscriptions (0 on a NATS cluster: each QoS 1
            subscription is a JetStream consumer there, refused with SUBACK 0x80 at scale).
        puback_log: file every worker appends ``AGENT TS SEQ`` to for each Telemetry update
            the broker acknowledged (PUBACK), once a second.
    """

    agents: int
    broker: str
    groups: list[str] = field(default_factory=lambda: ["g1"])
    prefix: str = "swarm"
    root: str = "sef"
    telemetry_s: float = 60.0
    keepalive_s: int = 10
    processes: int | None = None
    connect_rate: float = 2000.0
    interface_topics: str = "v2"
    stats_path: Path | None = None
    spread_sources: bool = True
    seed: int | None = None
    sub_qos: int = 1
    puback_log: Path | None = None

    def check(self) -> list[BrokerURL]:
        """Validate; returns the parsed broker URLs (:class:`SwarmError` with the reason)."""
        if self.agents < 1 or self.agents > 1_000_000:
            raise SwarmError(f"--agents must be 1..1000000, not {self.agents}")
        try:
            urls = (
                parse_url_list(self.broker)
                if is_url_list(self.broker)
                else [BrokerURL.parse(self.broker)]
            )
            check_id("agent", f"{self.prefix}-{self.agents - 1:06d}")
            for group in self.groups:
                check_id("group", group)
        except (ValueError, BusError) as exc:
            raise SwarmError(str(exc)) from None
        for url in urls:
            if url.tls:
                raise SwarmError("sef swarm speaks plain MQTT only (mqtt://): see docs/swarm.md")
            if url.version != 4:
                raise SwarmError("sef swarm speaks MQTT 3.1.1 only")
            if url.username is not None:
                raise SwarmError("sef swarm does not send a user name (anonymous local broker)")
        if not self.telemetry_s > 0 or not 1 <= self.keepalive_s <= 65535:
            raise SwarmError("--telemetry-s must be > 0 and --keepalive-s 1..65535")
        if not self.connect_rate > 0:
            raise SwarmError("--connect-rate must be > 0")
        if self.interface_topics not in INTERFACE_TOPICS:
            raise SwarmError("--interface-topics must be v2, v1 or both")
        if self.sub_qos not in (0, 1):
            raise SwarmError(f"--sub-qos must be 0 or 1, not {self.sub_qos}")
        return urls


class SwarmRunner:
    """Runs a swarm's workers; :attr:`stats` merges what they report."""

    def __init__(self, config: SwarmConfig) -> None:
        self.config = config
        self.urls = config.check()
        self.url = self.urls[0]
        self.processes = plan_processes(config.agents, config.processes)
        self.stats = SwarmStats()
        self.workers: list[asyncio.subprocess.Process] = []
        self._readers: list[asyncio.Task[None]] = []
        self._writer: asyncio.Task[None] | None = None
        self.exited = asyncio.Event()

    def worker_configs(self) -> list[WorkerConfig]:
        c, n = self.config, self.processes
        per_worker_rate = c.connect_rate / n
        configs, first = [], 0
        for w in range(n):
            count = c.agents // n + (1 if w < c.agents % n else 0)
            configs.append(
                WorkerConfig(
                    self.url.host, self.url.port, first, count, c.prefix, list(c.groups), c.root,
                    c.telemetry_s, c.keepalive_s, per_worker_rate, max(4, MAX_PENDING // n),
                    c.interface_topics,
                    c.spread_sources, w, None if c.seed is None else c.seed + w,
                    [(u.host, u.port) for u in self.urls], c.sub_qos,
                    None if c.puback_log is None else str(c.puback_log),
                )
            )  # fmt: skip
            first += count
        return configs

    async def start(self) -> SwarmRunner:
        """Start the workers (they connect their agents at the configured rate)."""
        self.stats.started = time.time()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for config in self.worker_configs():
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "sef.swarm", config.to_json(),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
                limit=64 * 1024 * 1024,
            )  # fmt: skip
            self.workers.append(proc)
            self._readers.append(asyncio.create_task(self._read(proc, config.worker)))
        if self.config.stats_path is not None:
            self._writer = asyncio.create_task(self._write_stats(self.config.stats_path))
        return self

    async def _read(self, proc: asyncio.subprocess.Process, worker: int) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            try:
                self.stats.update(line.decode())
            except ValueError as exc:
                log.warning("swarm worker %d: unreadable stats line: %s", worker, exc)
        code = await proc.wait()
        if code:
            log.error("swarm worker %d exited with %d", worker, code)
        self.exited.set()

    def snapshot(self) -> dict[str, Any]:
        return self.stats.to_json(time.time())

    async def _write_stats(self, path: Path) -> None:
        while True:
            self.write_stats(path)
            await asyncio.sleep(1.0)

    def write_stats(self, path: Path) -> None:
        """Write the merged stats to ``path`` atomically (a temporary file renamed)."""
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(self.snapshot(), indent=1))
            tmp.replace(path)
        except OSError as exc:
            log.warning("cannot write swarm stats to %s: %s", path, exc)

    async def wait_connected(self, n: int | None = None, timeout_s: float = 60.0) -> bool:
        """Wait until ``n`` (default: all) agents are born; returns whether they are."""
        target = self.config.agents if n is None else n
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.stats.totals()["connected"] >= target:
                return True
            await asyncio.sleep(0.1)
        return False

    def kill(self) -> None:
        """Kill every worker at once (SIGKILL: the broker publishes every agent's will)."""
        for proc in self.workers:
            if proc.returncode is None:
                proc.kill()

    async def stop(self, timeout_s: float = 15.0) -> None:
        """Stop cleanly: SIGTERM (agents say ``shutdown``), SIGKILL after ``timeout_s``."""
        for proc in self.workers:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                await asyncio.wait_for(proc.wait(), timeout_s)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for task in self._readers:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 5.0)
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        if self.config.stats_path is not None:
            self.write_stats(self.config.stats_path)
        for proc in self.workers:
            if proc.stdin is not None:
                proc.stdin.close()

    async def __aenter__(self) -> SwarmRunner:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

"""One swarm process: connects its share of the agents and keeps them alive.

Started by the runner as ``python -m sef.swarm CONFIG_JSON``. It prints one JSON
stats line a second on stdout (:class:`~sef.swarm._stats.WorkerStats`), stops cleanly on
SIGTERM (every agent publishes its ``shutdown`` status and disconnects), and exits at once
— without DISCONNECT, so the broker publishes every agent's will — when its stdin closes,
i.e. when the runner died, however it died.

Timers are per process, not per agent: one ticker every 100 ms sends the telemetry of the
agents whose (random) phase falls in that slot of the period, and once a second walks
1/keepalive of the agents to send a PINGREQ to those that sent nothing for a second
(so each agent sends something at least every ``keepalive_s``) and to drop connections
that heard nothing from the broker for 2 × keepalive.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import random
import resource
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from sef.bus import start_index
from sef.logthrottle import LogThrottle
from sef.swarm._agent import SwarmAgent
from sef.swarm._shared import SwarmShared
from sef.swarm._stats import WorkerStats

__all__ = ["SwarmWorker", "WorkerConfig", "raise_nofile", "source_address"]

log = logging.getLogger("sef.swarm")

TICK_S = 0.1
"""The ticker's period, s."""
AGENTS_PER_SOURCE = 10_000
"""Agents per loopback source address (the ephemeral range holds ~28 000 ports each)."""
MAX_PENDING = 64
"""Connection attempts (TCP connect to CONNACK) in flight at once, over all processes:
Mosquitto listens with a backlog of 100, and connections the broker has not accepted yet
overflow it (SYN dropped, retried after 1 s: measured 490 connections/s instead of 2 000
with 500 in flight)."""
BACKOFF_MIN_S, BACKOFF_MAX_S, STAYED_UP_S = 0.1, 10.0, 10.0
"""Reconnection backoff (``docs/protocol.md`` §1): 0.1 s doubling to 10 s, ±20 % jitter,
back to the shortest only after a connection that stayed up 10 s."""
HANDSHAKE_S = 10.0
"""A connection without its birth (CONNACK + SUBACK) after this long is dropped, s."""


@dataclass
class WorkerConfig:
    """What one worker runs: agents ``first .. first+count-1`` of the swarm."""

    host: str
    port: int
    first: int = 0
    count: int = 1
    prefix: str = "swarm"
    groups: list[str] = field(default_factory=list)
    root: str = "sef"
    telemetry_s: float = 60.0
    keepalive_s: int = 10
    connect_rate: float = 1000.0
    max_pending: int = MAX_PENDING
    interface_topics: str = "v2"
    spread_sources: bool = True
    worker: int = 0
    seed: int | None = None
    nodes: list[tuple[str, int]] = field(default_factory=list)
    """Every broker (host, port) of a broker list (failover); empty: ``host:port`` only."""
    sub_qos: int = 1
    """QoS of the agents' subscriptions."""
    puback_log: str | None = None
    """File the acknowledged Telemetry updates are appended to (``AGENT TS SEQ`` lines)."""

    def __post_init__(self) -> None:
        # JSON gives lists back: (host, port) pairs again; no list: the one broker
        self.nodes = [(str(h), int(p)) for h, p in self.nodes] or [(self.host, self.port)]

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def source_address(host: str, index: int) -> str | None:
    """The loopback source address for agent ``index`` when the broker is on loopback
    (127.0.0.2, .3, ... one per :data:`AGENTS_PER_SOURCE` agents), else None."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return None
    if not loopback or ":" in host:
        return None
    high, low = divmod(index // AGENTS_PER_SOURCE, 250)
    return f"127.0.{high}.{low + 2}"


def raise_nofile() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard one; returns it (sockets per process)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return int(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


class SwarmWorker:
    """The agents of one process, their connector and their ticker."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.stats = WorkerStats(config.worker)
        self.shared = SwarmShared(
            self.stats,
            root=config.root,
            groups=config.groups,
            telemetry_s=config.telemetry_s,
            keepalive_s=config.keepalive_s,
            interface_topics=config.interface_topics,
            sub_qos=config.sub_qos,
            puback_log=config.puback_log is not None,
        )
        self.shared.on_lost = self._lost
        self.shared.on_handshake = self._handshake_over
        self.agents = [
            SwarmAgent(self.shared, f"{config.prefix}-{i:06d}", i)
            for i in range(config.first, config.first + config.count)
        ]
        for agent in self.agents:  # a broker list: spread the agents over its nodes
            agent.node = start_index(agent.agent_id, len(config.nodes))
        self.stats.counts["agents"] = len(self.agents)
        rng = random.Random(config.seed)
        slots = max(1, round(config.telemetry_s / TICK_S))
        self._buckets: list[list[SwarmAgent]] = [[] for _ in range(slots)]
        for agent in self.agents:
            self._buckets[rng.randrange(slots)].append(agent)
        self._queue: deque[SwarmAgent] = deque(self.agents)
        self._wake = asyncio.Event()
        self._pending = 0
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._failures = LogThrottle(log, "connection failures", burst=2)
        self._failovers = LogThrottle(log, "failovers", burst=2)

    # -- connecting -------------------------------------------------------------------
    async def _connector(self) -> None:
        """Start connections at ``connect_rate`` per second, at most MAX_PENDING at once."""
        rate, budget, last = self.config.connect_rate, 0.0, time.monotonic()
        while not self._stopping:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                last = time.monotonic()
                continue
            await asyncio.sleep(0.01)
            now = time.monotonic()
            budget = min(budget + rate * (now - last), max(1.0, rate * 0.05))
            last = now
            while budget >= 1.0 and self._queue and self._pending < self.config.max_pending:
                agent = self._queue.popleft()
                if agent.stopping or agent.transport is not None:
                    continue
                budget -= 1.0
                task = asyncio.create_task(self._connect(agent))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _connect(self, agent: SwarmAgent) -> None:
        loop = asyncio.get_running_loop()
        agent.new_session()
        agent.connected_at = 0.0
        host, port = self.config.nodes[agent.node]
        source = source_address(host, agent.index) if self.config.spread_sources else None
        self.stats.bump("connects")
        self._pending += 1
        agent.pending = True
        try:
            await loop.create_connection(
                lambda: agent, host, port, local_addr=(source, 0) if source else None
            )
        except OSError as exc:
            self.stats.bump("connect_failures")
            self._failures.warn(
                "broker", type(exc).__name__, "agent %s cannot connect to %s:%d: %s",
                agent.agent_id, host, port, exc,
            )  # fmt: skip
            agent.handshake_over()
            self._lost(agent)

    def _handshake_over(self, agent: SwarmAgent) -> None:
        self._pending -= 1
        self._wake.set()

    def _lost(self, agent: SwarmAgent) -> None:
        """Reconnect ``agent`` after its backoff (§1), to the next broker of a list."""
        if self._stopping or agent.stopping:
            return
        nodes = self.config.nodes
        if len(nodes) > 1:
            was, agent.node = nodes[agent.node], (agent.node + 1) % len(nodes)
            self.stats.bump("failovers")
            self._failovers.warn(
                "failover", f"{was[0]}:{was[1]}", "agent %s fails over from %s:%d to %s:%d",
                agent.agent_id, *was, *nodes[agent.node],
            )  # fmt: skip
        if agent.connected_at and time.monotonic() - agent.connected_at >= STAYED_UP_S:
            agent.backoff = 0.0
        agent.backoff = (
            BACKOFF_MIN_S if not agent.backoff else min(BACKOFF_MAX_S, agent.backoff * 2)
        )
        delay = agent.backoff * random.uniform(0.8, 1.2)
        asyncio.get_running_loop().call_later(delay, self._enqueue, agent)

    def _enqueue(self, agent: SwarmAgent) -> None:
        if not self._stopping:
            self._queue.append(agent)
            self._wake.set()

    # -- ticking ----------------------------------------------------------------------
    async def _ticker(self, out: Callable[[str], None]) -> None:
        tick, start = 0, time.monotonic()
        keepalive = max(1, self.config.keepalive_s)
        while not self._stopping:
            tick += 1
            delay = start + tick * TICK_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            for agent in self._buckets[tick % len(self._buckets)]:
                agent.send_telemetry()
            if tick % 10 == 0:
                self._keepalive(tick // 10 % keepalive, keepalive)
                self.write_acked()
                out(self.stats.line(time.time()))

    def write_acked(self) -> None:
        """Append the acknowledged updates since the last call to the PUBACK log (one
        ``O_APPEND`` write: the workers of a swarm share the file, lines stay whole)."""
        lines, path = self.shared.acked, self.config.puback_log
        if not lines or path is None:
            return
        data = "".join(lines).encode()
        lines.clear()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("PUBACK log %s: %s (%d bytes lost)", path, exc, len(data))

    def _keepalive(self, slot: int, keepalive: int) -> None:
        now = time.monotonic()
        for agent in self.agents[slot::keepalive]:
            if agent.transport is None:
                continue
            if not agent.born and now - agent.last_rx > HANDSHAKE_S:
                agent.abort()
            elif now - agent.last_rx > 2 * keepalive:
                log.debug("agent %s: broker silent, reconnecting", agent.agent_id)
                agent.abort()
            elif now - agent.last_tx > 1.0:
                agent.ping()
                self.stats.bump("pings")

    # -- running ----------------------------------------------------------------------
    async def run(self, out: Callable[[str], None], stop: asyncio.Event) -> None:
        """Connect every agent and keep them running until ``stop`` is set."""
        connector = asyncio.create_task(self._connector())
        ticker = asyncio.create_task(self._ticker(out))
        await stop.wait()
        self._stopping = True
        for task in (connector, ticker, *self._tasks):
            task.cancel()
        for task in (connector, ticker):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for agent in self.agents:
            agent.goodbye()
        deadline = time.monotonic() + 5.0
        while any(a.transport is not None for a in self.agents) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.write_acked()
        out(self.stats.line(time.time()))


def _watch_stdin() -> None:
    """Exit at once (no DISCONNECT: the broker publishes the wills) when stdin closes."""
    with contextlib.suppress(Exception):
        while sys.stdin.buffer.read(4096):
            pass
    os._exit(0)


def main(argv: list[str]) -> int:
    config = WorkerConfig(**json.loads(argv[0]))
    logging.basicConfig(level=os.environ.get("SEF_LOG_LEVEL", "WARNING").upper(),
                        format=f"swarm worker {config.worker}: %(name)s: %(message)s")  # fmt: skip
    limit = raise_nofile()
    if config.count + 64 > limit:
        print(f"swarm worker {config.worker}: {config.count} agents need more than the "
              f"{limit} file descriptors this process may open", file=sys.stderr)  # fmt: skip
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner stops us with SIGTERM
    threading.Thread(target=_watch_stdin, daemon=True).start()

    def out(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    async def go() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await SwarmWorker(config).run(out, stop)

    asyncio.run(go())
    sys.stdout.flush()
    os._exit(0)  # not through interpreter shutdown: the stdin thread is still reading

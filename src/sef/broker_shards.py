"""More agents than one Mosquitto may hold sockets for: a core broker and bridged edges.

One process holds at most its RLIMIT_NOFILE hard limit of sockets (20 000 on the
machine SEF is developed on, not raisable without CAP_SYS_RESOURCE), so one Mosquitto
cannot serve 30 000 agents there. :class:`ShardedBroker` runs a **core** Mosquitto, where
the EMS and tools connect, and N **edge** Mosquittos where the agents connect, each
bridged to the core (MQTT 3.1.1, ``try_private`` so that nothing loops) with SEF's topics
in the direction they flow (:data:`BRIDGE_TOPICS`): the agents' state and replies go up,
calls, group calls and host statuses come down, interface XML goes both ways. All run
with ``sef broker``'s tuning (:class:`~sef.broker_fleet.FleetSizing`): the core sized for
the whole fleet's retained state, each edge for its share.

Measured (``bench/broker_shards.py``): 30 000 agents over 2 edges, an EMS-like subscriber
on the core receives all 30 000 retained births, group calls published on the core reach
all 30 000; each edge spends ~20 us of CPU per delivery, the core ~1 ms per group call.

Plain MQTT only for now (``--insecure``): with mutual TLS each edge would need its own
broker-role identity that the core's ACL lets bridge every agent's topics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from sef.broker import Mosquitto, free_port
from sef.broker_fleet import FleetSizing

__all__ = ["BRIDGE_TOPICS", "ShardedBroker", "bridge_config"]

BRIDGE_TOPICS = (
    ("agents/+/status", "out"),
    ("agents/+/about", "out"),
    ("agents/+/interfaces/#", "out"),
    ("agents/+/props/#", "out"),
    ("agents/+/signals/#", "out"),
    ("agents/+/seal", "out"),
    ("clients/#", "out"),
    ("gateways/#", "out"),
    ("agents/+/call/#", "in"),
    ("groups/#", "in"),
    ("hosts/#", "in"),
    ("interfaces/#", "both"),
)
"""SEF's topics below the root and the direction an edge bridges them (out: to the core)."""


def bridge_config(core_host: str, core_port: int, name: str, root: str = "sef") -> str:
    """The ``mosquitto.conf`` lines of an edge's bridge ``name`` to the core."""
    lines = [
        f"connection {name}",
        f"address {core_host}:{core_port}",
        "bridge_protocol_version mqttv311",
        "try_private true",
        "cleansession true",
        "notifications false",
        *(f"topic {root}/{topic} {direction} 1" for topic, direction in BRIDGE_TOPICS),
    ]
    return "\n".join(lines) + "\n"


@dataclass
class ShardedBroker:
    """A core Mosquitto and ``shards`` bridged edges on ``host``.

    Args:
        agents: the whole fleet (the core's retained state; each edge gets its share).
        shards: edge brokers.
        host: address every broker listens on.
        port: the core's port (``0``: a free one).
        edge_ports: the edges' ports (default: free ones).
        workdir: parent of the brokers' directories ``core`` and ``edge-N`` (default:
            temporary ones).
        root: SEF topic root.
    """

    agents: int
    shards: int = 2
    host: str = "127.0.0.1"
    port: int = 0
    edge_ports: tuple[int, ...] = ()
    workdir: Path | None = None
    root: str = "sef"
    max_keepalive_s: int = 120
    persistence: bool = False
    """Persistence in each broker's ``data`` directory (needs ``workdir``)."""
    user: str | None = None
    """Account the brokers drop to when started as root (``user`` in the configuration;
    the ``data`` directories must be writable by it)."""
    core: Mosquitto | None = field(default=None, init=False)
    edges: list[Mosquitto] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if self.shards < 1:
            raise ValueError(f"shards must be at least 1, got {self.shards}")
        if self.edge_ports and len(self.edge_ports) != self.shards:
            raise ValueError(f"{len(self.edge_ports)} edge ports for {self.shards} shards")
        if self.persistence and self.workdir is None:
            raise ValueError("persistence needs a workdir")

    @property
    def per_edge(self) -> int:
        """Agents each edge is sized for."""
        return math.ceil(self.agents / self.shards)

    def _broker(self, name: str, agents: int, port: int, extra: str = "") -> Mosquitto:
        workdir = None
        if self.workdir is not None:
            workdir = self.workdir / name
            workdir.mkdir(parents=True, exist_ok=True)
        data = workdir / "data" if self.persistence and workdir is not None else None
        if data is not None:
            data.mkdir(exist_ok=True)
        tuning = FleetSizing(agents=agents, max_keepalive_s=self.max_keepalive_s, data_dir=data)
        text = tuning.config() + (f"user {self.user}\n" if self.user else "")
        return Mosquitto(
            port=port, host=self.host, workdir=workdir, tuning=text, extra_config=extra
        )

    def data_dirs(self) -> list[Path]:
        """The persistence directories (empty without persistence)."""
        if not self.persistence or self.workdir is None:
            return []
        names = ["core", *(f"edge-{i}" for i in range(self.shards))]
        return [self.workdir / name / "data" for name in names]

    def plan(self) -> list[Mosquitto]:
        """The core and the edges as they run (not started); the core's port must be known
        (given, or chosen by :meth:`start`)."""
        if not self.port:
            raise ValueError("the core's port is not chosen yet")
        if self.core is None:
            self.core = self._broker("core", self.agents, self.port)
            self.edges = [
                self._broker(
                    f"edge-{index}",
                    self.per_edge,
                    self.edge_ports[index] if self.edge_ports else 0,
                    bridge_config(self.host, self.port, f"edge-{index}", self.root),
                )
                for index in range(self.shards)
            ]
        return [self.core, *self.edges]

    def start(self) -> ShardedBroker:
        """Start the core, then the edges bridged to it; stops all if one fails."""
        if not self.port:
            self.port = free_port(self.host)
        try:
            for broker in self.plan():
                broker.start()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def core_url(self) -> str:
        """Where the EMS and tools connect."""
        assert self.core is not None
        return self.core.url

    @property
    def edge_urls(self) -> list[str]:
        """Where the agents connect (spread them evenly)."""
        return [edge.url for edge in self.edges]

    def stop(self) -> None:
        """Stop the edges, then the core."""
        for edge in self.edges:
            edge.stop()
        if self.core is not None:
            self.core.stop()

    def __enter__(self) -> ShardedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

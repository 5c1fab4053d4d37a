"""The production Mosquitto settings ``sef broker`` runs with (and ``sef broker
--print-config`` writes out), sized for a fleet of agents, each with its reason.

Why each setting (figures of issue 16, Mosquitto 2.0.11; ``docs/operations.md``):

* **Per-client queue** (``max_queued_messages``, ``max_queued_bytes``): when the EMS
  (re)subscribes, the broker queues *every* retained message of the fleet for it, and
  drops what exceeds these limits: an EMS restart with 100 000 agents received 101 000 of
  600 000 retained messages with a 100 000-message queue. So the queue holds the whole
  retained fleet state (:attr:`FleetSizing.retained_per_agent` messages per agent) *plus*
  the outage budget of live messages (:class:`~sef.broker.QueueBudget`).
* **allow_duplicate_messages true**: with ``false`` (Mosquitto's default) each delivery
  of a group call to K MQTT 3.1.1 subscribers is checked against the clients already
  served: about 1.8 ns x K^2 on top of 14 us per delivery (10 000 members: p99 283 ms ->
  101 ms). SEF's subscriptions never overlap, so duplicates cannot happen.
* **max_keepalive**: bounds how long a dead MQTT 5 client stays "online" (its will is
  published after 1.5 x keepalive). Mosquitto 2.0.11 applies it to MQTT 5 clients only
  (a 3.1.1 client asking for more is accepted unchanged, measured). The PINGREQ cost
  (15 us each) argues for agents' keepalive of tens of seconds, not for a small cap.
* **set_tcp_nodelay true**: a small publish otherwise waits for the peer's delayed ACK
  (up to 40 ms).
* **Persistence**: the retained fleet state and the EMS's persistent session survive a
  broker restart; saved every ``autosave_interval`` s (the save blocks the broker, about
  a second per GB of retained state, so not on every change).
* **retain_available true**: SEF's birth (status, About, interfaces, properties) is
  retained; a broker without retained messages cannot run SEF.
* **max_packet_size**: the bus's 256 KiB payload limit plus the header
  (:data:`~sef.broker.MAX_PACKET_BYTES`); a bigger packet disconnects its sender.
"""

from __future__ import annotations

import contextlib
import math
import resource
from dataclasses import dataclass, field
from pathlib import Path

from sef.broker import DEFAULT_BUDGET, MAX_PACKET_BYTES, BrokerLimits, QueueBudget

__all__ = [
    "DEFAULT_AGENTS",
    "FD_RESERVE",
    "FleetSizing",
    "agents_for_descriptors",
    "raise_nofile_limit",
]

DEFAULT_AGENTS = 100_000
"""Fleet size ``sef broker`` is sized for unless told (``--agents``)."""

FD_RESERVE = 100
"""File descriptors Mosquitto needs besides one per client: listeners, log, persistence,
the EMS and tools."""


def raise_nofile_limit() -> tuple[int, int]:
    """Raise this process's RLIMIT_NOFILE soft limit to its hard limit (a child such as
    Mosquitto inherits it); returns ``(soft, hard)`` after the change. A failure keeps
    the old limit (it is reported by the returned numbers)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def agents_for_descriptors(soft_limit: int) -> int:
    """Agent connections a broker with ``soft_limit`` open files can hold (one socket
    each, :data:`FD_RESERVE` kept back); ``RLIM_INFINITY`` counts as unlimited."""
    if soft_limit == resource.RLIM_INFINITY or soft_limit < 0:
        return 2**31 - 1
    return max(0, soft_limit - FD_RESERVE)


@dataclass(frozen=True)
class FleetSizing:
    """The production settings for a fleet of :attr:`agents` agents.

    Args:
        agents: agents the broker serves (retained state and connections).
        retained_per_agent: retained messages per agent an EMS resubscribe receives:
            6 for a version-1 agent (status, About, interface XML, properties); fewer
            with the interface XML retained once per hash (version 2).
        retained_bytes_per_agent: retained payload per agent, bytes (measured 4.5 KB for
            a version-1 virtual battery; 6 KiB leaves a margin).
        budget: the outage budget of live messages on top of the retained state.
        max_inflight: unacknowledged QoS 1 messages in flight per client.
        max_keepalive_s: largest keepalive an MQTT 5 client gets, s.
        data_dir: persistence directory (``None``: no persistence, for tests and benches).
        autosave_s: seconds between persistence saves.
        client_expiry: ``persistent_client_expiration`` (Mosquitto duration, e.g. ``1d``).
    """

    agents: int = DEFAULT_AGENTS
    retained_per_agent: int = 6
    retained_bytes_per_agent: int = 6 * 1024
    budget: QueueBudget = field(default=DEFAULT_BUDGET)
    max_inflight: int = 1000
    max_keepalive_s: int = 120
    data_dir: Path | None = None
    autosave_s: int = 1800
    client_expiry: str = "1d"

    def __post_init__(self) -> None:
        if self.agents < 1:
            raise ValueError(f"agents must be at least 1, got {self.agents}")
        if not 10 <= self.max_keepalive_s <= 65535:
            raise ValueError(f"max_keepalive must be 10..65535 s, got {self.max_keepalive_s}")
        if self.data_dir is not None and any(c.isspace() for c in str(self.data_dir)):
            raise ValueError(f"persistence directory may not contain spaces: {self.data_dir}")

    @property
    def queued_messages(self) -> int:
        """``max_queued_messages``: the retained fleet plus the outage budget."""
        return self.agents * self.retained_per_agent + self.budget.messages

    @property
    def queued_bytes(self) -> int:
        """``max_queued_bytes``: the retained fleet's payload plus the budget's."""
        return self.agents * self.retained_bytes_per_agent + self.budget.queued_bytes

    @property
    def descriptors(self) -> int:
        """Open files the broker needs: one per agent plus :data:`FD_RESERVE`."""
        return self.agents + FD_RESERVE

    def resubscribe_budget(self) -> QueueBudget:
        """What one EMS resubscribe must be able to take, as a budget that
        :meth:`BrokerLimits.shortfall` checks: every retained message at once plus the
        live budget (``rate_per_s`` is the message count over ``outage_s`` = 1 s)."""
        return QueueBudget(
            rate_per_s=float(self.queued_messages),
            outage_s=1.0,
            message_bytes=math.ceil(self.queued_bytes / self.queued_messages),
        )

    def shortfall(self, limits: BrokerLimits) -> str | None:
        """Why ``limits`` cannot take this fleet's resubscribe (or ``None``)."""
        return limits.shortfall(self.resubscribe_budget())

    def config(self) -> str:
        """The ``mosquitto.conf`` tuning lines, each after a comment with its reason."""
        gib = self.queued_bytes / 2**30
        lines = [
            f"# -- sized by `sef broker --agents {self.agents}` (docs/operations.md) --",
            f"# needs {self.descriptors} open files (one per agent): raise LimitNOFILE /",
            "# `ulimit -n` for the broker; Mosquitto does not raise it itself",
            "max_connections -1",
            "# an EMS (re)subscribe gets every retained message at once; past these limits",
            "# the broker silently drops them: the whole retained fleet"
            f" ({self.agents} agents x {self.retained_per_agent})",
            f"# plus the outage budget ({self.budget.rate_per_s:g} msg/s x "
            f"{self.budget.outage_s:g} s); {gib:.2f} GiB per fleet-wide subscriber",
            f"max_queued_messages {self.queued_messages}",
            f"max_queued_bytes {self.queued_bytes}",
            "# unacknowledged QoS 1 messages per client: keeps the EMS's pipe full",
            f"max_inflight_messages {self.max_inflight}",
            "# without it a group call to K MQTT 3.1.1 members costs ~1.8 ns x K^2 of",
            "# duplicate checks (SEF's subscriptions never overlap: no duplicates)",
            "allow_duplicate_messages true",
            "# a dead MQTT 5 client is reported within 1.5 x this (3.1.1 clients keep their",
            "# own keepalive); each PINGREQ costs ~15 us, so agents use tens of seconds",
            f"max_keepalive {self.max_keepalive_s}",
            "# a small publish must not wait for the peer's delayed ACK (up to 40 ms)",
            "set_tcp_nodelay true",
            "# SEF's birth (status, About, interfaces, properties) is retained",
            "retain_available true",
            "# the bus's 256 KiB payload limit plus header; a bigger packet disconnects",
            f"max_packet_size {MAX_PACKET_BYTES}",
        ]
        if self.data_dir is None:
            lines += ["# no persistence (a throwaway broker)", "persistence false"]
        else:
            lines += [
                "# retained fleet state and the EMS's session survive a broker restart;",
                "# a save blocks the broker (~1 s per GB), so periodic, not on each change",
                "persistence true",
                f"persistence_location {str(self.data_dir).rstrip('/')}/",
                f"autosave_interval {self.autosave_s}",
                "autosave_on_changes false",
                "# sessions of clients that never come back do not hold messages forever",
                f"persistent_client_expiration {self.client_expiry}",
            ]
        return "\n".join(lines) + "\n"

"""Counters of a swarm: per worker process, and merged over the workers by the runner.

A worker sends one JSON line a second (:meth:`WorkerStats.line`) with its counters and the
call receipts that changed since the last line; the runner merges them
(:class:`SwarmStats`) and writes the ``--stats`` file.

Call receipts are counted **per call id**: how many distinct agents received the call
(duplicates dropped by the agents' de-duplication are counted apart), the first and last
receipt (Unix s), and a histogram of the receipt latency (receipt time − the call's
``ts``, in whole milliseconds) from which the runner reads p50/p99.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CallReceipts", "SwarmStats", "WorkerStats", "percentile"]

MAX_CALL_IDS = 4096
"""Call ids a worker (and the runner) keeps receipts of; the oldest are dropped first."""

COUNTERS = (
    "agents",
    "connected",
    "connects",
    "connect_failures",
    "lost",
    "births",
    "rebirths",
    "telemetry",
    "calls_received",
    "duplicates",
    "replies",
    "rejected",
    "repairs",
    "pings",
    "failovers",
)
"""The counters of a worker, summed by the runner (``connected``: right now, the rest
since the start; ``births`` counts every birth published, rebirths included;
``failovers``: moves to the next broker of a broker list)."""


@dataclass(slots=True)
class CallReceipts:
    """Receipts of one call id.

    Attributes:
        method: ``interface.method`` of the call.
        agents: distinct agents that received it.
        duplicates: further deliveries of it that the agents dropped.
        first, last: first and last receipt, Unix s.
        hist: receipt latency (ms, receipt − the call's ``ts``) → number of agents.
    """

    method: str
    agents: int = 0
    duplicates: int = 0
    first: float = math.inf
    last: float = 0.0
    hist: dict[int, int] = field(default_factory=dict)

    def add(self, received: float, sent: float) -> None:
        self.agents += 1
        self.first = min(self.first, received)
        self.last = max(self.last, received)
        ms = max(0, int((received - sent) * 1000.0))
        self.hist[ms] = self.hist.get(ms, 0) + 1

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "agents": self.agents,
            "duplicates": self.duplicates,
            "first": self.first if self.agents else None,
            "last": self.last if self.agents else None,
            "hist": {str(k): v for k, v in sorted(self.hist.items())},
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> CallReceipts:
        return cls(
            str(obj["method"]),
            int(obj["agents"]),
            int(obj["duplicates"]),
            float(obj["first"]) if obj.get("first") is not None else math.inf,
            float(obj["last"]) if obj.get("last") is not None else 0.0,
            {int(k): int(v) for k, v in obj.get("hist", {}).items()},
        )

    def merge(self, other: CallReceipts) -> None:
        self.agents += other.agents
        self.duplicates += other.duplicates
        self.first = min(self.first, other.first)
        self.last = max(self.last, other.last)
        for ms, n in other.hist.items():
            self.hist[ms] = self.hist.get(ms, 0) + n


def percentile(hist: dict[int, int], q: float) -> float | None:
    """The ``q``-quantile (0..1) of a histogram value → count (nearest rank), or None."""
    total = sum(hist.values())
    if not total:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= rank:
            return float(value)
    return float(max(hist))  # pragma: no cover (rank <= total)


class WorkerStats:
    """The counters of one worker process (attributes named as :data:`COUNTERS`)."""

    def __init__(self, worker: int) -> None:
        self.worker = worker
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.receipts: OrderedDict[str, CallReceipts] = OrderedDict()
        self._changed: set[str] = set()

    def bump(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def received(self, call_id: str, method: str, received: float, sent: float) -> None:
        """An agent received call ``call_id`` (first delivery to that agent)."""
        entry = self.receipts.get(call_id)
        if entry is None:
            entry = self.receipts[call_id] = CallReceipts(method)
            while len(self.receipts) > MAX_CALL_IDS:
                self._changed.discard(self.receipts.popitem(last=False)[0])
        entry.add(received, sent)
        self._changed.add(call_id)

    def duplicate(self, call_id: str) -> None:
        self.counts["duplicates"] += 1
        entry = self.receipts.get(call_id)
        if entry is not None:
            entry.duplicates += 1
            self._changed.add(call_id)

    def line(self, now: float) -> str:
        """One JSON line: every counter, and the receipts changed since the last line."""
        changed = {k: self.receipts[k].to_json() for k in self._changed if k in self.receipts}
        self._changed.clear()
        return json.dumps({"worker": self.worker, "ts": now, **self.counts, "receipts": changed})


class SwarmStats:
    """The runner's view: the latest line of each worker, merged."""

    def __init__(self) -> None:
        self.workers: dict[int, dict[str, Any]] = {}
        self.receipts: dict[int, OrderedDict[str, CallReceipts]] = {}
        self.started: float | None = None

    def update(self, line: str) -> None:
        """Take one worker line; a malformed one raises ``ValueError``."""
        obj = json.loads(line)
        if not isinstance(obj, dict) or not isinstance(obj.get("worker"), int):
            raise ValueError(f"not a worker stats line: {line[:80]!r}")
        worker = obj["worker"]
        table = self.receipts.setdefault(worker, OrderedDict())
        for call_id, entry in obj.pop("receipts", {}).items():
            table[call_id] = CallReceipts.from_json(entry)
            table.move_to_end(call_id)
            while len(table) > MAX_CALL_IDS:
                table.popitem(last=False)
        self.workers[worker] = obj

    def totals(self) -> dict[str, int]:
        return {name: sum(int(w.get(name, 0)) for w in self.workers.values()) for name in COUNTERS}

    def calls(self) -> dict[str, CallReceipts]:
        """Receipts per call id, merged over the workers."""
        merged: dict[str, CallReceipts] = {}
        for table in self.receipts.values():
            for call_id, entry in table.items():
                if call_id in merged:
                    merged[call_id].merge(entry)
                else:
                    merged[call_id] = CallReceipts(entry.method)
                    merged[call_id].merge(entry)
        return merged

    def to_json(self, now: float) -> dict[str, Any]:
        """What the ``--stats`` file holds."""
        calls = {}
        for call_id, entry in self.calls().items():
            obj = entry.to_json()
            obj["p50_ms"] = percentile(entry.hist, 0.50)
            obj["p99_ms"] = percentile(entry.hist, 0.99)
            obj["max_ms"] = float(max(entry.hist)) if entry.hist else None
            calls[call_id] = obj
        return {
            "ts": now,
            "started": self.started,
            "workers": len(self.workers),
            **self.totals(),
            "calls": calls,
        }

"""Incomplete births: which agents the EMS holds only part of a birth for, and whom to ask
for a rebirth next (issue 16, "no silent loss").

When the EMS (re)subscribes, the broker sends it every agent's retained birth (status,
About, interface XML, properties); a broker whose per-client queue is smaller than that
drops the rest silently, and retained deliveries carry no sequence check (the gap rule of
``docs/protocol.md`` §4.5 cannot see the loss). :class:`BirthTracker` finds such agents
and picks, rate-limited, whom the EMS asks for a rebirth (``sef.Agent.Rebirth``).

**Incomplete** (:meth:`BirthTracker.missing`): an agent the registry knows as online, or
whose status is unknown but which sent anything in this run, that lacks

* ``status``: its status is unknown (the retained status was dropped);
* ``about``: an About of its current session (the session whose status the EMS holds: an
  About received in this run while the record had that bdseq, or the stored About of
  the stored session after a restore);
* ``interface``: a definition of an interface its About announces, known neither by the
  announced SHA-256 nor by name (a shipped, pinned or learned one);
* ``properties`` (``require_properties``, on by default): any property value of an
  announced interface that declares properties. An agent publishes in its birth every
  property it has a value for (§4.2), so a SEF agent with a declared property holds at
  least one; the rule asks for one per interface, not all (an agent may leave some unset).

An offline agent is never incomplete (it publishes a whole live birth when it comes
back, and a lost live message is a sequence gap). Outside a drain, incomplete state is
found from the registry's events (:meth:`BirthTracker.observe`), O(1) per message: a
property update costs two dict look-ups unless its agent is being watched. During a drain
(the retained births of the whole fleet) the events only note each About's session; once
the drain is over every agent is checked once (:data:`SCAN_CHUNK` agents per sweep), so
absorbing a fleet's births costs the tracker one check per agent, not one per message.

An agent restored from the store whose status is still unknown once the subscription's
retained backlog drained (every retained message of its dropped) is incomplete too: it is
asked like the others. An agent the EMS never heard of and that was never stored cannot be
asked; its next live message (telemetry) makes it known, and then incomplete.

**Grace and drain**: a birth is several messages, and the retained ones take seconds to
drain at 100 k agents. An agent becomes incomplete only ``grace_s`` after it was first
found lacking (for the drain's check: after the drain), and no agent becomes incomplete
while the subscription's retained backlog is still arriving (a retained delivery less
than ``drain_quiet_s`` ago, for at most ``max_drain_s`` after the (re)subscription).

**Other reasons** (:meth:`BirthTracker.request`: a sequence gap, a gateway's uplink back,
a birth refused by admission) share the token bucket and go first.

**Asking**: oldest first (by the time of the next ask, then since when incomplete), a
token bucket of ``rate`` agents/s (burst a quarter second's worth, at least 1; adaptive:
from an eighth of ``rate``, doubled while the answers arrive, halved while most first asks
fail, e.g. a broker queue too small for the answers, and raised again by an eighth of
``rate`` as they succeed), each agent asked again
after ``backoff_s``, doubling up to ``backoff_max_s`` while it stays incomplete. Memory
is bounded by the fleet: one entry per agent with an About (its session), one per agent
being watched, and a heap of at most twice the incomplete agents.

Times are monotonic seconds (the EMS passes its event loop's time); pure logic, no I/O.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sef.ems._events import (
    AboutReceived,
    Discovered,
    Event,
    InterfaceLoaded,
    Offline,
    Online,
    PropertyChanged,
    SessionReset,
)
from sef.ems._rebirth_rate import MIN_RATE, RebirthRate
from sef.ems._records import AgentRecord

if TYPE_CHECKING:
    from sef.ems._registry import Registry

__all__ = [
    "BACKOFF_MAX_S",
    "BACKOFF_S",
    "DRAIN_QUIET_S",
    "GRACE_S",
    "MAX_DRAIN_S",
    "MIN_RATE",
    "REBIRTH_RATE",
    "BirthTracker",
]

GRACE_S = 5.0
"""Time a birth may take to complete before its agent counts as incomplete, s."""
DRAIN_QUIET_S = 2.0
"""The retained backlog of a subscription is drained once no retained message came for
this long, s."""
MAX_DRAIN_S = 300.0
"""Longest a drain holds incomplete detection back after a (re)subscription, s."""
REBIRTH_RATE = 200.0
"""Default rate of rebirth requests to incomplete agents, agents/s."""
BACKOFF_S = 5.0
"""Wait before asking an incomplete agent again, s; doubles after every ask."""
BACKOFF_MAX_S = 300.0
"""Longest wait between two asks of one incomplete agent, s."""

_NO_ABOUT = object()
_CHECKED = frozenset({AboutReceived, Discovered, InterfaceLoaded, Offline, Online, SessionReset})
"""Event kinds after which an agent's birth is checked (or, Offline, forgotten)."""
SCAN_CHUNK = 5_000
"""Agents checked per sweep (every 0.25 s) at the end of a drain, promoted from the grace
to incomplete, or checked again for new interface definitions, each: a sweep stays
within ~20-30 ms of the event loop (the pass over 1 M agents after a drain takes ~50 s)."""


@dataclass(slots=True)
class _Ask:
    """An incomplete agent: since when (s), when to ask next (s), how often asked."""

    since: float
    due: float
    asks: int = 0


class BirthTracker:
    """Which agents the EMS holds an incomplete birth for, and whom to ask next.

    Args:
        registry: the registry whose records and interface definitions are checked.
        grace_s: time a birth may take before its agent is incomplete, s.
        drain_quiet_s: no retained message for this long ends a drain, s.
        max_drain_s: a drain holds detection back at most this long, s.
        rate: rebirth requests per second (token bucket; 0: never ask).
        burst: most requests at once (default: a quarter second's worth of the current
            rate, at least 1; the EMS sweeps every 0.25 s, so that the asks come evenly).
        adaptive: adapt the rate to whether the answers arrive
            (:class:`~sef.ems._rebirth_rate.RebirthRate`, judged every ``backoff_s``).
        backoff_s: first wait before asking an agent again, s (doubles per ask).
        backoff_max_s: cap of that wait, s.
        require_properties: an announced interface with properties needs one value.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        grace_s: float = GRACE_S,
        drain_quiet_s: float = DRAIN_QUIET_S,
        max_drain_s: float = MAX_DRAIN_S,
        rate: float = REBIRTH_RATE,
        burst: float | None = None,
        adaptive: bool = True,
        backoff_s: float = BACKOFF_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        require_properties: bool = True,
    ) -> None:
        if rate < 0 or grace_s < 0 or backoff_s <= 0 or backoff_max_s < backoff_s:
            raise ValueError(
                "rebirth rate and grace must be >= 0, backoff > 0 and its cap >= backoff"
            )
        self.registry = registry
        self.grace_s = grace_s
        self.drain_quiet_s = drain_quiet_s
        self.max_drain_s = max_drain_s
        self.limiter = RebirthRate(rate, burst=burst, adaptive=adaptive, judge_s=backoff_s)
        """The rate of rebirth requests (token bucket, adaptive)."""
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.require_properties = require_properties
        self._about: dict[str, object] = {}
        """Agent -> the bdseq its record had when its About came (its About's session)."""
        self._waiting: OrderedDict[str, float] = OrderedDict()
        """Agents lacking part of their birth, within the grace -> since (oldest first)."""
        self._incomplete: dict[str, _Ask] = {}
        self._heap: list[tuple[float, float, str]] = []  # (due, since, agent), lazy
        self._subscribed_at: float | None = None
        self._last_retained: float | None = None
        self._definitions = (-1, -1)
        self._in_drain = False
        self._requests: OrderedDict[str, str] = OrderedDict()  # agent -> reason, oldest first
        # (OrderedDicts: taken from the front, where a dict's iterator would skip every
        # entry deleted before it, quadratic over a wave of agents)
        self._scan: list[str] = []  # agents left to check after a drain, last first
        self._recheck: list[str] = []  # incomplete agents to check for new definitions
        self.asked = 0
        """Rebirth requests sent to incomplete agents."""
        self.resolved = 0
        """Agents that left the incomplete state (completed their birth, went offline)."""

    # -- state --------------------------------------------------------------------
    @property
    def rate_now(self) -> float:
        """The current rate of rebirth requests, agents/s (:class:`RebirthRate`)."""
        return self.limiter.rate_now

    @property
    def incomplete(self) -> int:
        """Agents counted incomplete (past the grace, not during a drain)."""
        return len(self._incomplete)

    @property
    def pending(self) -> int:
        """Agents lacking part of their birth, still within the grace or a drain."""
        return len(self._waiting)

    def incomplete_ids(self) -> list[str]:
        """The incomplete agents, oldest first."""
        return sorted(self._incomplete, key=lambda a: self._incomplete[a].since)

    def draining(self, now: float) -> bool:
        """Whether a subscription's retained backlog is still arriving at ``now`` (s)."""
        if self._subscribed_at is None or now - self._subscribed_at >= self.max_drain_s:
            return False
        last = self._last_retained if self._last_retained is not None else self._subscribed_at
        return now - last < self.drain_quiet_s

    def missing(self, record: AgentRecord) -> tuple[str, ...]:
        """What ``record``'s birth lacks (``status``, ``about``, ``interface``,
        ``properties``); empty when complete or offline."""
        if record.online is False:
            return ()
        out: list[str] = []
        if record.online is None:
            out.append("status")
        if self._about.get(record.agent_id, _NO_ABOUT) != record.bdseq:
            out.append("about")
        registry = self.registry
        by_hash = registry.interfaces_by_hash
        lacks_props = False
        lacks_iface = False
        for name, sha in record.interfaces.items():
            iface = registry.interface(name) or by_hash.get(sha)
            if iface is None:
                lacks_iface = True
            elif self.require_properties and iface.properties and not lacks_props:
                prefix = name + "."
                lacks_props = not any(key.startswith(prefix) for key in record.properties)
        if lacks_iface:
            out.append("interface")
        if lacks_props:
            out.append("properties")
        return tuple(out)

    def lacks(self, record: AgentRecord) -> bool:
        """Whether :meth:`missing` is not empty (early exits: called per birth message)."""
        if record.online is not True:
            return record.online is not False  # unknown: lacks its status
        if self._about.get(record.agent_id, _NO_ABOUT) != record.bdseq:
            return True
        interfaces = record.interfaces
        if not interfaces:
            return False
        registry = self.registry
        for name, sha in interfaces.items():
            iface = registry.interface(name) or registry.interfaces_by_hash.get(sha)
            if iface is None:
                return True
            if self.require_properties and iface.properties:
                prefix = name + "."
                for key in record.properties:
                    if key.startswith(prefix):
                        break
                else:
                    return True
        return False

    # -- inputs -------------------------------------------------------------------
    def restored(self, record: AgentRecord) -> None:
        """An agent restored from the store: its stored About belongs to its stored
        session."""
        if record._about is not None:  # (the packed About: not decoded per agent)
            self._about[record.agent_id] = record.bdseq

    def subscribed(self, now: float) -> None:
        """The EMS (re)subscribed at ``now`` (s): a retained backlog starts to drain."""
        self._subscribed_at = now
        self._last_retained = now
        self._in_drain = True

    def retained(self, now: float) -> None:
        """A retained message arrived at ``now`` (s) (call once per message: O(1))."""
        self._last_retained = now

    def observe(self, event: Event, now: float) -> None:
        """Take one registry event at ``now`` (s): O(1), a dict look-up or two for the
        frequent kinds; while a drain is on, only an About's session is noted (the drain's
        end checks every agent once, :meth:`sweep`)."""
        kind = type(event)
        if kind is PropertyChanged:  # the most frequent: only a watched agent is checked
            agent_id = event.agent_id
            if agent_id in self._waiting or agent_id in self._incomplete:
                self._check(agent_id, now)
            return
        if kind not in _CHECKED:
            return
        agent_id = event.agent_id
        if kind is Offline:
            self._drop(agent_id)
            return
        record = self.registry.agents.get(agent_id)
        if record is None:  # an agent not admitted
            return
        if kind is AboutReceived:
            self._about[agent_id] = record.bdseq
        if not self._in_drain:
            self._check(agent_id, now)

    def forget(self, agent_id: str) -> None:
        """Stop tracking ``agent_id`` (removed from the registry)."""
        self._about.pop(agent_id, None)
        self._requests.pop(agent_id, None)
        self._waiting.pop(agent_id, None)
        self._incomplete.pop(agent_id, None)

    # -- the sweep ----------------------------------------------------------------
    def request(self, agent_id: str, reason: str) -> None:
        """Ask ``agent_id`` for a rebirth at the next sweep, for ``reason`` (a sequence
        gap, its gateway's uplink back, its birth refused by admission): these requests
        go first, through the same token bucket (a fleet-wide gap storm does not become
        a rebirth storm). One pending request per agent (bounded by the fleet)."""
        self._requests.setdefault(agent_id, reason)

    @property
    def requests(self) -> int:
        """Rebirth requests (:meth:`request`) waiting for a token."""
        return len(self._requests)

    def sweep(self, now: float, ask: Callable[[str, str], bool]) -> list[str]:
        """At ``now`` (s): ask the requested agents (:meth:`request`), count agents past
        their grace as incomplete (unless a drain is on) and ask the due ones, each with
        ``ask(agent_id, reason)`` (reason ``incomplete`` or the request's; ``False``: not
        sent, e.g. asked less than 5 s ago: a request is dropped, an incomplete agent tried
        again after ``backoff_s``; no token spent). Returns the agents asked."""
        self.limiter.tick(now, self._failed_first_ask)
        self._recheck_on_new_definitions(now)
        asked = self._ask_requested(ask)
        if self.draining(now):
            return asked
        if self._in_drain:  # drained: check every agent once, in chunks
            self._in_drain = False
            self._scan = list(reversed(self.registry.agents))
        if self._scan:
            self._scan_chunk(now)
        limit = now - self.grace_s
        waiting = self._waiting
        for _ in range(min(SCAN_CHUNK, len(waiting))):
            agent_id, since = next(iter(waiting.items()))
            if since > limit:
                break
            del waiting[agent_id]
            record = self.registry.agents.get(agent_id)
            if record is None or not self.lacks(record):
                continue
            self._incomplete[agent_id] = _Ask(since, now)
            heapq.heappush(self._heap, (now, since, agent_id))
        return asked + self._ask_due(now, ask)

    def _ask_requested(self, ask: Callable[[str, str], bool]) -> list[str]:
        asked: list[str] = []
        requests = self._requests
        limiter = self.limiter
        while requests and limiter.ready():
            agent_id, reason = requests.popitem(last=False)
            if ask(agent_id, reason):
                limiter.spend()
                asked.append(agent_id)
        return asked

    def _ask_due(self, now: float, ask: Callable[[str, str], bool]) -> list[str]:
        asked: list[str] = []
        heap = self._heap
        limiter = self.limiter
        while heap and heap[0][0] <= now and limiter.ready():
            due, since, agent_id = heapq.heappop(heap)
            entry = self._incomplete.get(agent_id)
            if entry is None or entry.due != due:
                continue  # dropped, or rescheduled
            record = self.registry.agents.get(agent_id)
            if record is None or not self.lacks(record):
                self._complete(agent_id, record is not None and record.online is True)
                continue
            if ask(agent_id, "incomplete"):
                if entry.asks == 0:  # judged backoff_s from now
                    limiter.first_ask(now, agent_id)
                limiter.spend()
                entry.asks += 1
                entry.due = now + min(
                    self.backoff_s * 2.0 ** min(entry.asks - 1, 30), self.backoff_max_s
                )
                asked.append(agent_id)
                self.asked += 1
            else:
                entry.due = now + self.backoff_s
            heapq.heappush(heap, (entry.due, since, agent_id))
        if len(heap) > 2 * len(self._incomplete) + 64:  # stale entries of dropped agents
            self._heap = [(e.due, e.since, a) for a, e in self._incomplete.items()]
            heapq.heapify(self._heap)
        return asked

    def _failed_first_ask(self, agent_id: str) -> bool:
        """Whether ``agent_id``, asked once, is still incomplete (its answer was lost)."""
        entry = self._incomplete.get(agent_id)
        return entry is not None and entry.asks == 1

    def _scan_chunk(self, now: float) -> None:
        """After a drain: check the next :data:`SCAN_CHUNK` agents of the registry (their
        grace runs from now)."""
        scan = self._scan
        agents = self.registry.agents
        for _ in range(min(SCAN_CHUNK, len(scan))):
            agent_id = scan.pop()
            record = agents.get(agent_id)
            if record is not None and agent_id not in self._incomplete and self.lacks(record):
                self._waiting.setdefault(agent_id, now)

    def _recheck_on_new_definitions(self, now: float) -> None:
        """When the registry learned interface definitions (a blob arrived: no agent
        event), check the incomplete agents again (those only, only then, at most
        :data:`SCAN_CHUNK` per sweep)."""
        registry = self.registry
        seen = (len(registry.interfaces_by_hash), len(registry.interfaces_by_name))
        if seen != self._definitions:
            self._definitions = seen
            self._recheck = list(self._incomplete)
        recheck = self._recheck
        for _ in range(min(SCAN_CHUNK, len(recheck))):
            agent_id = recheck.pop()
            record = registry.agents.get(agent_id)
            if agent_id in self._incomplete and (record is None or not self.lacks(record)):
                self._complete(agent_id, record is not None and record.online is True)

    # -- helpers ------------------------------------------------------------------
    def _check(self, agent_id: str, now: float) -> None:
        record = self.registry.agents.get(agent_id)
        if record is None or not self.lacks(record):
            self._drop(agent_id, record is not None and record.online is True)
        elif agent_id not in self._waiting and agent_id not in self._incomplete:
            self._waiting[agent_id] = now

    def _complete(self, agent_id: str, completed: bool = True) -> None:
        entry = self._incomplete.pop(agent_id, None)
        if entry is not None:
            self.resolved += 1
            if completed and entry.asks == 1:
                self.limiter.succeeded()

    def _drop(self, agent_id: str, completed: bool = False) -> None:
        """Stop watching ``agent_id``: its birth completed, or it went offline."""
        self._waiting.pop(agent_id, None)
        self._complete(agent_id, completed)

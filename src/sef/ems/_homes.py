"""Homes (gateways) as the EMS sees them: each home's uplink state, the agents behind it,
the relay's last statistics; and each agent's home.

Pure logic, no I/O (the EMS feeds it, :mod:`sef.ems._service`), tested message by message.
Its inputs are what a home gateway publishes under ``{root}/gateways/{home}/``:

* ``agents`` (retained): ``{"v":1,"home":H,"agents":[...]}``, the agents behind it. The
  registry parses and bounds it (:mod:`sef.ems._registry`); the EMS passes on the lists the
  registry accepted (:meth:`HomeBook.agent_list`).
* ``status`` (retained): ``1`` uplink up, ``0`` down (the ``0`` is the uplink's MQTT will
  at the control broker); the registry turns it into ``GatewayUp``/``GatewayDown``
  (:meth:`HomeBook.uplink`).
* ``stats`` (retained, every 10 s and on drops): the relay's queue counters,
  ``{"v":1,"home":H,"ts":<unix s>,"queued":N,"queue_limit":L,"dropped":D,"forwarded":F,
  "high_water":W,"uplink_down_s":S}`` (:meth:`HomeBook.stats`, parsed here: bounded size,
  integers >= 0 below 2**63, finite times; a bad one is refused with a reason).

An agent's home is the home whose agent list named it last: when two homes name one
agent, the newer list wins (logged once per agent and pair of homes). At most
:data:`~sef.ems._registry.MAX_GATEWAYS` homes are kept; messages of more are refused.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from sef.bus import InvalidName, PayloadError, check_id, decode_object
from sef.ems._registry import MAX_GATEWAYS
from sef.logthrottle import LogThrottle

__all__ = [
    "MAX_STATS_BYTES",
    "STATS_COUNTERS",
    "Home",
    "HomeBook",
    "HomeRefused",
    "parse_stats",
]

log = logging.getLogger("sef.ems.homes")

MAX_STATS_BYTES = 4096
"""Largest stats message accepted, bytes (a real one is about 150)."""
STATS_COUNTERS = ("queued", "queue_limit", "dropped", "forwarded", "high_water")
"""Integer fields of a stats message (counts of messages), each >= 0 when present."""
STATS_SECONDS = ("ts", "uplink_down_s")
"""Time fields of a stats message: ``ts`` Unix s (gateway clock), ``uplink_down_s`` s."""
INT_LIMIT = 2**63
"""Integers must be below this (they may be stored in signed 64-bit columns)."""
MAX_CONFLICTS_LOGGED = 10_000
"""Agent/home pairs remembered so that each conflict is logged once."""

Uplink = Literal["up", "down", "unknown"]


class HomeRefused(ValueError):
    """A home message the book does not take (the reason is the text)."""


@dataclass
class Home:
    """One home (gateway).

    ``up``: its uplink is up (``True``), down (``False``) or not heard of (``None``);
    ``since``: when that state was first seen, Unix s (EMS clock); ``agents``: the ids of
    its last agent list; ``stats``: its relay's last statistics (:func:`parse_stats`),
    ``stats_ts`` their time (gateway clock, Unix s) and ``stats_at`` when they arrived
    (EMS clock, Unix s).
    """

    home: str
    since: float
    up: bool | None = None
    agents: list[str] = field(default_factory=list)
    stats: dict[str, int | float | None] | None = None
    stats_ts: float | None = None
    stats_at: float | None = None

    @property
    def uplink(self) -> Uplink:
        """``up``, ``down`` or ``unknown``."""
        return "unknown" if self.up is None else "up" if self.up else "down"


def parse_stats(payload: bytes, home: str) -> dict[str, int | float | None]:
    """The fields of a stats message of ``home``: every name of :data:`STATS_COUNTERS`
    and :data:`STATS_SECONDS` (``None`` when absent). :class:`HomeRefused` when it is too
    large, not a version-1 JSON object, names another home, or has a field that is not a
    number >= 0 (integers below 2**63; times finite)."""
    if len(payload) > MAX_STATS_BYTES:
        raise HomeRefused(f"stats of {len(payload)} bytes (at most {MAX_STATS_BYTES})")
    try:
        obj = decode_object(payload, max_bytes=MAX_STATS_BYTES)
    except PayloadError as exc:
        raise HomeRefused(f"stats: {exc}") from None
    named = obj.get("home")
    if named != home:
        raise HomeRefused(f"stats name home {str(named)[:64]!r}, not {home!r}")
    out: dict[str, int | float | None] = {}
    for name in STATS_COUNTERS:
        value = obj.get(name)
        if value is not None and not (type(value) is int and 0 <= value < INT_LIMIT):
            raise HomeRefused(f"stats field {name!r} must be an integer >= 0, got {value!r:.40}")
        out[name] = value
    for name in STATS_SECONDS:
        value = obj.get(name)
        if value is not None and not (
            type(value) in (int, float) and math.isfinite(value) and 0 <= value < INT_LIMIT
        ):
            raise HomeRefused(f"stats field {name!r} must be a number >= 0, got {value!r:.40}")
        out[name] = value
    if all(out[name] is None for name in STATS_COUNTERS):
        raise HomeRefused("stats without any counter")
    return out


class HomeBook:
    """Every home the EMS heard of, and the home of every agent behind one.

    Args:
        max_homes: most homes kept; messages of a further home are refused.
    """

    def __init__(self, max_homes: int = MAX_GATEWAYS) -> None:
        self.max_homes = max_homes
        self.homes: dict[str, Home] = {}
        self.home_of: dict[str, str] = {}
        """Agent id -> the home whose agent list named it last."""
        self._conflicts: set[tuple[str, str, str]] = set()
        self.log_conflicts = LogThrottle(log, "agents named by two homes", level=logging.INFO)

    # -- queries --------------------------------------------------------------------
    def get(self, home: str) -> Home | None:
        """The home ``home``, or ``None``."""
        return self.homes.get(home)

    def members(self, home: str) -> list[str]:
        """The agents whose home is ``home`` (its list, less those a newer list of another
        home claimed), sorted."""
        entry = self.homes.get(home)
        if entry is None:
            return []
        return sorted(a for a in entry.agents if self.home_of.get(a) == home)

    def sorted_homes(self) -> list[Home]:
        """Every home, by id."""
        return [self.homes[h] for h in sorted(self.homes)]

    # -- updates --------------------------------------------------------------------
    def _home(self, home: str, now: float) -> Home:
        entry = self.homes.get(home)
        if entry is None:
            if len(self.homes) >= self.max_homes:
                raise HomeRefused(f"more than {self.max_homes} homes")
            entry = self.homes[home] = Home(home, since=now)
        return entry

    def uplink(self, home: str, up: bool, now: float) -> bool:
        """The uplink of ``home`` is up or down (at ``now``, EMS clock, Unix s). Returns
        whether its state changed (``since`` is then ``now``). :class:`HomeRefused` for a
        new home beyond :attr:`max_homes`."""
        entry = self._home(home, now)
        if entry.up is up:
            return False
        entry.up = up
        entry.since = now
        return True

    def agent_list(self, home: str, agents: Iterable[str], now: float) -> None:
        """``home`` lists ``agents`` behind it now (ids that are not valid agent ids are
        left out). :class:`HomeRefused` for a new home beyond :attr:`max_homes`."""
        entry = self._home(home, now)
        listed = list(dict.fromkeys(a for a in agents if _is_id(a)))
        for agent_id in entry.agents:
            if self.home_of.get(agent_id) == home:
                del self.home_of[agent_id]
        for agent_id in listed:
            previous = self.home_of.get(agent_id)
            if previous is not None and previous != home:
                self._conflict(agent_id, previous, home)
            self.home_of[agent_id] = home
        entry.agents = listed

    def _conflict(self, agent_id: str, previous: str, home: str) -> None:
        low, high = sorted((previous, home))
        pair = (agent_id, low, high)
        if pair in self._conflicts:
            return
        if len(self._conflicts) >= MAX_CONFLICTS_LOGGED:
            self._conflicts.clear()
        self._conflicts.add(pair)
        self.log_conflicts.warn(
            agent_id,
            "two homes",
            "agent %s is named by homes %s and %s: the newer list (%s) wins",
            agent_id,
            previous,
            home,
            home,
        )

    def stats(self, home: str, payload: bytes, now: float) -> Home:
        """Take a stats message of ``home`` (received at ``now``, EMS clock). Returns the
        home; :class:`HomeRefused` for a bad message or a home not heard of (by status or
        agent list) yet."""
        entry = self.homes.get(home)
        if entry is None:
            raise HomeRefused(f"stats of unknown home {home!r}")
        fields = parse_stats(payload, home)
        entry.stats = fields
        ts = fields.get("ts")
        entry.stats_ts = None if ts is None else float(ts)
        entry.stats_at = now
        return entry

    def summary(self, home: Home, is_online: Callable[[str], bool]) -> dict[str, Any]:
        """A JSON-able view of ``home`` for the API: uplink, since, agent count,
        ``online_agents`` (its members for which ``is_online``), stats."""
        members = self.members(home.home)
        return {
            "home": home.home,
            "uplink": home.uplink,
            "since": home.since,
            "agents": len(members),
            "online_agents": sum(1 for a in members if is_online(a)),
            "stats": None if home.stats is None else dict(home.stats),
            "stats_ts": home.stats_ts,
            "stats_at": home.stats_at,
        }


def _is_id(value: object) -> bool:
    """Whether ``value`` is a valid bus id (:func:`sef.bus.check_id`)."""
    try:
        check_id("agent", value)  # type: ignore[arg-type]
    except InvalidName:
        return False
    return True

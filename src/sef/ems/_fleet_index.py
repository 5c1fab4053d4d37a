"""The registry's indexes for a fleet of a million agents (issue 16): group -> members,
agent ids in order, and the garbage collector's freeze.

* ``group_members`` reads an index kept on every About and restore (O(members), not a
  scan of the fleet per group call);
* ``sorted_ids`` sorts only the ids added since its last call and merges them in;
* :meth:`FleetIndex.freeze` moves the fleet's long-lived objects out of the collector's
  generations (:func:`gc.freeze`), by itself every ``freeze_every`` agents added.

:class:`FleetIndex` is a mixin of :class:`~sef.ems._registry.Registry`, which sets the
state below.
"""

from __future__ import annotations

import bisect
import gc
from collections.abc import Callable, Iterable, Iterator

from sef.ems._records import AgentRecord

__all__ = ["FREEZE_EVERY", "FleetIndex"]

FREEZE_EVERY = 10_000
"""Agents added between two calls of :meth:`FleetIndex.freeze` the registry makes itself."""


class FleetIndex:
    """Group index, sorted ids and freezing (a mixin of
    :class:`~sef.ems._registry.Registry`, which sets the state below)."""

    agents: dict[str, AgentRecord]
    freeze_every: int | None
    _added_since_freeze: int
    _sorted: list[str]
    _new_ids: list[str]
    _members: dict[str, dict[str, None]]

    def freeze(self, *, count: bool = True) -> int:
        """Move every object alive now (the registry after loading the store or absorbing
        a wave of births) out of the garbage collector's generations (:func:`gc.freeze`):
        later collections no longer walk a fleet-sized heap of records that stay.

        The registry calls it by itself every ``freeze_every`` agents added; call it
        also once the store is loaded and when a wave of births settles. A collection of
        the two young generations first (garbage made since the last collections is not
        kept); not a full one, which walks the whole process's heap (0.5-0.7 s in a loaded
        test process, all of it an event-loop stall). Cyclic garbage already
        in the oldest generation stays (once). Frozen objects are still freed when no
        longer referenced (reference counting); only the cycle collector skips them.
        Returns the objects frozen in all so far (counting them walks every frozen
        object: ~0.35 s with 100 000 agents frozen, seconds at 1 M: an event-loop stall;
        the automatic freeze does not count), or 0 with ``count=False``."""
        self._freeze_now()
        return gc.get_freeze_count() if count else 0

    def _freeze_now(self) -> None:
        gc.collect(1)
        gc.freeze()
        self._added_since_freeze = 0

    def _added(self) -> None:
        """One more agent: freeze the heap every ``freeze_every`` agents."""
        self._added_since_freeze += 1
        if self.freeze_every is not None and self._added_since_freeze >= self.freeze_every:
            self._freeze_now()

    def group_members(self, group: str) -> list[AgentRecord]:
        """Agents that announced membership of ``group`` (in the order they joined it;
        from the group index: O(members), not O(fleet))."""
        ids = self._members.get(group)
        if not ids:
            return []
        return [r for r in map(self.agents.get, ids) if r is not None]

    def sorted_ids(self) -> list[str]:
        """Every agent id, sorted. Ids added since the last call are sorted and merged
        in (Timsort merges the two sorted runs: O(fleet + new log new))."""
        ids = self._sorted
        if self._new_ids:
            self._new_ids.sort()
            ids.extend(self._new_ids)
            self._new_ids.clear()
            ids.sort()
        if len(ids) != len(self.agents):  # an agent added or removed behind our back
            ids[:] = sorted(self.agents)
        return ids

    def _index_groups(
        self, agent_id: str, before: tuple[str, ...] | Iterable[str], after: tuple[str, ...]
    ) -> None:
        """Keep the group index right when an agent's groups change from ``before`` to
        ``after``."""
        if before == after:
            return
        members = self._members
        for group in before:
            if group not in after:
                ids = members.get(group)
                if ids is not None:
                    ids.pop(agent_id, None)
                    if not ids:
                        del members[group]
        for group in after:
            members.setdefault(group, {})[agent_id] = None

    def page(
        self,
        *,
        after: str | None = None,
        offset: int = 0,
        limit: int = 100,
        where: Callable[[AgentRecord], bool] | None = None,
    ) -> tuple[list[AgentRecord], int, bool]:
        """One page of agents in id order: those after id ``after`` (a cursor), skipping
        ``offset`` matches of ``where``, at most ``limit``. Returns the page, the number of
        agents matching ``where`` in all, and whether more follow the page."""
        ids = self.sorted_ids()
        start = 0 if after is None else bisect.bisect_right(ids, after)
        matching: Iterator[AgentRecord] = (self.agents[i] for i in ids[start:])
        if where is not None:
            matching = filter(where, matching)
        out: list[AgentRecord] = []
        skipped = 0
        more = False
        for record in matching:
            if skipped < offset:
                skipped += 1
            elif len(out) < limit:
                out.append(record)
            else:
                more = True
                break
        total = len(ids) if where is None else sum(1 for i in ids if where(self.agents[i]))
        return out, total, more

"""The DER-interface agent: ``EnergyMethod`` runs an event sequence on the clock.

BIS, UCM and the virtual battery differ only in what an event does to their device; this
base class holds what they share: the ``edu.pdx.powerlab.demo`` interface, argument
rules (:func:`parse_events`) and the :class:`EventSequencer` that replaces the running
sequence on each call.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable
from typing import Any

from sef.agents._base import Agent
from sef.agents._declare import method
from sef.agents._sequence import EventSequencer
from sef.interface import DEMO_INTERFACE, EnergyEvent, parse_events

__all__ = ["DERAgent"]

log = logging.getLogger("sef.agent")


class DERAgent(Agent, ABC):
    """An agent of ``edu.pdx.powerlab.demo``; subclasses implement :meth:`_apply`."""

    interfaces = (DEMO_INTERFACE,)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sequencer = EventSequencer(self.clock, self._apply)

    @method(DEMO_INTERFACE, "EnergyMethod")
    async def energy_method(self, cmds: list[tuple[str, int, int]]) -> None:
        """Run an event sequence from now, replacing the running one."""
        events = parse_events(cmds)
        log.info("%s: new sequence %s", self.agent_id, [e.as_tuple() for e in events])
        await self.sequencer.replace(events)

    @abstractmethod
    def _apply(self, event: EnergyEvent) -> Awaitable[None] | None:
        """Make the device do ``event`` (called at each event's start)."""

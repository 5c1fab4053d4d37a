"""What a DER agent does when nobody is in charge: the host-loss policy.

The EMS (a *host*) publishes a retained online/offline status with a last will, so every
agent sees it die. When no host is online — every host an agent has seen says offline, or
the agent itself lost the broker — for longer than ``grace_s`` (real seconds), the policy
applies once per episode:

* a running **open-ended** event (duration 0, "until the next command") ends now: the
  device goes idle;
* a running **timed** event runs to its planned end, and the rest of the sequence is
  dropped: the device is idle afterwards.

A new command (from a host that came back) replaces whatever runs, as always. An agent that
has never seen a host (a standalone test rig) applies the policy only when it loses the
broker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sef.agents._sequence import EventSequencer
from sef.interface import IDLE_EVENT, Command

__all__ = ["DEFAULT_GRACE_S", "HostLossPolicy"]

log = logging.getLogger("sef.agent.host_loss")

DEFAULT_GRACE_S = 60.0
"""Real seconds without an online host before the policy applies."""


class HostLossPolicy:
    """Watches for host loss and makes the sequence safe (see the module docstring).

    Args:
        agent_id: for log lines.
        sequencer: the agent's event sequencer.
        host_lost: returns whether no host is in charge right now.
        grace_s: real seconds of loss before the policy applies.
    """

    def __init__(
        self,
        agent_id: str,
        sequencer: EventSequencer,
        host_lost: Callable[[], bool],
        grace_s: float = DEFAULT_GRACE_S,
    ) -> None:
        self.agent_id = agent_id
        self.sequencer = sequencer
        self.host_lost = host_lost
        self.grace_s = grace_s
        self.applied = 0
        """How many times the policy changed the running sequence."""
        self.lost_since: float | None = None
        self._applied_this_episode = False

    async def watch(self) -> None:
        """Check every ``min(1, grace/10)`` real s until cancelled."""
        step_s = max(0.05, min(1.0, self.grace_s / 10))
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(step_s)
            await self.check(loop.time())

    async def check(self, now_s: float) -> None:
        """One check at loop time ``now_s`` (real s)."""
        if not self.host_lost():
            if self.lost_since is not None:
                log.info("%s: a host is in charge again", self.agent_id)
            self.lost_since, self._applied_this_episode = None, False
            return
        if self.lost_since is None:
            self.lost_since = now_s
            log.warning(
                "%s: no host online; the host-loss policy applies in %.0f s",
                self.agent_id,
                self.grace_s,
            )
        if not self._applied_this_episode and now_s - self.lost_since >= self.grace_s:
            self._applied_this_episode = True
            await self._apply()

    async def _apply(self) -> None:
        current = self.sequencer.current
        if current.duration_s == 0:
            if current.cmd is Command.IDLE:
                return
            log.warning(
                "%s: host lost for %.0f s: open-ended %s ends, device idle",
                self.agent_id,
                self.grace_s,
                current.as_tuple(),
            )
            await self.sequencer.replace([IDLE_EVENT])
        elif self.sequencer.remaining:
            log.warning(
                "%s: host lost for %.0f s: %s runs to its end, the %d events after it are dropped",
                self.agent_id,
                self.grace_s,
                current.as_tuple(),
                len(self.sequencer.remaining),
            )
            self.sequencer.remaining.clear()
        else:
            return
        self.applied += 1

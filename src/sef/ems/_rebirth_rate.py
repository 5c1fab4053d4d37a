"""The rate of the EMS's rebirth requests: a token bucket whose rate adapts to whether
the answers arrive (issue 16, :mod:`sef.ems._births`).

Asking an agent for a rebirth makes it publish its whole birth again (about 6 messages):
asked too fast, the answers overflow the broker's queue for the EMS and are lost as the
retained births were. :class:`RebirthRate` starts at an eighth of the configured rate
and doubles it every ``judge_s`` while first asks complete births (slow start); when most
first asks fail (the agent still incomplete ``judge_s`` after it) it halves the rate, and
then raises it by an eighth of the configured rate per ``judge_s`` as they succeed, never
below :data:`MIN_RATE`. Pure logic, times in monotonic seconds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

__all__ = ["MIN_RATE", "RebirthRate"]

MIN_RATE = 1.0
"""The adaptive rate never goes below this, agents/s."""


class RebirthRate:
    """A token bucket of rebirth requests with an adaptive rate.

    Args:
        rate: the most requests per second (0: none).
        burst: most requests at once (default: a quarter second's worth of the current
            rate, at least 1; the EMS sweeps every 0.25 s, so that the asks come evenly).
        adaptive: adapt the current rate (module docstring); else always ``rate``.
        judge_s: how long a first ask has to complete its agent's birth, and how often
            the rate is judged, s.
    """

    def __init__(
        self, rate: float, *, burst: float | None = None, adaptive: bool = True, judge_s: float
    ) -> None:
        self.rate = rate
        self.adaptive = adaptive
        self.judge_s = judge_s
        self._burst = burst
        self.rate_now = max(min(MIN_RATE, rate), rate / 8.0) if adaptive else rate
        """The current rate, requests/s."""
        self._slow_start = adaptive
        self._outcomes = [0, 0]  # first asks that completed the birth, that did not
        self._first_asks: deque[tuple[float, str]] = deque()  # (when, agent), oldest first
        self._judged_at: float | None = None
        self._tokens = self.burst
        self._tokens_at: float | None = None

    @property
    def burst(self) -> float:
        """Most requests at once (the bucket's size)."""
        return max(1.0, self.rate_now / 4.0 if self._burst is None else self._burst)

    def ready(self) -> bool:
        """Whether a request may go now (a token is there)."""
        return self._tokens >= 1.0 and self.rate_now > 0

    def spend(self) -> None:
        """A request went: one token less."""
        self._tokens -= 1.0

    def first_ask(self, now: float, agent_id: str) -> None:
        """``agent_id`` was asked for the first time at ``now``: judged ``judge_s`` later."""
        self._first_asks.append((now, agent_id))

    def succeeded(self) -> None:
        """A first ask completed its agent's birth."""
        self._outcomes[0] += 1

    def tick(self, now: float, failed: Callable[[str], bool]) -> None:
        """At ``now`` (s): judge the first asks older than ``judge_s`` (``failed(agent)``:
        still incomplete after its one ask), adapt the rate every ``judge_s``, refill."""
        first = self._first_asks
        while first and first[0][0] + self.judge_s <= now:
            if failed(first.popleft()[1]):
                self._outcomes[1] += 1
        if self._judged_at is None:
            self._judged_at = now
        if self.adaptive and now - self._judged_at >= self.judge_s:
            self._adapt()
            self._judged_at = now
        if self._tokens_at is not None and now > self._tokens_at:
            added = (now - self._tokens_at) * self.rate_now
            self._tokens = min(self.burst, self._tokens + added)
        self._tokens_at = now if self._tokens_at is None else max(self._tokens_at, now)

    def _adapt(self) -> None:
        """Halve the rate when more first asks failed than succeeded (the slow start
        ends), else double it (slow start) or raise it by an eighth of ``rate``."""
        succeeded, failed = self._outcomes
        if failed > succeeded:
            self.rate_now = max(min(MIN_RATE, self.rate), self.rate_now / 2.0)
            self._slow_start = False
        elif succeeded and self._slow_start:
            self.rate_now = min(self.rate, self.rate_now * 2.0)
        elif succeeded:
            self.rate_now = min(self.rate, self.rate_now + max(1.0, self.rate / 8.0))
        self._outcomes = [0, 0]

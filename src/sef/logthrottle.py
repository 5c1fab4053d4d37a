"""Rate-limited, aggregated log lines for things that can happen once per message.

A flood of bad messages must not become a flood of log lines (100 000 bad messages once
made 23.7 MB of log). :class:`LogThrottle` logs the first few occurrences of a kind of
problem in full and then only counts them; once per interval (10 s by default) it writes
one summary line per source for the busiest sources and one for the rest::

    sef.ems.registry: 99 990 bad messages from agent x-17 in the last 10 s (suppressed):
        reasons: payload is not JSON ×99 000, field 'bdseq' ... ×990

Usage (any layer; it imports only the standard library)::

    from sef.logthrottle import LogThrottle

    bad = LogThrottle(logging.getLogger("my.agent"), "bad messages")
    bad.warn(source, reason, "bad message on %s: %s", topic, reason)
    ...
    bad.flush()  # optional: write the pending summary now (e.g. at shutdown)

Every argument of a full line is cut to :data:`MAX_ARG_CHARS` characters, so one line is
bounded too. The summary of a window is written by the first call after the window ended,
or by a timer of the running asyncio loop (when there is one), or by :meth:`flush`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

__all__ = ["MAX_ARG_CHARS", "LogThrottle"]

MAX_ARG_CHARS = 200
"""A longer argument of a logged line is cut to this many characters (plus ``…``)."""


def _short(value: object, limit: int = MAX_ARG_CHARS) -> object:
    """``value`` itself if it is a number, else its text cut to ``limit`` characters."""
    if isinstance(value, int | float):
        return value
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "…"


class LogThrottle:
    """Logs the first ``burst`` occurrences per ``interval_s`` in full, then aggregates.

    Args:
        logger: where lines go.
        what: what is counted, plural, for the summary (``"bad messages"``).
        interval_s: length of a window, s (monotonic time).
        burst: full lines per window, over all sources together.
        top: sources named in the summary of a window (the busiest); the others share a
            line.
        level: level of every line.
        max_sources: distinct sources counted per window (more are counted as "other").
        max_reasons: distinct reasons counted per source (more count as "other").
        clock: monotonic time, s (tests pass their own).

    Attributes:
        total: occurrences seen (all time).
        suppressed: occurrences not logged in full (all time).
    """

    def __init__(
        self,
        logger: logging.Logger,
        what: str = "problems",
        *,
        interval_s: float = 10.0,
        burst: int = 10,
        top: int = 5,
        level: int = logging.WARNING,
        max_sources: int = 1000,
        max_reasons: int = 8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.what = what
        self.interval_s = interval_s
        self.burst = burst
        self.top = top
        self.level = level
        self.max_sources = max_sources
        self.max_reasons = max_reasons
        self.clock = clock
        self.total = 0
        self.suppressed = 0
        self._window_start: float | None = None
        self._logged = 0
        self._counts: dict[str, Counter[str]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def warn(self, source: str, reason: str, msg: str, *args: object) -> bool:
        """One occurrence from ``source`` (an agent id, a topic...) for ``reason``.

        ``msg % args`` is the full line (arguments cut to :data:`MAX_ARG_CHARS`). Returns
        whether it was logged in full (else it was counted for the summary).
        """
        self.total += 1
        now = self.clock()
        if self._window_start is None or now - self._window_start >= self.interval_s:
            self._roll(now)
        if self._logged < self.burst:
            self._logged += 1
            if self.logger.isEnabledFor(self.level):
                self.logger.log(self.level, msg, *(_short(a) for a in args))
            return True
        self.suppressed += 1
        key = str(_short(source, 64))
        counts = self._counts.get(key)
        if counts is None:
            if len(self._counts) >= self.max_sources:
                key = "(other sources)"
                counts = self._counts.setdefault(key, Counter())
            else:
                counts = self._counts[key] = Counter()
        why = str(_short(reason, 80))
        if why not in counts and len(counts) >= self.max_reasons:
            why = "other"
        counts[why] += 1
        self._arm()
        return False

    def flush(self) -> None:
        """Write the summary of the current window now and start a new one."""
        self._roll(self.clock())

    def _roll(self, now: float) -> None:
        counts, self._counts = self._counts, {}
        self._window_start = now
        self._logged = 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if counts and self.logger.isEnabledFor(self.level):
            self._summary(counts)

    def _summary(self, counts: dict[str, Counter[str]]) -> None:
        ranked = sorted(counts.items(), key=lambda kv: -sum(kv[1].values()))
        span = f"in the last {self.interval_s:g} s (not logged one by one)"
        for source, reasons in ranked[: self.top]:
            self.logger.log(
                self.level,
                "%d %s from %s %s: reasons: %s",
                sum(reasons.values()),
                self.what,
                source,
                span,
                ", ".join(f"{why} ×{n}" for why, n in reasons.most_common()),
            )
        rest = ranked[self.top :]
        if rest:
            merged: Counter[str] = Counter()
            for _, reasons in rest:
                merged.update(reasons)
            self.logger.log(
                self.level,
                "%d %s from %d%s other sources %s: reasons: %s",
                sum(merged.values()),
                self.what,
                len(rest),
                "+" if len(counts) >= self.max_sources else "",
                span,
                ", ".join(f"{why} ×{n}" for why, n in merged.most_common(self.max_reasons)),
            )

    def _arm(self) -> None:
        """Have the running loop (if any) write the summary when the window ends."""
        if self._timer is not None or self._window_start is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        delay = max(0.0, self._window_start + self.interval_s - self.clock())
        self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._counts:
            self.flush()

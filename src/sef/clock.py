"""One clock for every process: real time, or scaled time for simulations and tests.

Everything in SEF that timestamps or waits asks a :class:`Clock`. A scaled clock runs
``speed`` simulated seconds per real second (``720`` runs a day in two minutes), so the
same agents, models and EMS run a day in minutes and tests are fast.

Several processes agree on simulated time when they share one clock *spec*
(see :func:`parse_clock`): ``real``, or ``scaled:SPEED[:SIM_START][@REAL_ANCHOR]`` where
``SIM_START`` is the simulated Unix time (s) at real Unix time ``REAL_ANCHOR`` (s).
The spec is also read from the ``SEF_CLOCK`` environment variable, so a parent process
hands one clock to all its children.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["Clock", "ClockSpecError", "RealClock", "ScaledClock", "default_clock", "parse_clock"]


class ClockSpecError(ValueError):
    """A clock spec string could not be understood."""


class Clock(ABC):
    """Base class: ``now()`` in Unix seconds, ``sleep()`` in clock seconds."""

    speed: float = 1.0

    @abstractmethod
    def now(self) -> float:
        """Current time on this clock, Unix seconds (s)."""

    @abstractmethod
    def monotonic(self) -> float:
        """Monotonic time on this clock's scale, seconds (s); for measuring intervals."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of clock time (s); a scaled clock waits ``seconds / speed`` real s."""
        await asyncio.sleep(max(0.0, seconds) / self.speed)

    def to_real(self, seconds: float) -> float:
        """Convert a clock duration (s) to a real duration (s)."""
        return seconds / self.speed

    def to_clock(self, real_seconds: float) -> float:
        """Convert a real duration (s) to a clock duration (s)."""
        return real_seconds * self.speed

    def datetime(self) -> datetime:
        """Current clock time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.now(), tz=UTC)

    @abstractmethod
    def spec(self) -> str:
        """The spec string that recreates this clock in another process."""


class RealClock(Clock):
    """Wall-clock time."""

    speed = 1.0

    def now(self) -> float:
        """Clock time, Unix s."""
        return time.time()

    def monotonic(self) -> float:
        """Monotonic clock time, s."""
        return time.monotonic()

    def spec(self) -> str:
        """The ``--clock`` text that builds this clock."""
        return "real"

    def __repr__(self) -> str:
        return "RealClock()"


@dataclass
class ScaledClock(Clock):
    """Simulated time running ``speed`` times faster than real time.

    Attributes:
        speed: simulated seconds per real second (dimensionless, > 0).
        sim_start: simulated Unix time (s) at the real instant ``real_anchor``.
        real_anchor: real Unix time (s) at which the simulated clock read ``sim_start``.
    """

    speed: float = 1.0
    sim_start: float | None = None
    real_anchor: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.speed < float("inf"):
            raise ClockSpecError(f"clock speed must be > 0 and finite, got {self.speed!r}")
        if self.real_anchor is None:
            self.real_anchor = time.time()
        if self.sim_start is None:
            self.sim_start = self.real_anchor
        self._mono_anchor = time.monotonic() - (time.time() - self.real_anchor)

    def now(self) -> float:
        """Clock time, Unix s."""
        assert self.sim_start is not None and self.real_anchor is not None
        return self.sim_start + (time.time() - self.real_anchor) * self.speed

    def monotonic(self) -> float:
        """Monotonic clock time, s."""
        return (time.monotonic() - self._mono_anchor) * self.speed

    def spec(self) -> str:
        """The ``--clock`` text that builds this clock."""
        return f"scaled:{self.speed!r}:{self.sim_start!r}@{self.real_anchor!r}"


def _parse_time(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise ClockSpecError(f"time must be finite: {text!r}")
        return value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ClockSpecError(f"not a Unix time or ISO 8601 date: {text!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def parse_clock(spec: str) -> Clock:
    """Build a clock from a spec string.

    ``real`` → :class:`RealClock`. ``scaled:SPEED[:SIM_START][@REAL_ANCHOR]`` →
    :class:`ScaledClock`; ``SIM_START`` may be Unix seconds or an ISO 8601 date
    (``2026-07-01T00:00:00Z``); ``REAL_ANCHOR`` is real Unix seconds and defaults to now.
    """
    text = spec.strip()
    if text in ("", "real"):
        return RealClock()
    if not text.startswith("scaled:"):
        raise ClockSpecError(
            f"clock spec must be 'real' or 'scaled:SPEED[:START][@ANCHOR]': {spec!r}"
        )
    rest, _, anchor_text = text[len("scaled:") :].partition("@")
    speed_text, _, start_text = rest.partition(":")
    try:
        speed = float(speed_text)
    except ValueError as exc:
        raise ClockSpecError(f"clock speed is not a number: {speed_text!r}") from exc
    sim_start = _parse_time(start_text) if start_text else None
    try:
        anchor = float(anchor_text) if anchor_text else None
    except ValueError as exc:
        raise ClockSpecError(f"clock anchor is not Unix seconds: {anchor_text!r}") from exc
    if anchor is not None and not math.isfinite(anchor):
        raise ClockSpecError(f"clock anchor must be finite: {anchor_text!r}")
    return ScaledClock(speed=speed, sim_start=sim_start, real_anchor=anchor)


def default_clock() -> Clock:
    """The clock named by ``SEF_CLOCK`` in the environment, else real time."""
    return parse_clock(os.environ.get("SEF_CLOCK", "real"))

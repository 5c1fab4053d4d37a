"""What the meter emulator measures: a base-load profile and current-transformer inputs.

**Base load** (:class:`BaseLoad`): a step-held profile of kW over one day that repeats,
indexed by the clock's UTC time of day (like the water heater's draw profile). Each value
holds from its ``time_s`` (seconds after 00:00 UTC) to the next one; before the first row
the last row's value holds (the profile wraps around midnight).

**Current transformers** (:class:`CtReceiver`, :func:`report_power`): each emulated device
on the feeder reports its AC power to the meter the way a CT clamped on its circuit would,
as small UDP datagrams on the loopback (or LAN)::

    {"src": "battery-1", "w": -4000.0}        (W, + = drawn from the grid)

A device sends when its power changes (by more than :data:`CT_DEADBAND_W`) and at least
every :data:`CT_KEEPALIVE_S` real seconds. The meter holds each source's last value until
the next datagram; a source silent for ``ct_timeout_s`` real seconds is taken as a dead
circuit (0 W) and logged. A datagram that is not such an object is dropped and logged
(rate limited): a stray packet must not change the measurement nor stop the meter.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from sef.logthrottle import LogThrottle

__all__ = [
    "CT_DEADBAND_W",
    "CT_KEEPALIVE_S",
    "BaseLoad",
    "CtReceiver",
    "parse_ct_datagram",
    "report_power",
]

log = logging.getLogger("sef.emulator.meter")

DAY_S = 86400.0
CT_DEADBAND_W = 0.5
"""A device resends its power when it changed by more than this, W."""
CT_KEEPALIVE_S = 1.0
"""A device resends its power at least this often, real s."""
CT_PERIOD_S = 0.005
"""How often a device looks at its power, real s."""
MAX_CT_W = 10e6
"""Largest power one CT datagram may carry, W (a larger one is garbage)."""
MAX_SOURCE_CHARS = 64


@dataclass(frozen=True)
class BaseLoad:
    """A step-held daily load profile.

    Attributes:
        starts_s: start of each step, seconds after 00:00 UTC, increasing, in [0, 86400).
        kw: load of each step, kW (+ = drawn from the grid).
    """

    starts_s: NDArray[np.float64]
    kw: NDArray[np.float64]

    def __post_init__(self) -> None:
        s, k = self.starts_s, self.kw
        if s.ndim != 1 or s.shape != k.shape or len(s) == 0:
            raise ValueError("base load: need as many start times as values, at least one")
        if np.any(np.diff(s) <= 0) or s[0] < 0 or s[-1] >= DAY_S:
            raise ValueError("base load: start times must increase within [0, 86400) s")
        if not np.all(np.isfinite(k)):
            raise ValueError("base load: values must be finite")

    @classmethod
    def constant(cls, kw: float) -> BaseLoad:
        """The same ``kw`` all day."""
        return cls(np.zeros(1), np.array([float(kw)]))

    @classmethod
    def from_series(cls, kw: NDArray[np.float64] | list[float], dt_s: float) -> BaseLoad:
        """Steps of ``dt_s`` seconds from midnight (a scenario's ``base_kw``); values past
        one day are dropped, and the last one holds until midnight."""
        values = np.asarray(kw, dtype=np.float64)
        n = min(len(values), math.ceil(DAY_S / dt_s))
        return cls(np.arange(n, dtype=np.float64) * dt_s, values[:n].copy())

    @classmethod
    def from_csv(cls, path: str | Path) -> BaseLoad:
        """A ``time_s,kw`` CSV (``#`` comments allowed); ``time_s`` is taken modulo a day."""
        t, v = _read_csv(Path(path))
        t = np.mod(t, DAY_S)
        order = np.argsort(t, kind="stable")
        return cls(t[order], v[order])

    def _index(self, second_of_day: float) -> int:
        i = int(np.searchsorted(self.starts_s, second_of_day, side="right")) - 1
        return i if i >= 0 else len(self.kw) - 1

    def kw_at(self, t_s: float) -> float:
        """The load at clock time ``t_s`` (Unix s), kW."""
        return float(self.kw[self._index(t_s % DAY_S)])

    def segments(self, t0_s: float, t1_s: float) -> Iterator[tuple[float, float]]:
        """``(duration_s, kw)`` pieces of constant load covering ``[t0_s, t1_s)``."""
        t = t0_s
        n = len(self.kw)
        while t < t1_s:
            sod = t % DAY_S
            j = int(np.searchsorted(self.starts_s, sod, side="right"))
            nxt = float(self.starts_s[j]) if j < n else DAY_S + float(self.starts_s[0])
            end = min(t1_s, max(t - sod + nxt, t + 1e-9))
            yield end - t, float(self.kw[j - 1 if j > 0 else n - 1])
            t = end

    def energy_kwh(self, t0_s: float, t1_s: float) -> float:
        """Energy of the base load over ``[t0_s, t1_s)``, kWh."""
        return sum(d * kw for d, kw in self.segments(t0_s, t1_s)) / 3600.0


def _read_csv(path: Path) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``time_s`` and ``kw`` columns of a CSV (``#`` comment lines allowed)."""
    with path.open(newline="", encoding="utf-8") as fh:
        lines = [ln for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]
    rows = list(csv.DictReader(lines))
    if not rows:
        raise ValueError(f"{path}: no data rows")
    try:
        t = np.array([float(r["time_s"]) for r in rows])
        v = np.array([float(r["kw"]) for r in rows])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: need numeric columns time_s and kw: {exc}") from None
    return t, v


def parse_ct_datagram(data: bytes) -> tuple[str, float]:
    """The ``(source, W)`` of a CT datagram; :class:`ValueError` saying why it is not one."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    src, watts = obj.get("src"), obj.get("w")
    if not isinstance(src, str) or not 0 < len(src) <= MAX_SOURCE_CHARS:
        raise ValueError(f"'src' must be a string of 1..{MAX_SOURCE_CHARS} characters")
    if isinstance(watts, bool) or not isinstance(watts, int | float):
        raise ValueError("'w' must be a number")
    if not math.isfinite(watts) or abs(watts) > MAX_CT_W:
        raise ValueError(f"'w' must be finite and within ±{MAX_CT_W:g} W")
    return src, float(watts)


class CtReceiver(asyncio.DatagramProtocol):
    """Receives CT datagrams and hands ``(source, W)`` to ``on_power``."""

    def __init__(self, on_power: Callable[[str, float], None]) -> None:
        self.on_power = on_power
        self.dropped = 0
        self._bad = LogThrottle(log, "bad CT datagrams")

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        try:
            src, watts = parse_ct_datagram(data)
        except ValueError as reason:
            self.dropped += 1
            self._bad.warn(
                str(addr[0]), str(reason), "CT datagram from %s dropped: %s", addr, reason
            )
            return
        self.on_power(src, watts)


def encode_ct_datagram(source: str, watts: float) -> bytes:
    """The datagram a device sends: ``{"src": source, "w": watts}``."""
    return json.dumps({"src": source, "w": round(float(watts), 3)}).encode()


async def report_power(
    read_w: Callable[[], float],
    meter: tuple[str, int],
    source: str,
    *,
    period_s: float = CT_PERIOD_S,
    keepalive_s: float = CT_KEEPALIVE_S,
) -> None:
    """Report ``read_w()`` (W, + = drawn from the grid) to the meter at ``meter`` until
    cancelled: on every change of more than :data:`CT_DEADBAND_W` and every
    ``keepalive_s`` real seconds. A meter that is not there is no error (UDP)."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=meter)
    last_w, last_at = math.nan, -math.inf
    try:
        while True:
            watts = float(read_w())
            now = loop.time()
            if not abs(watts - last_w) <= CT_DEADBAND_W or now - last_at >= keepalive_s:
                with contextlib.suppress(OSError):
                    transport.sendto(encode_ct_datagram(source, watts))
                last_w, last_at = watts, now
            await asyncio.sleep(period_s)
    finally:
        transport.close()


def parse_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` → ``(host, port)``; :class:`ValueError` otherwise."""
    host, _, port_text = text.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host, int(port_text)

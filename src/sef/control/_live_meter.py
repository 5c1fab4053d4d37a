"""The metered feeder in live mode: the base load from the meter agent's samples.

A meter (``DeviceType`` ``meter``, ``Telemetry`` ``Net_Power_kW``: + = drawn from the
grid, the mean over its poll) and the devices report at their own rates and with their own
lags. The uncontrolled base load of a meter sample is its reading minus the devices' power
**at the sample's time**, from each device's telemetry samples and their timestamps
(:meth:`MeteredBase.devices_at`). A heater's power reaches the EMS through the UCM's
CTA-2045 polls later than the meter sees it, so each switching leaves a false step of one
element in reading − devices for that lag; the base is therefore low-pass filtered
(``tau_s``, from the forecast profile). See docs/control.md, "Live mode".
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sef.control._live_fleet import plain
from sef.ems._registry import Registry
from sef.interface import DEMO_INTERFACE

__all__ = ["TELEMETRY_KEY", "MeteredBase", "meter_sample", "telemetry"]

TELEMETRY_KEY = f"{DEMO_INTERFACE}.Telemetry"
"""The registry key of an agent's demo-interface ``Telemetry``."""


def telemetry(registry: Registry, agent_id: str) -> dict[str, Any]:
    """An agent's last ``Telemetry`` as plain values, with ``_ts``: its time (Unix s, the
    sender's timestamp, else when the EMS received it); ``{}`` when there is none."""
    record = registry.get(agent_id)
    entry = None if record is None else record.properties.get(TELEMETRY_KEY)
    if entry is None:
        return {}
    return plain(entry.value) | {"_ts": entry.ts if entry.ts is not None else entry.received}


MAX_METER_KW = 1e6
"""Largest magnitude of a meter reading taken, kW (1 GW: beyond any feeder)."""


def meter_sample(registry: Registry, meters: Iterable[str]) -> tuple[float, float] | None:
    """The first meter's ``Net_Power_kW`` (kW) and its time (Unix s), if one reports."""
    for meter in meters:
        t = telemetry(registry, meter)
        value = t.get("Net_Power_kW")
        # a reading beyond any feeder's (10**400, 1e300: a broken or hostile meter) is no
        # measurement; compared as it is (float(10**400) overflows)
        if (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and -MAX_METER_KW <= value <= MAX_METER_KW
        ):
            return float(value), float(t["_ts"])
    return None


@dataclass
class MeteredBase:
    """Base load (kW) from meter samples read against the devices' power at their time.

    Attributes:
        tau_s: time constant of the low-pass filter (s); 0: none.
    """

    tau_s: float = 900.0
    _log: dict[str, deque[tuple[float, float]]] = field(default_factory=dict, repr=False)
    _last: tuple[float, float] | None = field(default=None, repr=False)  # (time s, kW)

    def log_power(self, agent_id: str, t: dict[str, Any], kw: float) -> None:
        """Keep a device's power ``kw`` (kW) at its telemetry time ``t["_ts"]``."""
        ts = t.get("_ts")
        if ts is None:
            return
        samples = self._log.setdefault(agent_id, deque(maxlen=64))
        if not samples or ts > samples[-1][0]:
            samples.append((float(ts), kw))

    def devices_at(self, t_s: float, agent_ids: Iterable[str]) -> float:
        """The devices' summed power (kW) at clock time ``t_s``: each one's last sample at
        or before it (its first sample if all are later)."""
        total = 0.0
        for agent_id in agent_ids:
            samples = self._log.get(agent_id)
            if samples:
                before = [kw for ts, kw in samples if ts <= t_s]
                total += before[-1] if before else samples[0][1]
        return total

    def base(self, reading: float, at: float, agent_ids: Iterable[str], prior_kw: float) -> float:
        """The filtered base load (kW) after the meter sample ``reading`` (kW) taken at
        ``at`` (s); the filter starts from ``prior_kw`` (the forecast profile)."""
        sample = reading - self.devices_at(at, agent_ids)
        if self.tau_s <= 0:
            self._last = (at, sample)
            return sample
        last = self._last or (at, prior_kw)
        if at > last[0] or self._last is None:
            gain = 1.0 - float(np.exp(-max(at - last[0], 0.0) / self.tau_s))
            last = (at, last[1] + gain * (sample - last[1]))
        self._last = last
        return last[1]

"""``sef meter``: a feeder (or site) meter on the bus, read from any SunSpec meter.

The agent scans the SunSpec chain for an integer meter model — **201** (single phase),
**202** (split phase), **203** (three-phase wye) or **204** (three-phase delta) — and
publishes every ``poll_s`` a ``Telemetry`` whose ``Net_Power_kW`` is the net power the
feeder draws from the grid (+ = import), and the ``Nameplate`` ``{"DeviceType": "meter",
"Phases": n}``. Keys, the averaging rule and faults: ``docs/meter.md``.

``Net_Power_kW`` is the **mean over the last poll** from the energy registers
(``ΔTotWhImp − ΔTotWhExp`` over the clock time between the two reads) when they resolve it
to :data:`AVERAGE_RESOLUTION_KW` or better, else the instantaneous ``W``
(``Net_Power_Source`` says which). A meter cannot be dispatched: ``EnergyMethod`` is
answered with ``org.freedesktop.DBus.Error.NotSupported``.

Garbage from the meter (a scale factor outside −10..10 or "not implemented" 0x8000, ``W``
not implemented) is a device fault with the reason in the log and in telemetry
(``Comm_Fault``, ``Fault``); ``Net_Power_kW`` is then absent, never a stale or scaled-wrong
number. The agent keeps running and rescans the meter with backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from sef.agents._declare import AboutInfo, CallError, Outcome, method
from sef.agents._der import DERAgent
from sef.agents._device import DeviceAdapter, DeviceStatus
from sef.bus import BrokerURL
from sef.clock import Clock
from sef.interface import DEMO_INTERFACE, EnergyEvent, Variant
from sef.protocols.sunspec import PointValue, SunSpecClient, SunSpecError
from sef.protocols.sunspec.mdef import decode_raw
from sef.security import Security

__all__ = [
    "AVERAGE_RESOLUTION_KW",
    "METER_MODEL_PHASES",
    "NOT_SUPPORTED",
    "MeterAgent",
    "MeterDataError",
    "MeterReading",
    "SunSpecMeter",
]

log = logging.getLogger("sef.agent.meter")

METER_MODEL_PHASES: dict[int, int] = {201: 1, 202: 2, 203: 3, 204: 3}
"""Integer SunSpec meter models this agent reads, and the phases each one measures."""
FLOAT_METER_MODELS = (211, 212, 213, 214)
SF_RANGE = (-10, 10)
"""Scale factors the SunSpec specification allows."""
AVERAGE_RESOLUTION_KW = 0.1
"""Coarsest resolution (one energy count over the poll, kW) at which ``Net_Power_kW`` is
the energy-register mean; coarser (a short poll, kWh counters) falls back to ``W``."""
MAX_AVERAGE_S = 900.0
"""Longest clock time between two reads averaged over (s); after a longer gap, ``W``."""
NOT_SUPPORTED = "org.freedesktop.DBus.Error.NotSupported"
"""The error a meter answers ``EnergyMethod`` with."""
_ACC32 = 1 << 32
_POINTS = ("W", "W_SF", "TotWhExp", "TotWhImp", "TotWh_SF", "PhV", "V_SF", "Hz", "Hz_SF")


class MeterDataError(SunSpecError):
    """The meter answered, but with a value that cannot be used (the reason says which)."""


@dataclass(frozen=True)
class MeterReading:
    """One poll of the meter.

    Attributes:
        at_s: clock time of the read (the middle of the request), Unix s.
        power_kw: instantaneous net power, kW (+ = import).
        net_kw: the published net power: the mean since the last poll or ``power_kw``.
        averaged: ``net_kw`` is the energy-register mean.
        import_wh, export_wh: energy registers, Wh (None if unusable).
        counts: raw ``(TotWhImp, TotWhExp, TotWh_SF)`` for the next mean (None if unusable).
        volts, hz: phase voltage (V) and frequency (Hz), None if not implemented.
    """

    at_s: float
    power_kw: float
    net_kw: float
    averaged: bool
    import_wh: float | None
    export_wh: float | None
    counts: tuple[int, int, int] | None
    volts: float | None
    hz: float | None


def _check_sf(name: str, sf: PointValue) -> int:
    if sf is None:
        raise MeterDataError(f"{name} is 0x8000 (not implemented)")
    if not isinstance(sf, int) or not SF_RANGE[0] <= sf <= SF_RANGE[1]:
        raise MeterDataError(f"{name} {sf} is outside the SunSpec range -10..10")
    return sf


def _scaled(raw: PointValue, sf: int) -> float | None:
    return float(raw) * 10.0**sf if isinstance(raw, int) else None


def _optional(values: Mapping[str, PointValue], name: str, sf_name: str) -> float | None:
    sf = values.get(sf_name)
    if not isinstance(sf, int) or not SF_RANGE[0] <= sf <= SF_RANGE[1]:
        return None
    return _scaled(values.get(name), sf)


def reading_from(
    raw: Mapping[str, PointValue], at_s: float, previous: MeterReading | None
) -> tuple[MeterReading, str | None]:
    """A :class:`MeterReading` from raw register values (integers before scaling, None
    for "not implemented", by point name) and the previous reading; plus why the energy
    registers cannot be used, if they cannot. Raises :class:`MeterDataError` when there is
    no usable power."""
    w_sf = _check_sf("W_SF", raw.get("W_SF"))
    w_raw = raw.get("W")
    if not isinstance(w_raw, int):
        raise MeterDataError("W is 0x8000 (not implemented): no power reading")
    power_kw = w_raw * 10.0**w_sf / 1000.0
    counts: tuple[int, int, int] | None = None
    why: str | None = None
    imp, exp_ = raw.get("TotWhImp"), raw.get("TotWhExp")
    try:
        e_sf = _check_sf("TotWh_SF", raw.get("TotWh_SF"))
        if not isinstance(imp, int) or not isinstance(exp_, int):
            raise MeterDataError("TotWhImp/TotWhExp not implemented")
        counts = (imp, exp_, e_sf)
    except MeterDataError as exc:
        why = str(exc)
    net_kw, averaged = power_kw, False
    prev = previous.counts if previous is not None else None
    if counts is not None and prev is not None and previous is not None and prev[2] == counts[2]:
        dt_h = (at_s - previous.at_s) / 3600.0
        d_imp, d_exp = (counts[0] - prev[0]) % _ACC32, (counts[1] - prev[1]) % _ACC32
        quantum_kwh = 10.0 ** counts[2] / 1000.0
        backwards = d_imp >= _ACC32 // 2 or d_exp >= _ACC32 // 2  # a reset meter
        in_window = 0 < dt_h * 3600 <= MAX_AVERAGE_S and not backwards
        if in_window and quantum_kwh / dt_h <= AVERAGE_RESOLUTION_KW:
            net_kw, averaged = (d_imp - d_exp) * quantum_kwh / dt_h, True
    e_sf = counts[2] if counts is not None else 0
    reading = MeterReading(
        at_s=at_s,
        power_kw=power_kw,
        net_kw=net_kw,
        averaged=averaged,
        import_wh=_scaled(imp, e_sf) if counts is not None else None,
        export_wh=_scaled(exp_, e_sf) if counts is not None else None,
        counts=counts,
        volts=_optional(raw, "PhV", "V_SF"),
        hz=_optional(raw, "Hz", "Hz_SF"),
    )
    return reading, why


class SunSpecMeter(DeviceAdapter):
    """A SunSpec meter (model 201, 202, 203 or 204) over Modbus TCP; read-only."""

    comm_errors: ClassVar[tuple[type[BaseException], ...]] = (SunSpecError, OSError, TimeoutError)

    def __init__(self, host: str, port: int, *, unit: int = 1, timeout_s: float = 1.0) -> None:
        self.modbus = SunSpecClient(host, port, unit=unit, timeout_s=timeout_s, retries=0)
        self.model_id = 0
        self.phases = 0
        self.reading: MeterReading | None = None
        self._energy_problem: str | None = None

    async def connect(self) -> None:
        """Connect, scan the chain and pick the first integer meter model."""
        await self.modbus.connect()
        models = [m.model_id for m in await self.modbus.scan()]
        found = [m for m in models if m in METER_MODEL_PHASES]
        if not found:
            floats = [m for m in models if m in FLOAT_METER_MODELS]
            if floats:
                raise SunSpecError(
                    f"meter has float model(s) {floats} only; SEF reads models 201-204"
                )
            raise SunSpecError(f"no SunSpec meter model (201-204); device has {models}")
        self.model_id, self.reading = found[0], None
        self.phases = METER_MODEL_PHASES[self.model_id]
        log.info("%s: meter found (model %d, %d phase(s))", self.host.agent_id, self.model_id,
                 self.phases)  # fmt: skip

    async def read(self) -> None:
        """Read power, energy, voltage and frequency; check the scale factors."""
        clock = self.host.clock
        inst = self.modbus.model(self.model_id)
        assert inst.definition is not None  # model() refuses models without one
        points = [inst.definition.point(name) for name in _POINTS]
        lo = min(p.offset for p in points)
        hi = max(p.offset + p.size for p in points)
        started = clock.now()
        regs = await self.modbus.read_registers(inst.address + lo, hi - lo)
        at_s = (started + clock.now()) / 2
        raw = {p.name: decode_raw(p, regs[p.offset - lo : p.offset - lo + p.size]) for p in points}
        self.reading, why = reading_from(raw, at_s, self.reading)
        if why != self._energy_problem:
            self._energy_problem = why
            if why:
                log.warning("%s: energy registers unusable (%s): Net_Power_kW is W",
                            self.host.agent_id, why)  # fmt: skip

    async def apply(self, event: EnergyEvent, left_s: float | None) -> None:
        """Nothing to apply: a meter only measures."""

    async def close(self) -> None:
        """Close the Modbus connection."""
        self.modbus.close()
        self.reading = None  # the next mean starts afresh

    def nameplate(self) -> dict[str, Variant] | None:
        """``{"DeviceType": "meter", "Phases": n}`` once the meter model is known."""
        if not self.phases:
            return None
        return {"DeviceType": Variant("s", "meter"), "Phases": Variant("i", self.phases)}

    def telemetry(self, status: DeviceStatus) -> dict[str, Variant]:
        """``Net_Power_kW`` (+ = import) and the rest; no power while the meter is faulty."""
        out: dict[str, Variant] = {"Comm_Fault": Variant("b", bool(status.fault))}
        if status.fault:
            out["Fault"] = Variant("s", status.fault)
        if self.phases:
            out["Phases"] = Variant("i", self.phases)
            out["Meter_Model"] = Variant("q", self.model_id)
        r = self.reading
        if r is None or status.fault:
            return out
        out["Net_Power_kW"] = Variant("d", round(r.net_kw, 4))
        out["Net_Power_Source"] = Variant("s", "energy" if r.averaged else "instant")
        out["Power_kW"] = Variant("d", round(r.power_kw, 4))
        for key, value in (("Energy_Import_kWh", r.import_wh), ("Energy_Export_kWh", r.export_wh)):
            if value is not None:
                out[key] = Variant("d", round(value / 1000.0, 4))
        if r.volts is not None:
            out["Voltage_V"] = Variant("d", round(r.volts, 2))
        if r.hz is not None:
            out["Frequency_Hz"] = Variant("d", round(r.hz, 3))
        return out


class MeterAgent(DERAgent[SunSpecMeter]):
    """Meter agent over SunSpec Modbus TCP (read-only: it refuses every command).

    Args:
        agent_id: id on the bus.
        broker: broker URL.
        modbus_host, modbus_port, unit: where the meter answers.
        poll_s: poll and telemetry period, real s.
        clock, groups, keepalive_s, security, sign_telemetry: as for :class:`DERAgent`.
    """

    def __init__(
        self,
        agent_id: str,
        broker: BrokerURL | str,
        *,
        modbus_host: str,
        modbus_port: int,
        unit: int = 1,
        poll_s: float = 1.0,
        clock: Clock | None = None,
        groups: Sequence[str] = (),
        keepalive_s: int = 10,
        security: Security | None = None,
        sign_telemetry: bool = False,
    ) -> None:
        meter = SunSpecMeter(modbus_host, modbus_port, unit=unit, timeout_s=min(1.0, poll_s))
        super().__init__(
            agent_id,
            broker,
            meter,
            poll_s=poll_s,
            clock=clock,
            groups=groups,
            keepalive_s=keepalive_s,
            security=security,
            sign_telemetry=sign_telemetry,
            about=AboutInfo(
                app_name="SEF meter",
                model_number="sef-meter",
                description="feeder meter agent over SunSpec Modbus TCP",
            ),
        )

    @method(DEMO_INTERFACE, "EnergyMethod")
    async def energy_method(self, cmds: list[tuple[str, int, int]]) -> Outcome:
        """Refused: a meter measures the feeder; there is nothing to dispatch."""
        await asyncio.sleep(0)
        log.warning("%s: EnergyMethod %s refused: a meter cannot be dispatched", self.agent_id,
                    cmds)  # fmt: skip
        raise CallError(
            f"{self.agent_id} is a meter: it measures the feeder and cannot be dispatched",
            NOT_SUPPORTED,
        )

    def telemetry(self) -> dict[str, Variant]:
        """``TimeStamp`` and the meter's keys (no event: a meter runs none)."""
        return {
            "TimeStamp": Variant("u", max(0, int(self.clock.now()))),
            **self.device.telemetry(self.status),
        }

"""Intermediate DR answers of the emulated water heater (SGD side), and their state.

==========================================  ==================================================
received                                    answer
==========================================  ==================================================
GetInformation ``01 01``                    ``01 81``: the emulator's device type (electric
                                            WH), vendor, model, serial, fw; capabilities:
                                            temperature offset, Advanced Load Up
Commodity Read ``06 00`` [code]             ``06 80``: 0 electricity W / Wh (measured),
                                            6 total and 7 present energy storage Wh
                                            (estimated; 6 ≥ 7 always), 8 rated maximum
                                            consumption: one element's W (the two never
                                            run together)
Get Setpoint ``03 03``                      ``03 83``: °F, setpoint 1 and, once set, setpoint 2
Set Setpoint ``03 03``                      ``03 83 00``; ``02`` (bad value) for a device type
                                            that is not a water heater, units other than
                                            °F / °C, or a setpoint outside 0 < T ≤ max
Get Present Temperature ``03 04``           top-node temperature, °F
Get / Set Temperature Offset ``03 02``      the stored offset and units / ``03 82 00``
Get / Set Advanced Load Up ``0C 00``        the running event (units 0xFF: none) / ``0C 80 00``
Get / Set UTC Time ``02 00``                clock time (+ offset once set)
any other request                           ``op1 (op2|0x80) 01`` (not implemented)
==========================================  ==================================================

Setpoints: CTA-2045 carries "setpoint 1" and an optional "setpoint 2" (EPRI's UCM library:
``SetSetpoints(deviceType, units, setpoint1, setpoint2)`` and two Get Setpoints reply
layouts). Devices with two setpoints use the second for their second control loop (a
thermostat: heating and cooling); the public sources define none for a water heater. The
emulated tank has one: setpoint 1 drives it, setpoint 2 is validated, kept and reported back
unchanged (never dropped).

Advanced Load Up (CTA-2045-B §11.6): ``value × units`` Wh above normal storage for
``duration_min`` minutes (0 = until End Shed): the model runs LOAD_UP (states 3 / 6) with
the setpoint raised by ``energy / C_tank`` K, capped at ``max_setpoint_c`` (0xFFFF: up to
the cap); value 0 is the support probe (success, no effect); reserved units → ``02``. Any
Basic DR event, End Shed or the comm watchdog ends it. The temperature offset is stored and
reported; the emulated tank does not apply it (CTA-2045 leaves its use to the device).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sef.models.waterheater_dr import DRMode
from sef.protocols import cta2045 as cta

if TYPE_CHECKING:
    from .waterheater import SGDEmulator

__all__ = ["IntermediateSide", "c_to_f", "f_to_c"]

_CTA_EPOCH_UNIX = int(cta.CTA_EPOCH.timestamp())
_WATER_HEATERS = frozenset(int(t) for t in cta.DeviceType)
_TEMPERATURE_UNITS = frozenset(int(u) for u in cta.TemperatureUnits)
_ALU_UNITS = frozenset({0, 1, 2, 3})
_CAPABILITIES = cta.Capability.TEMPERATURE_OFFSET | cta.Capability.ADVANCED_LOAD_UP


def c_to_f(celsius: float) -> int:
    """°C → whole °F (rounded)."""
    return round(celsius * 9.0 / 5.0 + 32.0)


def f_to_c(fahrenheit: float) -> float:
    """°F → °C."""
    return (fahrenheit - 32.0) * 5.0 / 9.0


def _to_c(value: int, units: int) -> float:
    return float(value) if units == cta.TemperatureUnits.CELSIUS else f_to_c(value)


@dataclass(frozen=True)
class AdvancedLoadUpEvent:
    """A running Advanced Load Up: the request and its end (clock s, ``inf`` = open)."""

    request: cta.SetAdvancedLoadUpRequest
    end_s: float
    raise_k: float


class IntermediateSide:
    """Answers Intermediate DR requests for one :class:`SGDEmulator` (its model and clock)."""

    def __init__(self, sgd: SGDEmulator) -> None:
        self.sgd = sgd
        self.utc_offset_s = 0.0
        self.setpoint2_c: float | None = None  # setpoint 2, kept and reported, °C
        self.temperature_offset = 0
        self.temperature_offset_units: int = cta.TemperatureUnits.FAHRENHEIT
        self.advanced_load_up: AdvancedLoadUpEvent | None = None

    def handle(self, msg: cta.IntermediateMessage) -> cta.Message | None:
        """The answer to ``msg`` (None for replies nobody asked for)."""
        m = self.sgd.model
        if isinstance(msg, cta.GetInformationRequest):
            return cta.GetInformationReply(
                vendor_id=self.sgd.vendor_id,
                device_type=self.sgd.device_type,
                device_revision=1,
                capabilities=int(_CAPABILITIES),
                model=self.sgd.model_name,
                serial=self.sgd.serial,
                firmware=cta.FirmwareInfo(2026, 7, 1, 1, 0),
            )
        if isinstance(msg, cta.CommodityReadRequest):
            return self._commodities(msg.commodity)
        if isinstance(msg, cta.GetSetpointRequest):
            sp2 = None if self.setpoint2_c is None else c_to_f(self.setpoint2_c)
            return cta.SetpointReply(setpoint1=c_to_f(float(m.setpoint_c[0])), setpoint2=sp2)
        if isinstance(msg, cta.SetSetpointRequest):
            return cta.IntermediateReply(0x03, 0x83, self._set_setpoints(msg))
        if isinstance(msg, cta.GetPresentTemperatureRequest):
            return cta.PresentTemperatureReply(temperature=c_to_f(float(m.temperatures_c[0, 0])))
        if isinstance(msg, cta.GetTemperatureOffsetRequest):
            return cta.TemperatureOffsetReply(
                0, self.temperature_offset, self.temperature_offset_units
            )
        if isinstance(msg, cta.SetTemperatureOffsetRequest):
            if msg.units not in _TEMPERATURE_UNITS:
                return cta.IntermediateReply(0x03, 0x82, cta.ResponseCode.BAD_VALUE)
            self.temperature_offset, self.temperature_offset_units = msg.offset, msg.units
            return cta.IntermediateReply(0x03, 0x82, cta.ResponseCode.SUCCESS)
        if isinstance(msg, cta.GetAdvancedLoadUpRequest):
            return self._advanced_load_up_state()
        if isinstance(msg, cta.SetAdvancedLoadUpRequest):
            return cta.IntermediateReply(0x0C, 0x80, self._start_advanced_load_up(msg))
        if isinstance(msg, cta.GetUtcTimeRequest):
            now = self.sgd.clock.now() + self.utc_offset_s
            seconds = max(0, int(now) - _CTA_EPOCH_UNIX)
            return cta.UtcTimeReply(utc_seconds=min(seconds, 0xFFFFFFFF))
        if isinstance(msg, cta.SetUtcTimeRequest):
            self.utc_offset_s = msg.utc_seconds + _CTA_EPOCH_UNIX - self.sgd.clock.now()
            return cta.IntermediateReply(0x02, 0x80, cta.ResponseCode.SUCCESS)
        return cta.not_implemented_answer(msg)  # op1 (op2|0x80) 01; None for replies

    # -- setpoints ---------------------------------------------------------------------
    def _set_setpoints(self, msg: cta.SetSetpointRequest) -> int:
        if msg.device_type not in _WATER_HEATERS or msg.units not in _TEMPERATURE_UNITS:
            return cta.ResponseCode.BAD_VALUE
        top = float(self.sgd.model.max_setpoint_c[0])
        values = [_to_c(msg.setpoint1, msg.units)]
        if msg.setpoint2 is not None:
            values.append(_to_c(msg.setpoint2, msg.units))
        if not all(0.0 < value <= top for value in values):
            return cta.ResponseCode.BAD_VALUE
        self.sgd.model.set_setpoint(None, values[0])
        self.setpoint2_c = values[1] if len(values) == 2 else None
        return cta.ResponseCode.SUCCESS

    # -- Advanced Load Up -------------------------------------------------------------------
    def _start_advanced_load_up(self, msg: cta.SetAdvancedLoadUpRequest) -> int:
        if msg.value == 0:
            return cta.ResponseCode.SUCCESS  # "no effect": the support probe
        if msg.units not in _ALU_UNITS:
            return cta.ResponseCode.BAD_VALUE
        m = self.sgd.model
        headroom_k = max(0.0, float(m.max_setpoint_c[0] - m.setpoint_c[0]))
        energy_wh = msg.energy_wh
        wanted_k = math.inf if energy_wh is None else energy_wh * 3600.0 / m.capacity_j_per_k[0]
        raise_k = min(float(wanted_k), headroom_k)
        m.advanced_load_up(None, msg.duration_s or None, raise_k)
        end = self.sgd.clock.now() + msg.duration_s if msg.duration_s else math.inf
        self.advanced_load_up = AdvancedLoadUpEvent(msg, end, raise_k)
        return cta.ResponseCode.SUCCESS

    def end_advanced_load_up(self) -> None:
        """Forget the Advanced Load Up (the model's event was replaced or ended)."""
        self.advanced_load_up = None

    def _advanced_load_up_state(self) -> cta.AdvancedLoadUpReply:
        event = self.advanced_load_up
        if event is not None and int(self.sgd.model.mode[0]) != DRMode.LOAD_UP:
            event = self.advanced_load_up = None  # expired in the model
        if event is None:
            return cta.AdvancedLoadUpReply(0, 0, 0, cta.AdvancedLoadUpUnits.NOT_ACTIVE)
        left_s = event.end_s - self.sgd.clock.now()
        minutes = 0 if math.isinf(left_s) else min(0xFFFF, max(0, math.ceil(left_s / 60.0)))
        return cta.AdvancedLoadUpReply(0, minutes, event.request.value, event.request.units)

    # -- commodities -------------------------------------------------------------------------
    def _commodities(self, code: int | None) -> cta.Message:
        m = self.sgd.model
        records: dict[int, cta.CommodityRecord] = {
            cta.CommodityCode.ELECTRICITY_CONSUMED: cta.CommodityRecord(
                cta.CommodityCode.ELECTRICITY_CONSUMED,
                _u48(self.sgd.power_w),
                _u48(float(m.electric_kwh[0]) * 1000.0),
                measured=True,
            ),
            cta.CommodityCode.TOTAL_ENERGY_STORAGE: cta.CommodityRecord(
                cta.CommodityCode.TOTAL_ENERGY_STORAGE,
                0,
                _u48(float(m.total_energy_storage_wh[0])),
                measured=False,
            ),
            cta.CommodityCode.PRESENT_ENERGY_STORAGE: cta.CommodityRecord(
                cta.CommodityCode.PRESENT_ENERGY_STORAGE,
                0,
                _u48(float(m.present_energy_storage_wh[0])),
                measured=False,
            ),
            cta.CommodityCode.RATED_MAX_CONSUMPTION: cta.CommodityRecord(
                cta.CommodityCode.RATED_MAX_CONSUMPTION,
                _u48(float(m.element_kw[0]) * 1000.0),
                0,
                measured=False,
            ),
        }
        if code is None:
            return cta.CommodityReadReply(records=tuple(records.values()))
        record = records.get(code & 0x7F)
        if record is None:
            return cta.IntermediateReply(0x06, 0x80, cta.ResponseCode.BAD_VALUE)
        return cta.CommodityReadReply(records=(record,))


def _u48(value: float) -> int:
    if not math.isfinite(value):
        return 0
    return max(0, min(round(value), (1 << 48) - 1))

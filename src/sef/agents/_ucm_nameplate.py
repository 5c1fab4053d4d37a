"""The UCM's ``Nameplate``: what a CTA-2045 water heater tells, completed by configuration.

CTA-2045 has no nameplate message. What an SGD can tell, and what the UCM reads:

==================  ====================================================================
key                 source (an option given to ``sef ucm`` always wins)
==================  ====================================================================
``Heater_Type``     GetInformation device type: 0x0002 electric → ``resistance``; 0x0003
                    heat pump, 0x001B variable-capacity heat pump → ``heat_pump``; any
                    other type (gas, phase-change, unknown) or no answer →
                    ``--heater-type`` (default ``resistance``)
``Element_kW``      Commodity Read code 8 (rated maximum electric consumption), its
                    instantaneous field in W; else ``--element-kw`` (default 4.5 kW)
``Setpoint_C``      Get Setpoint (``03 03``) setpoint 1, °F or °C as the SGD says; else
                    ``--setpoint-c`` (default 51.67 °C, 125 °F)
``Volume_L``        estimated from Commodity Read code 6 (total energy storage, Wh) and
                    the setpoint, assuming the SGD counts storage above 110 °F (43.33 °C,
                    as SEF's emulator and model do): V = 3600·Wh / (c·(T_set − 43.33 °C));
                    else ``--volume-l`` (default 170 L, a nominal 50-gal tank)
``Compressor_kW``   ``--compressor-kw`` (default 0.5 kW for a heat pump); 0 for a
                    resistance heater
``Deadband_K``      ``--deadband-k`` (default 5.56 K, 10 °F): CTA-2045 does not carry it
``Inlet_C``         ``--inlet-c`` only (absent otherwise)
==================  ====================================================================

Field units report storage (codes 6 and 7) with large errors (``docs/ucm.md``), so a
volume estimate outside 20–1 000 L is discarded; the smallest estimate since the
connection is kept (a tank hotter than its setpoint reports more than a full tank).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sef.agents._nameplate import HEATER_TYPES, water_heater_nameplate
from sef.interface import Variant
from sef.protocols import cta2045 as cta
from sef.protocols.cta2045._ucm_side import UcmRequester

__all__ = [
    "DEFAULT_COMPRESSOR_KW",
    "DEFAULT_DEADBAND_K",
    "DEFAULT_ELEMENT_KW",
    "DEFAULT_SETPOINT_C",
    "DEFAULT_VOLUME_L",
    "NameplateOptions",
    "SgdRatings",
    "heater_type_of",
    "volume_from_storage_l",
]

log = logging.getLogger("sef.agent.ucm")

DEFAULT_VOLUME_L = 170.0
"""Tank volume used when neither the SGD nor ``--volume-l`` tells, L (SEF's 50-gal tank)."""
DEFAULT_ELEMENT_KW = 4.5
"""Element power used when neither the SGD nor ``--element-kw`` tells, kW."""
DEFAULT_COMPRESSOR_KW = 0.5
"""Compressor power of a heat pump when ``--compressor-kw`` is not given, kW."""
DEFAULT_SETPOINT_C = 51.67
"""Setpoint used when neither the SGD nor ``--setpoint-c`` tells, °C (125 °F)."""
DEFAULT_DEADBAND_K = 5.56
"""Thermostat deadband when ``--deadband-k`` is not given, K (10 °F)."""
STORAGE_REFERENCE_C = 43.33
"""Temperature above which the SGD is assumed to count stored energy (codes 6/7), °C."""
WATER_J_PER_L_K = 4_183.0
"""Heat capacity of water, J/(L·K) (4183 J/(kg·K) × 1 kg/L, as SEF's tank model)."""
_PLAUSIBLE_L = (20.0, 1_000.0)
_HEAT_PUMPS = {cta.DeviceType.HEAT_PUMP_WATER_HEATER, cta.DeviceType.HPWH_VARIABLE_CAPACITY}


@dataclass(frozen=True, slots=True)
class NameplateOptions:
    """Nameplate values given by configuration (``None``: not given, the SGD's value or
    the default is used). Units: L, kW, °C, K."""

    heater_type: str | None = None
    volume_l: float | None = None
    element_kw: float | None = None
    compressor_kw: float | None = None
    setpoint_c: float | None = None
    deadband_k: float | None = None
    inlet_c: float | None = None

    def __post_init__(self) -> None:
        if self.heater_type is not None and self.heater_type not in HEATER_TYPES:
            raise ValueError(f"heater type {self.heater_type!r} is not one of {HEATER_TYPES}")
        for name in ("volume_l", "element_kw", "compressor_kw", "deadband_k"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")


def heater_type_of(device_type: int | None) -> str | None:
    """``resistance`` / ``heat_pump`` for a CTA-2045 device type, ``None`` if neither."""
    if device_type == cta.DeviceType.ELECTRIC_WATER_HEATER:
        return "resistance"
    return "heat_pump" if device_type in _HEAT_PUMPS else None


def volume_from_storage_l(total_storage_wh: float, setpoint_c: float) -> float | None:
    """Tank volume (L) from commodity 6 (Wh, a full tank at the setpoint) and the setpoint
    (°C), or ``None`` when the estimate is not plausible (outside 20–1 000 L)."""
    span_k = setpoint_c - STORAGE_REFERENCE_C
    if total_storage_wh <= 0 or span_k <= 1.0:
        return None
    volume = total_storage_wh * 3600.0 / (WATER_J_PER_L_K * span_k)
    return volume if _PLAUSIBLE_L[0] <= volume <= _PLAUSIBLE_L[1] else None


class SgdRatings:
    """What the SGD told about itself since the connection, and the resulting nameplate.

    The adapter calls :meth:`reset` at each connection, :meth:`read_setpoint` on the first
    poll (when the SGD speaks Intermediate DR), :meth:`commodities` on every Commodity
    Read and :meth:`polled` after each poll; :meth:`nameplate` is ``None`` until the first
    poll after a connection ended.
    """

    def __init__(self, options: NameplateOptions | None = None) -> None:
        self.options = options or NameplateOptions()
        self.reset()

    def reset(self) -> None:
        """Forget the SGD's answers (a new connection: maybe another device)."""
        self.device_type: int | None = None
        self.element_w: float | None = None
        self.storage_wh: float | None = None
        self.setpoint_c: float | None = None
        self.volume_l: float | None = None
        self.setpoint_due = True
        self.ready = False

    async def read_setpoint(self, asker: UcmRequester) -> None:
        """Get Setpoint (``03 03``): setpoint 1 in °C (once per connection)."""
        self.setpoint_due = False
        supported, reply = await asker.request_optional(cta.GetSetpointRequest())
        if supported and isinstance(reply, cta.SetpointReply) and reply.response_code == 0:
            celsius = reply.units == cta.TemperatureUnits.CELSIUS
            value = float(reply.setpoint1)
            self.setpoint_c = round(value if celsius else (value - 32.0) * 5.0 / 9.0, 2)

    def commodities(self, reply: cta.CommodityReadReply) -> None:
        """Commodity 8 (rated maximum consumption, W) and 6 (total storage, Wh)."""
        rated = reply.get(cta.CommodityCode.RATED_MAX_CONSUMPTION)
        if rated is not None and rated.instantaneous > 0:
            self.element_w = float(rated.instantaneous)
        total = reply.get(cta.CommodityCode.TOTAL_ENERGY_STORAGE)
        if total is not None:
            self.storage_wh = float(total.cumulative)

    def polled(self) -> None:
        """A poll ended: the volume estimate is updated and the nameplate is ready."""
        setpoint = self._setpoint_c()
        if self.storage_wh is not None:
            estimate = volume_from_storage_l(self.storage_wh, setpoint)
            if estimate is not None and (self.volume_l is None or estimate < self.volume_l):
                self.volume_l = estimate
        self.ready = True

    def _setpoint_c(self) -> float:
        return _first(self.options.setpoint_c, self.setpoint_c, DEFAULT_SETPOINT_C)

    def nameplate(self, device_type: int | None) -> dict[str, Variant] | None:
        """The ``Nameplate`` (``device_type`` from GetInformation), ``None`` before the
        first poll of the connection."""
        if not self.ready:
            return None
        o = self.options
        told = heater_type_of(device_type)
        heater_type = o.heater_type or told or "resistance"
        element_w = self.element_w
        compressor_kw = 0.0 if heater_type == "resistance" else DEFAULT_COMPRESSOR_KW
        return water_heater_nameplate(
            heater_type=heater_type,
            volume_l=round(_first(o.volume_l, self.volume_l, DEFAULT_VOLUME_L), 1),
            element_kw=_first(o.element_kw, element_w and element_w / 1000.0, DEFAULT_ELEMENT_KW),
            compressor_kw=_first(o.compressor_kw, None, compressor_kw),
            setpoint_c=self._setpoint_c(),
            deadband_k=_first(o.deadband_k, None, DEFAULT_DEADBAND_K),
            inlet_c=o.inlet_c,
        )


def _first(configured: float | None, told: float | None, default: float) -> float:
    """The configured value, else the device's, else the default."""
    if configured is not None:
        return configured
    return told if told is not None else default

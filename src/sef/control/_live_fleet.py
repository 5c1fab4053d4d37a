"""The live controller's fleet, learned from the EMS registry (no scenario slots).

Every online agent that publishes the demo interface's ``Nameplate`` property (``a{sv}``,
contract in ``docs/control.md``, "Live mode") is a member: ``DeviceType`` ``battery``,
``water_heater`` or ``meter``. The fleet is read again at every re-plan, so agents that
join or leave mid-day are used (or dropped) from the next re-plan on. A battery or heater
held by a demand-response event (``TargetBoard.hold``) is not a member while held.

Nameplate keys and the defaults used when an optional key is missing (logged once per
agent and key):

* battery: ``Charge_Rate_kW``, ``Discharge_Rate_kW`` (default: the scenario's
  ``rated_power_kw``), ``Capacity_kWh`` (scenario ``capacity_kwh``), ``SOC_Min_pct``,
  ``SOC_Max_pct`` (scenario SOC window), ``Charge_Efficiency_pct``,
  ``Discharge_Efficiency_pct`` (scenario efficiencies);
* water heater: ``Heater_Type`` (``resistance``), ``Volume_L``, ``Element_kW``,
  ``Compressor_kW`` (0), ``Setpoint_C``, ``Deadband_K``, ``Inlet_C`` (scenario values);
* meter: ``Phases`` (informative).

An agent without a nameplate (one built before the property existed) is classified from
its ``Telemetry`` keys (``Sys_Energy_kWh``: battery; ``Energy_Stored_Wh``: water heater;
``Net_Power_kW``: meter) with the scenario's parameters, and logged once.

What the controllers' fleet model takes (:class:`~sef.control.scenario.Scenario`,
``FleetInfo``): water-heater parameters per device (volume, element power, setpoint,
deadband, inlet), so heterogeneous heaters are modelled exactly; battery parameters are
one :class:`~sef.models.battery.BatteryParams` for the fleet, so the controller sees the
**equivalent battery** (mean capacity, capacity-weighted SOC window, mean of each
battery's smaller rate, mean efficiencies: fleet totals of capacity and energy window
are exact) and :func:`battery_limits` re-splits the fleet power by each battery's own
nameplate. A heat-pump heater is modelled by its electric power (``Compressor_kW``), not
its heat output (the COP is not in the fleet model).
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from sef.control import profiles
from sef.control.scenario import Scenario
from sef.ems import EMS
from sef.ems._registry import Registry
from sef.interface import DEMO_INTERFACE

__all__ = [
    "BatteryPlate",
    "HeaterPlate",
    "LiveFleet",
    "battery_limits",
    "discover_fleet",
    "fleet_scenario",
    "plain",
    "wait_for_fleet",
]

log = logging.getLogger("sef.control.live")

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_warned: set[tuple[str, str]] = set()


def plain(value: Any) -> dict[str, Any]:
    """An ``a{sv}`` JSON mapping (``{key: [signature, value]}``) → plain values."""
    if not isinstance(value, dict):
        return {}
    return {k: v[1] if isinstance(v, list) and len(v) == 2 else v for k, v in value.items()}


def _once(agent_id: str, key: str, text: str) -> None:
    if (agent_id, key) not in _warned:
        _warned.add((agent_id, key))
        log.info("live fleet: %s: %s", agent_id, text)


PLAUSIBLE: dict[str, tuple[float, float]] = {
    "Charge_Rate_kW": (0.01, 10_000.0),
    "Discharge_Rate_kW": (0.01, 10_000.0),
    "Capacity_kWh": (0.01, 100_000.0),
    "SOC_Min_pct": (0.0, 100.0),
    "SOC_Max_pct": (0.0, 100.0),
    "Charge_Efficiency_pct": (1.0, 100.0),
    "Discharge_Efficiency_pct": (1.0, 100.0),
    "Volume_L": (1.0, 10_000.0),
    "Element_kW": (0.0, 100.0),
    "Compressor_kW": (0.0, 100.0),
    "Setpoint_C": (20.0, 95.0),
    "Deadband_K": (0.1, 30.0),
    "Inlet_C": (0.0, 40.0),
}
"""What the fleet takes of a nameplate key (inclusive bounds, in the key's unit): a value
outside (a broken or hostile agent's 1e300 kWh or −5 kW) would make every plan of the
fleet wrong, so the scenario's default is used instead and logged once."""


def _num(plate: dict[str, Any], key: str, default: float, agent_id: str) -> float:
    value = plate.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        low, high = PLAUSIBLE.get(key, (-math.inf, math.inf))
        # compared as they are: np.isfinite(2**64) raises, float(10**400) overflows
        if low <= value <= high:
            return float(value)
        _once(agent_id, key, f"nameplate {key} {str(value)[:24]} is outside {low:g}..{high:g}: "
              f"using {default:g}")  # fmt: skip
        return default
    _once(agent_id, key, f"nameplate has no {key}: using {default:g}")
    return default


@dataclass(frozen=True)
class BatteryPlate:
    """A battery's nameplate (kW, kWh, fractions)."""

    agent_id: str
    charge_kw: float
    discharge_kw: float
    capacity_kwh: float
    soc_min: float
    soc_max: float
    eta_c: float
    eta_d: float

    @classmethod
    def read(cls, agent_id: str, plate: dict[str, Any], sc: Scenario) -> BatteryPlate:
        """From the ``Nameplate`` keys; scenario defaults for missing ones."""
        bp = sc.battery_params
        soc_min = _num(plate, "SOC_Min_pct", 100.0 * bp.soc_min, agent_id) / 100.0
        soc_max = _num(plate, "SOC_Max_pct", 100.0 * bp.soc_max, agent_id) / 100.0
        if not soc_min < soc_max:
            _once(agent_id, "SOC window", f"nameplate SOC window {soc_min:.0%}..{soc_max:.0%} "
                  "is empty: using the scenario's")  # fmt: skip
            soc_min, soc_max = bp.soc_min, bp.soc_max
        return cls(
            agent_id,
            _num(plate, "Charge_Rate_kW", bp.rated_power_kw, agent_id),
            _num(plate, "Discharge_Rate_kW", bp.rated_power_kw, agent_id),
            _num(plate, "Capacity_kWh", bp.capacity_kwh, agent_id),
            soc_min,
            soc_max,
            _num(plate, "Charge_Efficiency_pct", 100.0 * bp.charge_efficiency, agent_id) / 100.0,
            _num(plate, "Discharge_Efficiency_pct", 100.0 * bp.discharge_efficiency, agent_id)
            / 100.0,
        )


@dataclass(frozen=True)
class HeaterPlate:
    """A water heater's nameplate (L, kW, °C, K)."""

    agent_id: str
    heater_type: str
    volume_l: float
    element_kw: float
    compressor_kw: float
    setpoint_c: float
    deadband_k: float
    inlet_c: float

    @property
    def electric_kw(self) -> float:
        """Electric power when heating (kW): the compressor's for a heat pump."""
        if self.heater_type == "heat_pump" and self.compressor_kw > 0:
            return self.compressor_kw
        return self.element_kw

    @classmethod
    def read(cls, agent_id: str, plate: dict[str, Any], sc: Scenario) -> HeaterPlate:
        """From the ``Nameplate`` keys; scenario defaults for missing ones."""
        kind = plate.get("Heater_Type")
        if kind not in ("resistance", "heat_pump"):
            _once(agent_id, "Heater_Type", f"Heater_Type {kind!r}: taken as resistance")
            kind = "resistance"
        return cls(
            agent_id,
            str(kind),
            _num(plate, "Volume_L", sc.wh_scalar("volume_l"), agent_id),
            _num(plate, "Element_kW", sc.wh_scalar("element_kw"), agent_id),
            _num(plate, "Compressor_kW", 0.0, agent_id),
            _num(plate, "Setpoint_C", sc.wh_scalar("setpoint_c"), agent_id),
            _num(plate, "Deadband_K", sc.wh_scalar("deadband_k"), agent_id),
            _num(plate, "Inlet_C", sc.wh_scalar("inlet_c"), agent_id),
        )


@dataclass(frozen=True)
class LiveFleet:
    """The online fleet at one re-plan, members sorted by agent id."""

    batteries: tuple[BatteryPlate, ...] = ()
    heaters: tuple[HeaterPlate, ...] = ()
    meters: tuple[str, ...] = ()
    inferred: tuple[str, ...] = field(default=(), compare=False)

    @property
    def battery_ids(self) -> list[str]:
        """Agent ids of the batteries, in fleet order."""
        return [b.agent_id for b in self.batteries]

    @property
    def heater_ids(self) -> list[str]:
        """Agent ids of the water heaters, in fleet order."""
        return [h.agent_id for h in self.heaters]

    def capacity_kwh(self) -> FloatArray:
        """Capacity per battery (kWh)."""
        return np.array([b.capacity_kwh for b in self.batteries], dtype=np.float64)


def _device_type(agent_id: str, plate: dict[str, Any], telemetry: dict[str, Any]) -> str | None:
    kind = plate.get("DeviceType")
    if kind in ("battery", "water_heater", "meter"):
        return str(kind)
    if plate:
        _once(agent_id, "DeviceType", f"nameplate DeviceType {kind!r} unknown: not controlled")
        return None
    if "Net_Power_kW" in telemetry:
        return "meter"
    if "Sys_Energy_kWh" in telemetry:
        return "battery"
    if "Energy_Stored_Wh" in telemetry or "Tank_Temp_C" in telemetry:
        return "water_heater"
    return None


def discover_fleet(
    registry: Registry, template: Scenario, exclude: frozenset[str] = frozenset()
) -> LiveFleet:
    """The online agents with a nameplate (or classifiable telemetry), by device type;
    batteries and heaters in ``exclude`` (held by a demand-response event) are left out,
    meters never."""
    batteries: list[BatteryPlate] = []
    heaters: list[HeaterPlate] = []
    meters: list[str] = []
    inferred: list[str] = []
    for record in sorted(registry.agents.values(), key=lambda r: r.agent_id):
        if not record.online:
            continue
        plate = plain(record.prop(DEMO_INTERFACE, "Nameplate"))
        telemetry = plain(record.prop(DEMO_INTERFACE, "Telemetry"))
        kind = _device_type(record.agent_id, plate, telemetry)
        if kind is None or (kind != "meter" and record.agent_id in exclude):
            continue
        if not plate:
            inferred.append(record.agent_id)
            _once(
                record.agent_id,
                "Nameplate",
                f"no Nameplate; taken as a {kind} with the scenario's parameters",
            )
        if kind == "battery":
            batteries.append(BatteryPlate.read(record.agent_id, plate, template))
        elif kind == "water_heater":
            heaters.append(HeaterPlate.read(record.agent_id, plate, template))
        else:
            meters.append(record.agent_id)
    return LiveFleet(tuple(batteries), tuple(heaters), tuple(meters), tuple(inferred))


def fleet_scenario(template: Scenario, fleet: LiveFleet, energy_kwh: FloatArray) -> Scenario:
    """``template`` (base load, target, settings) with the live fleet's parameters.

    Args:
        template: the scenario the live run follows.
        fleet: the fleet now online.
        energy_kwh: measured stored energy per battery (kWh): the equivalent battery's
            initial SOCs (the "return to start" reference of a controller reset here).
    """
    n_b, n_w = len(fleet.batteries), len(fleet.heaters)
    bp = template.battery_params
    if n_b:
        cap = fleet.capacity_kwh()
        mean_cap = float(cap.mean())
        bp = replace(
            bp,
            rated_power_kw=float(
                np.mean([min(b.charge_kw, b.discharge_kw) for b in fleet.batteries])
            ),
            capacity_kwh=mean_cap,
            soc_min=float(np.sum(cap * [b.soc_min for b in fleet.batteries]) / cap.sum()),
            soc_max=float(np.sum(cap * [b.soc_max for b in fleet.batteries]) / cap.sum()),
            charge_efficiency=float(np.mean([b.eta_c for b in fleet.batteries])),
            discharge_efficiency=float(np.mean([b.eta_d for b in fleet.batteries])),
        )
        soc0 = np.clip(np.asarray(energy_kwh, dtype=np.float64) / mean_cap, 0.0, 1.0)
    else:
        soc0 = np.zeros(0)

    def per_heater(name: str) -> FloatArray:
        return np.array([getattr(h, name) for h in fleet.heaters], dtype=np.float64)

    setpoint, deadband = per_heater("setpoint_c"), per_heater("deadband_k")
    wh = replace(
        template.wh_params,
        volume_l=per_heater("volume_l"),
        element_kw=np.array([h.electric_kw for h in fleet.heaters], dtype=np.float64),
        setpoint_c=setpoint,
        deadband_k=deadband,
        inlet_c=per_heater("inlet_c"),
        initial_c=setpoint - 0.5 * deadband,
        ua_w_per_k=np.broadcast_to(
            np.asarray(template.wh_params.ua_w_per_k, dtype=np.float64).mean(), (n_w,)
        ).copy(),
        ambient_c=np.broadcast_to(
            np.asarray(template.wh_params.ambient_c, dtype=np.float64).mean(), (n_w,)
        ).copy(),
    )
    if template.n_heaters:
        draws_expected = template.draws_expected_lpm * (n_w / template.n_heaters)
    else:
        draws_expected = profiles.expected_draw_flow(n_w, template.dt_s, template.steps)
    live = replace(
        template,
        battery_params=bp,
        battery_soc0=soc0,
        wh_params=wh,
        draws_lpm=_no_draws(template, n_w),
        draws_expected_lpm=np.asarray(draws_expected, dtype=np.float64),
    )
    if template.n_heaters and hasattr(template, "wh_uncontrolled_means"):
        # the fleet-mean outlet temperature and standby loss the template's tank model
        # found for the same draw pattern (the live scenario has no realised draws)
        live.__dict__["_wh_means"] = template.wh_uncontrolled_means()
    return live


def _no_draws(template: Scenario, n_w: int) -> Any:
    """An empty draw schedule for ``n_w`` heaters (live: the realised draws are unknown;
    only a perfect-foresight app would read them)."""
    draws: Any = template.draws_lpm
    if hasattr(draws, "row"):  # a sparse DrawSchedule
        empty = np.zeros(0)
        return type(draws)(
            n_w, template.dt_s, template.steps, np.zeros(0, dtype=np.int64), empty, empty, empty
        )
    return np.zeros((template.steps, n_w))


def battery_limits(
    fleet: LiveFleet, energy_kwh: FloatArray, duration_s: float, margin: float = 0.0
) -> tuple[IntArray, IntArray]:
    """Integer AC limits per battery (kW, ``lo <= 0 <= hi``) over ``duration_s`` from each
    battery's own nameplate: rates, and the energy between its SOC limits (``margin``:
    a fraction of capacity kept off each limit)."""
    hours = max(duration_s, 1.0) / 3600.0
    cap = fleet.capacity_kwh()
    e = np.asarray(energy_kwh, dtype=np.float64)
    e_min = cap * (np.array([b.soc_min for b in fleet.batteries]) + margin)
    e_max = cap * (np.array([b.soc_max for b in fleet.batteries]) - margin)
    eta_c = np.array([b.eta_c for b in fleet.batteries])
    eta_d = np.array([b.eta_d for b in fleet.batteries])
    dis = np.minimum(
        [b.discharge_kw for b in fleet.batteries], np.maximum(e - e_min, 0.0) * eta_d / hours
    )
    chg = np.minimum(
        [b.charge_kw for b in fleet.batteries], np.maximum(e_max - e, 0.0) / eta_c / hours
    )
    lo = -np.floor(np.asarray(dis, dtype=np.float64) + 1e-9).astype(np.int64)
    hi = np.floor(np.asarray(chg, dtype=np.float64) + 1e-9).astype(np.int64)
    return lo, hi


async def wait_for_fleet(
    ems: EMS,
    scenario: Scenario,
    batteries: int,
    heaters: int,
    meters: int = 0,
    timeout_s: float = 60.0,
) -> LiveFleet:
    """Wait (real s) until the registry's fleet has at least these many batteries, water
    heaters and meters online with their nameplates (and telemetry); return it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        fleet = discover_fleet(ems.registry, scenario)
        reporting = all(
            (r := ems.registry.get(a)) is not None and r.prop(DEMO_INTERFACE, "Telemetry")
            for a in [*fleet.battery_ids, *fleet.heater_ids, *fleet.meters]
        )
        have = (len(fleet.batteries), len(fleet.heaters), len(fleet.meters))
        if reporting and all(
            h >= w for h, w in zip(have, (batteries, heaters, meters), strict=True)
        ):
            return fleet
        if loop.time() > deadline:
            raise TimeoutError(
                f"live control needs {batteries} batteries, {heaters} water heaters and "
                f"{meters} meters online with nameplates; online: {have[0]}, {have[1]}, "
                f"{have[2]}"
            )
        await asyncio.sleep(0.2)

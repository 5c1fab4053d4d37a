"""What the demo interface's commands mean for a battery, and its ``Telemetry`` keys.

Shared by every battery agent (the BIS over Modbus, the virtual battery) so that the
same command does the same thing everywhere.

Command semantics (rate in kW, a magnitude ≥ 0):

============  ===============================================================
``charge``    draw ``rate`` kW from the grid into the battery
``discharge`` deliver ``rate`` kW from the battery
``idle``      0 kW (the battery holds its charge; standby draw continues)
``shed``      demand response: reduce the site's net load — discharge at ``rate``
              kW, or with rate 0 just stop any charging (0 kW)
``endshed``   end of the demand-response event: back to idle (0 kW)
============  ===============================================================

A rate above the battery's rating is clipped to the rating, never sent raw, and the
clip is reported in telemetry (``Clipped``, ``Requested_kW``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sef.interface import Command, EnergyEvent, Variant

__all__ = ["BatteryReading", "battery_telemetry", "clip_power_kw", "requested_power_kw"]


def requested_power_kw(event: EnergyEvent) -> float:
    """AC power an event asks for (kW, + = charge, − = discharge), before clipping."""
    if event.cmd is Command.CHARGE:
        return float(event.rate_kw)
    if event.cmd in (Command.DISCHARGE, Command.SHED):
        return -float(event.rate_kw)
    return 0.0


def clip_power_kw(requested_kw: float, max_charge_kw: float, max_discharge_kw: float) -> float:
    """``requested_kw`` clipped to [−max_discharge_kw, max_charge_kw] (kW)."""
    return max(-max_discharge_kw, min(max_charge_kw, requested_kw))


@dataclass(frozen=True, slots=True)
class BatteryReading:
    """A battery's state as an agent last read it.

    Attributes:
        soc_pct: state of charge (%).
        energy_kwh: stored energy (kWh).
        rated_energy_kwh: nameplate energy (kWh).
        rated_power_kw: power rating (kW).
        dc_volts: DC bus voltage (V).
        dc_current_a: DC current (A, + = charging).
        power_kw: battery power at its DC terminals (kW, + = charging): the rate of
            change of stored energy plus losses, as SunSpec 802 ``W`` reports it.
        state: operating state, e.g. ``CONNECTED``, ``SOC_PROTECTION``, ``FAULT``.
        alarms: device alarm/event bits (0 = none).
    """

    soc_pct: float
    energy_kwh: float
    rated_energy_kwh: float
    rated_power_kw: float
    dc_volts: float
    dc_current_a: float
    power_kw: float
    state: str
    alarms: int = 0


def battery_telemetry(
    reading: BatteryReading | None,
    event: EnergyEvent,
    setpoint_kw: float,
    *,
    comm_fault: bool = False,
    fault_text: str = "",
) -> dict[str, Variant]:
    """A battery agent's ``Telemetry`` keys (``a{sv}``) beside the event and time stamp.

    ``reading`` is the last successful reading (kept, and flagged by ``Comm_Fault``, while
    the device cannot be reached); ``setpoint_kw`` is what the battery was last told (kW).
    """
    requested_kw = requested_power_kw(event)
    values: dict[str, Variant] = {
        "Setpoint_kW": Variant("d", round(setpoint_kw, 4)),
        "Requested_kW": Variant("d", round(requested_kw, 4)),
        "Clipped": Variant("b", abs(setpoint_kw - requested_kw) > 1e-9),
        "Comm_Fault": Variant("b", comm_fault),
    }
    if fault_text:
        values["Fault"] = Variant("s", fault_text)
    if reading is not None:
        values.update(
            {
                "Sys_Rated_Energy": Variant("d", reading.rated_energy_kwh),
                "Sys_Rated_Power": Variant("d", reading.rated_power_kw),
                "Sys_SOC": Variant("d", round(reading.soc_pct, 3)),
                "Sys_Energy_kWh": Variant("d", round(reading.energy_kwh, 4)),
                "Sys_DC_Volts": Variant("d", round(reading.dc_volts, 2)),
                "Sys_DC_Current": Variant("d", round(reading.dc_current_a, 3)),
                "Sys_Power_kW": Variant("d", round(reading.power_kw, 4)),
                "State": Variant("s", reading.state),
                "Alarms": Variant("u", reading.alarms),
            }
        )
    return values

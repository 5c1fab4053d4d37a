"""Parts of the inverter agent: its standing settings and its ``Telemetry`` keys."""

from __future__ import annotations

from sef.agents._device import DeviceStatus
from sef.interface import Variant
from sef.protocols.sunspec import PointValue

__all__ = ["INV_STATES", "InverterSettings", "inverter_telemetry", "num"]

#: SunSpec 701 ``InvSt`` values.
INV_STATES = {0: "OFF", 1: "SLEEPING", 2: "STARTING", 3: "RUNNING", 4: "THROTTLED",
              5: "SHUTTING_DOWN", 6: "FAULT", 7: "STANDBY"}  # fmt: skip


def num(value: object) -> float | None:
    """A point's value as a float, None when it is not a number (not implemented)."""
    return float(value) if isinstance(value, int | float) else None


class InverterSettings:
    """The agent's standing settings (``org.sef.der.Inverter``).

    Attributes:
        export_limit_kw: export limit (kW), None = none.
        pf: power-factor magnitude (1 = unity, the mode off).
        absorb: True = under-excited (absorb vars).
        volt_var: volt-var enable.
    """

    def __init__(self) -> None:
        self.export_limit_kw: float | None = None
        self.pf = 1.0
        self.absorb = False
        self.volt_var = False

    def as_property(self) -> dict[str, Variant]:
        """The ``Settings`` property value."""
        out = {
            "PowerFactor": Variant("d", round(self.pf, 4)),
            "PowerFactor_Absorb": Variant("b", self.absorb),
            "VoltVar_Enabled": Variant("b", self.volt_var),
        }
        if self.export_limit_kw is not None:
            out["ExportLimit_kW"] = Variant("d", round(self.export_limit_kw, 4))
        return out


def inverter_telemetry(
    reading: dict[str, PointValue],
    settings: InverterSettings,
    limit_kw: float | None,
    rating_kw: float,
    status: DeviceStatus,
    refused: str = "",
) -> dict[str, Variant]:
    """The inverter agent's keys from the last 701 ``reading`` (W, var, V, A, Hz, Wh, %),
    the settings and the limit in force (kW; ``rating_kw`` when none)."""
    r = reading
    out: dict[str, Variant] = {
        "Comm_Fault": Variant("b", bool(status.fault)),
        "Limit_kW": Variant("d", round(rating_kw if limit_kw is None else limit_kw, 4)),
        "Limited": Variant("b", limit_kw is not None),
        "PF_Setpoint": Variant("d", round(settings.pf, 4)),
        "VoltVar_Enabled": Variant("b", settings.volt_var),
    }
    if status.fault:
        out["Fault"] = Variant("s", status.fault)
    if refused:
        out["Refused"] = Variant("s", refused)
    if r:
        w = num(r.get("W")) or 0.0
        state = r.get("InvSt", None)
        out |= {
            "Power_W": Variant("d", round(-w, 1)),  # standard sign: + = consuming
            "PV_Power_kW": Variant("d", round(w / 1000, 4)),
            "Reactive_var": Variant("d", round(num(r.get("Var")) or 0.0, 1)),
            "Power_Factor": Variant("d", round(num(r.get("PF")) or 1.0, 4)),
            "AC_Volts": Variant("d", round(num(r.get("LNV")) or 0.0, 2)),
            "AC_Current": Variant("d", round(num(r.get("A")) or 0.0, 3)),
            "Frequency_Hz": Variant("d", round(num(r.get("Hz")) or 0.0, 3)),
            "Energy_Produced_Wh": Variant("d", num(r.get("TotWhInj")) or 0.0),
            "Curtailed_pct": Variant("d", num(r.get("ThrotPct")) or 0.0),
            "State": Variant("s", _state_name(state)),
            "Alarms": Variant("u", int(num(r.get("Alrm")) or 0)),
        }
    return out


def _state_name(state: PointValue) -> str:
    """701 ``InvSt`` as a name."""
    return INV_STATES.get(state, str(state)) if isinstance(state, int) else "UNKNOWN"

"""The birth of a virtual battery as `sef agent virtual-battery` publishes it (About and
the 17-key demo Telemetry), for benches that fill a registry or a store with a fleet."""

from __future__ import annotations

import hashlib
from typing import Any

from sef.interface import Variant, to_json

__all__ = ["battery_about", "battery_soc_pct", "battery_telemetry_json"]


def battery_about(agent: str) -> dict[str, Any]:
    """The About fields of virtual battery ``agent``."""
    return {
        "AppId": hashlib.md5(agent.encode()).hexdigest(),
        "DefaultLanguage": "en",
        "DeviceName": agent,
        "DeviceId": agent,
        "AppName": "SEF virtual battery",
        "Manufacturer": "SEF",
        "ModelNumber": "sef-virtual-battery",
        "SupportedLanguages": ["en"],
        "Description": "battery model inside the agent",
        "SoftwareVersion": "0.1.0",
        "HardwareVersion": "",
        "SupportUrl": "https://github.com/sef-energy/sef",
    }


def battery_soc_pct(index: int) -> float:
    """A state of charge, %, spread over 20-80 % by the agent's index."""
    return 20.0 + (index * 7 % 6000) / 100.0


def battery_telemetry_json(ts: float, soc_pct: float) -> Any:
    """The demo interface's idle Telemetry at Unix time ``ts``, s, and ``soc_pct``, %
    (60 kWh, 8 kW), as the JSON value the bus carries."""
    return to_json(
        "a{sv}",
        {
            "TimeStamp": Variant("u", int(ts)),
            "Event": Variant("s", "idle"),
            "Event_Rate_kW": Variant("n", 0),
            "Setpoint_kW": Variant("d", 0.0),
            "Requested_kW": Variant("d", 0.0),
            "Clipped": Variant("b", False),
            "Comm_Fault": Variant("b", False),
            "Sys_Rated_Energy": Variant("d", 60.0),
            "Sys_Rated_Power": Variant("d", 8.0),
            "Sys_SOC": Variant("d", soc_pct),
            "Sys_Energy_kWh": Variant("d", round(soc_pct * 0.6, 2)),
            "Sys_DC_Volts": Variant("d", 418.56),
            "Sys_DC_Current": Variant("d", 0.0),
            "Sys_Power_kW": Variant("d", 0.0),
            "State": Variant("s", "CONNECTED"),
            "Alarms": Variant("u", 0),
            "Control_Mismatch": Variant("b", False),
        },
    )

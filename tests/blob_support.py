"""An agent with a vendor's interface (``com.example.charger``) and its XML's hashes, for
the tests of interface XML retained once per hash (protocol version 2)."""

from __future__ import annotations

import hashlib
from typing import Any

from sef.agents import Agent, method
from sef.bus import Topics
from sef.interface import AGENT_INTERFACE, DEMO_INTERFACE, Variant, builtin_xml

T = Topics()
CHARGER = "com.example.charger"
CHARGER_XML = f"""<node>
  <interface name="{CHARGER}">
    <method name="SetPhases">
      <arg name="phases" type="y" direction="in"/>
    </method>
    <property name="Mode" type="s" access="read"/>
  </interface>
</node>
"""
CHARGER_SHA = hashlib.sha256(CHARGER_XML.encode()).hexdigest()
DEMO_SHA = hashlib.sha256(builtin_xml(DEMO_INTERFACE).encode()).hexdigest()
AGENT_SHA = hashlib.sha256(builtin_xml(AGENT_INTERFACE).encode()).hexdigest()


class Charger(Agent):
    """A vendor's agent: the demo interface plus ``com.example.charger``."""

    interfaces = (DEMO_INTERFACE,)

    def __init__(self, agent_id: str, broker: str, **kwargs: Any) -> None:
        super().__init__(agent_id, broker, interface_xml={CHARGER: CHARGER_XML}, **kwargs)
        self.phases: list[int] = []

    async def on_start(self) -> None:
        self.set_property(DEMO_INTERFACE, "AssetName", self.agent_id)
        self.set_property(DEMO_INTERFACE, "Telemetry", {"TimeStamp": Variant("u", 1)})
        self.set_property(CHARGER, "Mode", "solar")

    @method(DEMO_INTERFACE, "EnergyMethod")
    def energy_method(self, cmds: list[tuple[str, int, int]]) -> None:
        return None

    @method(CHARGER, "SetPhases")
    def set_phases(self, phases: int) -> None:
        self.phases.append(phases)

"""A battery agent whose battery is the SEF battery model, inside the agent process.

No device protocol sits between the agent and the model, which makes it the smallest
complete ``edu.pdx.powerlab.demo`` agent: the foundation demo and the bus tests use it,
and vendors can read it as the template of an agent. The BIS does the same job against
a real (or emulated) battery over Modbus.

Command semantics are those of every SEF battery agent (see :mod:`sef.agents._battery`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from sef.agents._battery import (
    BatteryReading,
    battery_telemetry,
    clip_power_kw,
    requested_power_kw,
)
from sef.agents._declare import AboutInfo
from sef.agents._der import DERAgent
from sef.bus import BrokerURL
from sef.clock import Clock
from sef.interface import DEMO_INTERFACE, EnergyEvent, Variant
from sef.models.battery import BatteryModel, BatteryParams

__all__ = ["VirtualBatteryAgent"]

log = logging.getLogger("sef.agent.virtual_battery")


class VirtualBatteryAgent(DERAgent):
    """``edu.pdx.powerlab.demo`` over an in-process battery model.

    Args:
        agent_id: id on the bus.
        broker: broker URL.
        params: battery parameters (default 8 kW / 60 kWh).
        soc: initial state of charge (fraction).
        step_s: model step and telemetry period, clock s.
    """

    interfaces = (DEMO_INTERFACE,)

    def __init__(self, agent_id: str, broker: BrokerURL | str, *,
                 params: BatteryParams | None = None, soc: float = 0.5,
                 step_s: float = 60.0, clock: Clock | None = None,
                 groups: Sequence[str] = (), keepalive_s: int = 10) -> None:
        super().__init__(agent_id, broker, clock=clock, groups=groups, keepalive_s=keepalive_s,
                         about=AboutInfo(app_name="SEF virtual battery",
                                         model_number="sef-virtual-battery",
                                         description="battery model inside the agent"))
        self.model = BatteryModel(params, n=1, soc=soc)
        self.step_s = step_s
        self.setpoint_kw = 0.0
        self.requested_kw = 0.0
        self._last_step = self.clock.now()
        self._loop_task: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        self.set_property(DEMO_INTERFACE, "AssetName", self.about.fields(self.agent_id)
                          ["DeviceName"])
        self._publish_telemetry()
        self._loop_task = asyncio.create_task(self._periodic())

    async def on_stop(self) -> None:
        await self.sequencer.cancel()
        if self._loop_task is not None:
            self._loop_task.cancel()


    def _apply(self, event: EnergyEvent) -> None:
        self._advance()
        rated = self.model.params.rated_power_kw
        self.requested_kw = requested_power_kw(event)
        self.setpoint_kw = clip_power_kw(self.requested_kw, rated, rated)
        if self.setpoint_kw != self.requested_kw:
            log.warning("%s: rate %.0f kW clipped to the %.0f kW rating", self.agent_id,
                        abs(self.requested_kw), rated)
        self._publish_telemetry()

    def _advance(self) -> None:
        now = self.clock.now()
        dt = now - self._last_step
        if dt > 0:
            self.model.step(self.setpoint_kw, dt)
        self._last_step = now

    async def _periodic(self) -> None:
        while True:
            await self.clock.sleep(self.step_s)
            self._advance()
            self._publish_telemetry()

    def telemetry(self) -> dict[str, Variant]:
        """The ``Telemetry`` property (``a{sv}``, keys of :func:`battery_telemetry`)."""
        model = self.model
        reading = BatteryReading(
            soc_pct=float(model.soc[0]) * 100.0, energy_kwh=float(model.energy_kwh[0]),
            rated_energy_kwh=model.params.capacity_kwh,
            rated_power_kw=model.params.rated_power_kw, dc_volts=float(model.dc_volts[0]),
            dc_current_a=float(model.dc_current_a[0]), power_kw=float(model.dc_power_kw[0]),
            state="SOC_PROTECTION" if model.clipped[0] and self.setpoint_kw else "CONNECTED")
        return battery_telemetry(self.clock.now(), reading, self.sequencer.current,
                                 self.setpoint_kw, self.requested_kw)

    def _publish_telemetry(self) -> None:
        self.set_property(DEMO_INTERFACE, "Telemetry", self.telemetry())

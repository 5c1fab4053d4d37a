"""A battery agent whose battery is the SEF battery model, inside the agent process.

No device protocol sits between the agent and the model, which makes it the smallest
complete ``edu.pdx.powerlab.demo`` agent: the foundation demo and the bus tests use it,
and vendors can read it as the template of a device adapter. Command semantics are those
of every SEF battery agent (see :mod:`sef.agents._battery`).
"""

from __future__ import annotations

from collections.abc import Sequence

from sef.agents._battery import BatteryReading, battery_telemetry, clip_power_kw, requested_power_kw
from sef.agents._declare import AboutInfo
from sef.agents._der import DERAgent
from sef.agents._device import DeviceAdapter, DeviceStatus
from sef.agents._nameplate import battery_nameplate
from sef.bus import BrokerURL
from sef.clock import Clock
from sef.interface import EnergyEvent, Variant
from sef.models.battery import BatteryModel, BatteryParams
from sef.security import Security

__all__ = ["ModelBattery", "VirtualBatteryAgent"]


class ModelBattery(DeviceAdapter):
    """The battery model (:class:`~sef.models.battery.BatteryModel`) as a device."""

    def __init__(self, params: BatteryParams | None = None, soc: float = 0.5) -> None:
        self.model = BatteryModel(params, n=1, soc=soc)
        self.setpoint_kw = 0.0
        self._last_step: float | None = None

    async def connect(self) -> None:
        """Start stepping the model from now (clock s)."""
        self._last_step = self.host.clock.now()

    async def read(self) -> None:
        """Step the model from the last step to now (clock s) at the running setpoint."""
        now = self.host.clock.now()
        if self._last_step is not None and now > self._last_step:
            self.model.step(self.setpoint_kw, now - self._last_step)
        self._last_step = now

    async def apply(self, event: EnergyEvent, left_s: float | None) -> None:
        """Step the model to now, then run at the event's setpoint (kW, clipped to the rating)."""
        await self.read()
        rated = self.model.params.rated_power_kw
        self.setpoint_kw = clip_power_kw(requested_power_kw(event), rated, rated)

    async def close(self) -> None:
        """Nothing to close: the model lives in this process."""

    def nameplate(self) -> dict[str, Variant]:
        """The model's parameters: kW, kWh, SOC limits and one-way efficiencies in %."""
        p = self.model.params
        return battery_nameplate(
            charge_kw=p.rated_power_kw,
            discharge_kw=p.rated_power_kw,
            capacity_kwh=p.capacity_kwh,
            soc_min_pct=100.0 * p.soc_min,
            soc_max_pct=100.0 * p.soc_max,
            charge_efficiency_pct=100.0 * p.charge_efficiency,
            discharge_efficiency_pct=100.0 * p.discharge_efficiency,
        )

    def telemetry(self, status: DeviceStatus) -> dict[str, Variant]:
        """Battery keys from the model's state: kW, kWh, %, V, A."""
        model = self.model
        reading = BatteryReading(
            soc_pct=float(model.soc[0]) * 100.0,
            energy_kwh=float(model.energy_kwh[0]),
            rated_energy_kwh=model.params.capacity_kwh,
            rated_power_kw=model.params.rated_power_kw,
            dc_volts=float(model.dc_volts[0]),
            dc_current_a=float(model.dc_current_a[0]),
            power_kw=float(model.dc_power_kw[0]),
            state="SOC_PROTECTION" if model.clipped[0] and self.setpoint_kw else "CONNECTED",
        )
        return battery_telemetry(reading, self.host.current_event, self.setpoint_kw)


class VirtualBatteryAgent(DERAgent[ModelBattery]):
    """``edu.pdx.powerlab.demo`` over an in-process battery model.

    Args:
        agent_id: id on the bus.
        broker: broker URL.
        params: battery parameters (default 8 kW / 60 kWh).
        soc: initial state of charge (fraction).
        step_s: model step and telemetry period, clock s.
    """

    def __init__(
        self,
        agent_id: str,
        broker: BrokerURL | str,
        *,
        params: BatteryParams | None = None,
        soc: float = 0.5,
        step_s: float = 60.0,
        clock: Clock | None = None,
        groups: Sequence[str] = (),
        keepalive_s: int = 10,
        security: Security | None = None,
        sign_telemetry: bool = False,
    ) -> None:
        super().__init__(
            agent_id,
            broker,
            ModelBattery(params, soc),
            poll_s=step_s,
            poll_on_clock=True,
            clock=clock,
            groups=groups,
            keepalive_s=keepalive_s,
            security=security,
            sign_telemetry=sign_telemetry,
            about=AboutInfo(
                app_name="SEF virtual battery",
                model_number="sef-virtual-battery",
                description="battery model inside the agent",
            ),
        )

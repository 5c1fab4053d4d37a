"""Support for the OpenADR 3 end-to-end acceptance test (``test_acceptance_oadr3.py``): a
metered feeder of real emulators on the test's Mosquitto.

:func:`feeder_stack` starts an EMS on a scaled clock and

* the **feeder meter**: the SunSpec meter emulator (Modbus TCP) reading a constant base
  load plus every device on the feeder, which reports its AC power to the meter's CT input
  (UDP, as ``sef emulate battery/waterheater --ct`` do), and a meter agent publishing
  ``Net_Power_kW``;
* ``bat-1`` … ``bat-N``: BIS agents over Modbus TCP to SunSpec battery emulators (8 kW,
  60 kWh each);
* ``wh-1`` … ``wh-M``: UCM agents over a real pty to CTA-2045 SGD emulators (no draws);

in the groups of :mod:`dr_stack` (every device and the meter in ``feeder-1``). A sampler
reads the meter emulator's own measurement (:meth:`MeterEmulator.power_w`) every
``sample_real_s`` (real s) into :attr:`FeederStack.samples`: what the feeder drew, checked
at the meter, independently of the EMS.

Imported by bare name (tests/openadr is on sys.path while its tests run, and on mypy's path).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from dr_stack import BATTERY_GROUPS, METER_GROUPS, stop_stack, ucm_on_pty

from sef.agents.bis import BISAgent
from sef.agents.meter import MeterAgent
from sef.agents.ucm import UCMAgent
from sef.clock import ScaledClock
from sef.ems import EMS
from sef.emulators._meter_sources import BaseLoad, report_power
from sef.emulators.battery import BatteryEmulator
from sef.emulators.meter import MeterEmulator
from sef.emulators.waterheater import SGDEmulator
from sef.interface import DEMO_INTERFACE
from sef.models.battery import BatteryModel
from support import wait_for
from ucm_helpers import FAST

METER_ID = "meter-1"


class FeederSample(NamedTuple):
    """One reading of the meter emulator: clock time (Unix s) and net power (kW, + = import)."""

    t_s: float
    kw: float


@dataclass
class FeederStack:
    """The running feeder: emulators and agents by agent id, the meter's samples."""

    clock: ScaledClock
    ems: EMS
    meter: MeterEmulator
    batteries: dict[str, BatteryEmulator] = field(default_factory=dict)
    heaters: dict[str, SGDEmulator] = field(default_factory=dict)
    agents: dict[str, BISAgent | UCMAgent | MeterAgent] = field(default_factory=dict)
    samples: list[FeederSample] = field(default_factory=list)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def devices_kw(self) -> float:
        """The devices' AC power at their emulators now (kW, + = drawn from the grid)."""
        batteries = sum(float(b.model.ac_power_kw[0]) for b in self.batteries.values())
        return batteries + sum(h.power_w for h in self.heaters.values()) / 1000.0

    def readings(self, t0_s: float, t1_s: float) -> list[float]:
        """The meter emulator's readings (kW) taken in ``[t0_s, t1_s)`` (clock s)."""
        return [s.kw for s in self.samples if t0_s <= s.t_s < t1_s]

    def step_means_kw(self, start_s: float, dt_s: float, steps: int) -> np.ndarray[Any, Any]:
        """The mean (kW) of the meter emulator's readings in each step ``[start_s + k·dt_s,
        start_s + (k+1)·dt_s)`` (NaN: no reading). Readings are at a fixed real period, so
        the plain mean is the time-weighted one."""
        out = np.full(steps, np.nan)
        for k in range(steps):
            got = self.readings(start_s + k * dt_s, start_s + (k + 1) * dt_s)
            if got:
                out[k] = float(np.mean(got))
        return out


def _online(stack: FeederStack) -> bool:
    for agent_id, agent in stack.agents.items():
        record = stack.ems.registry.get(agent_id)
        if record is None or record.online is not True or not record.groups:
            return False
        telemetry = record.prop(DEMO_INTERFACE, "Telemetry") or {}
        if not record.prop(DEMO_INTERFACE, "Nameplate"):
            return False
        key = {BISAgent: "Sys_Power_kW", UCMAgent: "Power_W", MeterAgent: "Net_Power_kW"}
        if key[type(agent)] not in telemetry:
            return False
    return True


async def _sample(stack: FeederStack, period_real_s: float) -> None:
    while True:
        stack.samples.append(FeederSample(stack.clock.now(), stack.meter.power_w() / 1000.0))
        await asyncio.sleep(period_real_s)


@contextlib.asynccontextmanager
async def feeder_stack(
    broker_url: str,
    *,
    base_kw: float,
    speed: float,
    batteries: int = 2,
    heaters: int = 1,
    soc: float = 0.6,
    agent_poll_real_s: float = 0.05,
    sample_real_s: float = 0.01,
    host_id: str = "ems-oa3-feeder",
) -> AsyncIterator[FeederStack]:
    """Start the feeder (module text); yields once every agent is online with its nameplate
    and telemetry. ``agent_poll_real_s``: every agent's poll (real s)."""
    clock = ScaledClock(speed=speed)
    meter = MeterEmulator(port=0, clock=clock, base_load=BaseLoad.constant(base_kw), ct_port=0)
    stack = FeederStack(clock, EMS(broker_url, host_id, clock=clock, keepalive_s=5), meter)
    try:
        await stack.ems.start()
        host, port = await meter.start()
        assert meter.ct_address is not None
        ct = meter.ct_address
        stack.tasks.append(asyncio.create_task(meter.run()))
        stack.agents[METER_ID] = MeterAgent(
            METER_ID,
            broker_url,
            modbus_host=host,
            modbus_port=port,
            poll_s=agent_poll_real_s,
            clock=clock,
            groups=METER_GROUPS,
            keepalive_s=2,
        )
        for i in range(1, batteries + 1):
            emulator = BatteryEmulator(port=0, clock=clock, soc=soc, tick_s=speed * 0.02)
            _, bport = await emulator.start()
            name = f"bat-{i}"
            model = emulator.model
            stack.tasks += [
                asyncio.create_task(emulator.run()),
                asyncio.create_task(report_power(_battery_w(model), ct, name)),
            ]
            stack.batteries[name] = emulator
            stack.agents[name] = BISAgent(
                name,
                broker_url,
                modbus_host="127.0.0.1",
                modbus_port=bport,
                poll_s=agent_poll_real_s,
                clock=clock,
                groups=BATTERY_GROUPS,
                keepalive_s=2,
            )
        for j in range(1, heaters + 1):
            sgd = SGDEmulator(clock, timing=FAST, draws=np.zeros(0), serial=f"SEF-WH-{j:04d}")
            name = f"wh-{j}"
            stack.heaters[name] = sgd
            stack.agents[name] = await ucm_on_pty(
                sgd, name, broker_url, clock, stack.tasks, poll_s=max(agent_poll_real_s, 0.1)
            )
            stack.tasks.append(asyncio.create_task(report_power(_heater_w(sgd), ct, name)))
        for agent in stack.agents.values():
            await agent.start()
        await wait_for(lambda: _online(stack), 15.0)
        stack.tasks.append(asyncio.create_task(_sample(stack, sample_real_s)))
        yield stack
    finally:
        await stop_stack(stack)
        await meter.stop()


def _battery_w(model: BatteryModel) -> Callable[[], float]:
    """The CT reading of a battery model: its AC power, W (+ = charging = from the grid)."""
    return lambda: float(model.ac_power_kw[0]) * 1000.0


def _heater_w(sgd: SGDEmulator) -> Callable[[], float]:
    """The CT reading of a water heater: its element power, W."""
    return lambda: sgd.power_w

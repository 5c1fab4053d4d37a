"""A demand-response test stack: the test's Mosquitto, an EMS on a scaled clock, and real
agents in groups, their commands checked at the emulators.

* ``bat-1`` … ``bat-N``: BIS agents over Modbus TCP to the SunSpec battery emulator,
  groups ``batteries`` and ``feeder-1``;
* ``wh-1`` … ``wh-M``: UCM agents over a real pty to the CTA-2045 SGD emulator, groups
  ``waterheaters`` and ``feeder-1``.

Imported by bare name (``from dr_stack import dr_stack``; tests/openadr is on sys.path
while its tests run, and on mypy's path).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from sef.agents.bis import BISAgent
from sef.agents.meter import MeterAgent
from sef.agents.ucm import UCMAgent
from sef.clock import ScaledClock
from sef.ems import EMS
from sef.emulators._meter_sources import BaseLoad
from sef.emulators.battery import BatteryEmulator
from sef.emulators.meter import MeterEmulator
from sef.emulators.waterheater import SGDEmulator, run_sgd_emulator
from sef.interface import DEMO_INTERFACE
from sef.models.waterheater_dr import DRMode
from support import wait_for
from ucm_helpers import FAST


class StackParts(Protocol):
    """What :func:`stop_stack` stops of a stack (:class:`DrStack`, or another test stack
    with the same parts)."""

    @property
    def ems(self) -> EMS: ...
    @property
    def batteries(self) -> Mapping[str, BatteryEmulator]: ...
    @property
    def agents(self) -> Mapping[str, Any]: ...
    @property
    def tasks(self) -> list[asyncio.Task[Any]]: ...


BATTERY_GROUPS = ("batteries", "feeder-1")
HEATER_GROUPS = ("waterheaters", "feeder-1")
METER_GROUPS = ("feeder-1",)


@dataclass
class DrStack:
    """The running stack; emulators by agent id."""

    clock: ScaledClock
    ems: EMS
    batteries: dict[str, BatteryEmulator] = field(default_factory=dict)
    heaters: dict[str, SGDEmulator] = field(default_factory=dict)
    meters: dict[str, MeterEmulator] = field(default_factory=dict)
    agents: dict[str, BISAgent | UCMAgent | MeterAgent] = field(default_factory=dict)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def battery_kw(self, agent_id: str) -> float:
        """The AC power the battery emulator's controls ask for now, kW (+ = charge)."""
        return self.batteries[agent_id].setpoint_w() / 1000.0

    def heater_mode(self, agent_id: str) -> DRMode:
        """The SGD emulator's demand-response mode now."""
        sgd = self.heaters[agent_id]
        sgd.advance()
        return DRMode(int(sgd.model.mode[0]))

    def telemetry(self, agent_id: str) -> dict[str, Any]:
        """The agent's last telemetry in the EMS registry, as plain values."""
        record = self.ems.registry.get(agent_id)
        value = None if record is None else record.prop(DEMO_INTERFACE, "Telemetry")
        return {k: v[1] for k, v in (value or {}).items()}

    async def until(self, clock_s: float) -> None:
        """Wait (real time) until the stack's clock reads ``clock_s``."""
        await asyncio.sleep(max(0.0, self.clock.to_real(clock_s - self.clock.now())))


def _ready(stack: DrStack) -> bool:
    for agent_id in stack.agents:
        record = stack.ems.registry.get(agent_id)
        if record is None or record.online is not True or not record.groups:
            return False
        if not record.prop(DEMO_INTERFACE, "Nameplate"):
            return False
        telemetry = stack.telemetry(agent_id)
        if agent_id in stack.batteries and "Sys_Power_kW" not in telemetry:
            return False
        if agent_id in stack.heaters and "Power_W" not in telemetry:
            return False
        if agent_id in stack.meters and "Voltage_V" not in telemetry:
            return False
    return True


@contextlib.asynccontextmanager
async def dr_stack(
    broker_url: str,
    *,
    batteries: int = 1,
    heaters: int = 1,
    meters: int = 0,
    base_kw: float = 3.0,
    speed: float = 60.0,
    soc: float = 0.6,
    host_id: str = "ems-dr",
) -> AsyncIterator[DrStack]:
    """Start the stack; yields once every agent is online with nameplate and telemetry."""
    clock = ScaledClock(speed=speed)
    stack = DrStack(clock, EMS(broker_url, host_id, clock=clock, keepalive_s=5))
    try:
        await stack.ems.start()
        for i in range(1, batteries + 1):
            emulator = BatteryEmulator(port=0, clock=clock, soc=soc, tick_s=speed * 0.02)
            _, port = await emulator.start()
            stack.tasks.append(asyncio.create_task(emulator.run()))
            name = f"bat-{i}"
            stack.batteries[name] = emulator
            stack.agents[name] = BISAgent(
                name,
                broker_url,
                modbus_host="127.0.0.1",
                modbus_port=port,
                poll_s=0.1,
                clock=clock,
                groups=BATTERY_GROUPS,
                keepalive_s=2,
            )
        for i in range(1, heaters + 1):
            sgd = SGDEmulator(clock, timing=FAST, draws=np.zeros(0), serial=f"SEF-WH-{i:04d}")
            name = f"wh-{i}"
            stack.heaters[name] = sgd
            stack.agents[name] = await ucm_on_pty(sgd, name, broker_url, clock, stack.tasks)
        for i in range(1, meters + 1):
            meter = MeterEmulator(port=0, clock=clock, base_load=BaseLoad.constant(base_kw))
            await meter.start()
            assert meter.address is not None
            stack.tasks.append(asyncio.create_task(meter.run()))
            name = f"meter-{i}"
            stack.meters[name] = meter
            stack.agents[name] = MeterAgent(
                name,
                broker_url,
                modbus_host=meter.address[0],
                modbus_port=meter.address[1],
                poll_s=0.1,
                clock=clock,
                groups=METER_GROUPS,
                keepalive_s=2,
            )
        for agent in stack.agents.values():
            await agent.start()
        await wait_for(lambda: _ready(stack), 15.0)
        yield stack
    finally:
        await stop_stack(stack)
        for meter in stack.meters.values():
            await meter.stop()


async def ucm_on_pty(
    sgd: SGDEmulator,
    name: str,
    broker_url: str,
    clock: ScaledClock,
    tasks: list[asyncio.Task[Any]],
    *,
    poll_s: float = 0.1,
) -> UCMAgent:
    """Serve ``sgd`` on a new pty (its task added to ``tasks``) and make the UCM agent
    ``name`` for it (groups :data:`HEATER_GROUPS`; not started)."""
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    tasks.append(
        asyncio.create_task(run_sgd_emulator(pty=True, emulator=sgd, on_ready=ready.set_result))
    )
    path = await asyncio.wait_for(ready, 5.0)
    return UCMAgent(
        name,
        broker_url,
        serial_port=path,
        poll_s=poll_s,
        clock=clock,
        keepalive_s=2,
        timing=FAST,
        groups=HEATER_GROUPS,
    )


async def stop_stack(stack: StackParts) -> None:
    """Stop the agents, the EMS, the stack's tasks and its battery emulators (each step
    bounded, failures swallowed: a teardown must finish)."""
    for agent in stack.agents.values():
        with contextlib.suppress(Exception):
            await asyncio.wait_for(agent.stop(), 10.0)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(stack.ems.stop(), 10.0)
    for task in stack.tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    for emulator in stack.batteries.values():
        await emulator.stop()


class CallLog:
    """Records every ``EMS.call`` (target, args, sent_by) and passes it on unchanged."""

    def __init__(self, ems: EMS) -> None:
        self.calls: list[tuple[str, list[Any], str | None]] = []
        original = ems.call

        async def call(target: Any, interface: str, method: str, args: Any, **kw: Any) -> Any:
            self.calls.append((str(target), list(args), kw.get("sent_by")))
            return await original(target, interface, method, args, **kw)

        ems.call = call  # type: ignore[method-assign]

    @property
    def targets(self) -> list[str]:
        """The targets called, in order."""
        return [target for target, _, _ in self.calls]

    def commands(self, target: str) -> list[list[list[Any]]]:
        """The sequences sent to ``target``, in order."""
        return [args[0] for t, args, _ in self.calls if t == target]

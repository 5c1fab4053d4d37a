"""The BIS (Battery Information System): ``edu.pdx.powerlab.demo`` ⇄ SunSpec Modbus.

The BIS finds the battery's models by scanning the SunSpec chain (so it drives any
SunSpec battery with models 802 and 124, not only SEF's emulator), turns each event of
an ``EnergyMethod`` sequence into model-124 control writes, and turns the battery's
registers into ``Telemetry``: on every change, and every ``poll_s``.

Control writes (model 124, "power window", rates in % of ``WChaMax`` / ``WDisChaRteMax``):

==============  =========  ==========  ===========
event           InWRte     OutWRte     StorCtl_Mod
==============  =========  ==========  ===========
charge x kW     100·x/Wc   −100·x/Wc   3
discharge x kW  −100·x/Wd  100·x/Wd    3
idle / endshed  0          0           3
==============  =========  ==========  ===========

(``shed`` discharges at its rate; see :mod:`sef.agents._battery`.) Every control write
also sets ``InOutWRte_RvrtTms`` so that, should the BIS die, the battery returns to idle
by itself when the event would have ended (plus a margin).

Faults: a Modbus timeout or refused connection marks telemetry ``Comm_Fault`` at the
next poll; the BIS reconnects with backoff (``poll_s`` doubling to ``4·poll_s``) and, once
the battery answers again, re-applies the running event and resumes telemetry.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from sef.interface import DEMO_INTERFACE, EnergyEvent
from sef.protocols.sunspec import SunSpecClient, SunSpecCommError, SunSpecError

__all__ = ["BISAgent"]

log = logging.getLogger("sef.agent.bis")

STATE_NAMES = {1: "DISCONNECTED", 2: "INITIALIZING", 3: "CONNECTED", 4: "STANDBY",
               5: "SOC_PROTECTION", 6: "SUSPENDING", 99: "FAULT"}
REVERT_MARGIN_S = 60.0
"""Clock seconds after an event's planned end at which the battery reverts by itself."""


class BISAgent(DERAgent):
    """Battery agent over SunSpec Modbus TCP.

    Args:
        agent_id: id on the bus.
        broker: broker URL.
        modbus_host: battery (or emulator) address.
        modbus_port: Modbus TCP port.
        unit: Modbus unit id.
        poll_s: time between polls, **real** seconds (Modbus is real I/O, whatever the
            clock's speed); also the telemetry period.
    """

    interfaces = (DEMO_INTERFACE,)

    def __init__(self, agent_id: str, broker: BrokerURL | str, *, modbus_host: str,
                 modbus_port: int, unit: int = 1, poll_s: float = 1.0,
                 clock: Clock | None = None, groups: Sequence[str] = (),
                 keepalive_s: int = 10) -> None:
        super().__init__(agent_id, broker, clock=clock, groups=groups, keepalive_s=keepalive_s,
                         about=AboutInfo(app_name="SEF BIS", model_number="sef-bis",
                                         description="battery agent over SunSpec Modbus TCP"))
        self.modbus = SunSpecClient(modbus_host, modbus_port, unit=unit,
                                    timeout_s=min(1.0, poll_s), retries=0)
        self.poll_s = poll_s
        self.requested_kw = 0.0
        self.setpoint_kw = 0.0
        self.reading: BatteryReading | None = None
        self.comm_fault = False
        self.fault_text = ""
        self.writes = 0
        self._max_charge_kw: float | None = None
        self._max_discharge_kw: float | None = None
        self._rated_energy_kwh = 0.0
        self._dirty = True  # the running event's controls still need writing
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        self.set_property(DEMO_INTERFACE, "AssetName", self.about.fields(self.agent_id)
                          ["DeviceName"])
        self._publish()
        self._task = asyncio.create_task(self._poll_loop(), name=f"bis-poll:{self.agent_id}")

    async def on_stop(self) -> None:
        await self.sequencer.cancel()
        if self._task is not None:
            self._task.cancel()
        self.modbus.close()


    # -- control ------------------------------------------------------------------
    async def _apply(self, event: EnergyEvent) -> None:
        self.requested_kw = requested_power_kw(event)
        self._dirty = True
        if not self.comm_fault and self._max_charge_kw is not None:
            try:
                await self._write_controls()
            except SunSpecError as exc:
                self._lost(exc)
        self._publish()
        self._wake.set()

    async def _write_controls(self) -> None:
        """Write the running event's setpoint as model-124 controls (clipped, never raw)."""
        assert self._max_charge_kw is not None and self._max_discharge_kw is not None
        event = self.sequencer.current
        self.setpoint_kw = clip_power_kw(self.requested_kw, self._max_charge_kw,
                                         self._max_discharge_kw)
        if self.setpoint_kw != self.requested_kw:
            log.warning("%s: %s at %.0f kW clipped to %.1f kW (battery rating)", self.agent_id,
                        event.cmd.value, abs(self.requested_kw), abs(self.setpoint_kw))
        if self.setpoint_kw >= 0:
            in_pct = 100.0 * self.setpoint_kw / self._max_charge_kw
            out_pct = -in_pct
        else:
            out_pct = 100.0 * -self.setpoint_kw / self._max_discharge_kw
            in_pct = -out_pct
        ends = self.sequencer.current_ends
        revert_s = 0 if ends is None else int(max(0.0, ends - self.clock.now()) + REVERT_MARGIN_S)
        async with self._lock:
            # OutWRte, InWRte, InOutWRte_WinTms, InOutWRte_RvrtTms are adjacent: one write
            await self.modbus.write_points(124, {
                "OutWRte": round(out_pct, 2), "InWRte": round(in_pct, 2),
                "InOutWRte_WinTms": 0, "InOutWRte_RvrtTms": min(revert_s, 65535)})
            await self.modbus.write_point(124, "StorCtl_Mod", 3)
        self.writes += 1
        self._dirty = False

    # -- polling ------------------------------------------------------------------
    async def _connect(self) -> None:
        async with self._lock:
            await self.modbus.connect()
            await self.modbus.scan()
            for model_id in (802, 124):
                if not self.modbus.has_model(model_id):
                    raise SunSpecError(f"battery has no SunSpec model {model_id}")
            ratings = await self.modbus.read_points(802, ["WChaRteMax", "WDisChaRteMax",
                                                          "WHRtg"])
            w_cha = await self.modbus.read_point(124, "WChaMax")
        self._max_charge_kw = _kw(w_cha) or _kw(ratings["WChaRteMax"])
        self._max_discharge_kw = _kw(ratings["WDisChaRteMax"]) or self._max_charge_kw
        self._rated_energy_kwh = (_kw(ratings["WHRtg"]) or 0.0)
        log.info("%s: battery found (%.1f kW charge, %.1f kW discharge, %.1f kWh)",
                 self.agent_id, self._max_charge_kw, self._max_discharge_kw,
                 self._rated_energy_kwh)

    async def _read(self) -> BatteryReading:
        async with self._lock:
            bat = await self.modbus.read_points(802, ["SoC", "V", "A", "W", "State", "Evt1"])
            energy_wh = (await self.modbus.read_point(713, "WHAvail")
                         if self.modbus.has_model(713) else None)
        soc = float(bat["SoC"] or 0.0)
        energy = (float(energy_wh) / 1000.0 if isinstance(energy_wh, int | float)
                  else soc / 100.0 * self._rated_energy_kwh)
        state = bat["State"]
        return BatteryReading(
            soc_pct=soc, energy_kwh=energy, rated_energy_kwh=self._rated_energy_kwh,
            rated_power_kw=self._max_charge_kw or 0.0, dc_volts=float(bat["V"] or 0.0),
            # SunSpec 802 counts discharge as positive; SEF telemetry counts charge as +.
            dc_current_a=-float(bat["A"] or 0.0), power_kw=-float(bat["W"] or 0.0) / 1000,
            state=STATE_NAMES.get(state, str(state)) if isinstance(state, int) else "UNKNOWN",
            alarms=int(bat["Evt1"] or 0))

    async def _poll_loop(self) -> None:
        backoff = self.poll_s
        while True:
            try:
                if self._max_charge_kw is None or not self.modbus.connected:
                    await self._connect()
                if self._dirty:
                    await self._write_controls()
                self.reading = await self._read()
                if self.comm_fault:
                    log.info("%s: battery reachable again", self.agent_id)
                self.comm_fault, self.fault_text, backoff = False, "", self.poll_s
                self._publish()
                delay = self.poll_s
            except SunSpecError as exc:
                self._lost(exc)
                delay, backoff = backoff, min(backoff * 2, 4 * self.poll_s)
            except Exception as exc:  # keep polling whatever the device does
                log.exception("%s: unexpected error while polling", self.agent_id)
                self._lost(exc)
                delay = backoff
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def _lost(self, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"
        if not self.comm_fault or text != self.fault_text:
            log.warning("%s: battery communication fault: %s", self.agent_id, text)
        self.comm_fault = True
        self.fault_text = text if isinstance(exc, SunSpecCommError) else f"device: {text}"
        self._dirty = True  # re-apply the running event once the battery answers
        self._max_charge_kw = None  # rescan after reconnecting: it may be another battery
        self.modbus.close()
        self._publish()

    def _publish(self) -> None:
        self.set_property(DEMO_INTERFACE, "Telemetry", battery_telemetry(
            self.clock.now(), self.reading, self.sequencer.current, self.setpoint_kw,
            self.requested_kw, comm_fault=self.comm_fault, fault_text=self.fault_text))


def _kw(watts: object) -> float | None:
    return float(watts) / 1000.0 if isinstance(watts, int | float) and watts > 0 else None

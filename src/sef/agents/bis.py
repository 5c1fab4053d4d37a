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
by itself when the event would have ended (plus a margin). Each poll reads the controls
back; if another Modbus client changed them, the BIS re-asserts the running event and
reports ``Control_Mismatch``.

Nameplate (read at each connection): ``Charge_Rate_kW`` = 124 ``WChaMax`` (else 802
``WChaRteMax``), ``Discharge_Rate_kW`` = 802 ``WDisChaRteMax``, ``Capacity_kWh`` = 802
``WHRtg``, ``SOC_Min_pct`` / ``SOC_Max_pct`` = 802 ``SoCMin`` / ``SoCMax`` narrowed by the
reserve settings (802 ``SoCRsvMin`` / ``SocRsvMax``, 124 ``MinRsvPct``); the efficiencies
are configuration (no SunSpec battery model carries them), by default
:data:`~sef.agents._nameplate.DEFAULT_EFFICIENCY_PCT`.

Faults (:class:`~sef.agents.DERAgent`): a Modbus timeout or refused connection marks
telemetry ``Comm_Fault`` at the next poll; the BIS reconnects with backoff (``poll_s``
doubling to ``4·poll_s``), rescans the chain and re-applies the running event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import ClassVar

from sef.agents._battery import BatteryReading, battery_telemetry, clip_power_kw, requested_power_kw
from sef.agents._declare import AboutInfo
from sef.agents._der import DERAgent
from sef.agents._device import DeviceAdapter, DeviceStatus
from sef.agents._host_loss import DEFAULT_GRACE_S
from sef.agents._nameplate import DEFAULT_EFFICIENCY_PCT, battery_nameplate
from sef.bus import BrokerURL
from sef.clock import Clock
from sef.interface import EnergyEvent, Variant
from sef.protocols.sunspec import PointValue, SunSpecClient, SunSpecError
from sef.security import Security

__all__ = ["BISAgent", "SunSpecBattery"]

log = logging.getLogger("sef.agent.bis")

STATE_NAMES = {
    1: "DISCONNECTED",
    2: "INITIALIZING",
    3: "CONNECTED",
    4: "STANDBY",
    5: "SOC_PROTECTION",
    6: "SUSPENDING",
    99: "FAULT",
}
REVERT_MARGIN_S = 60.0
"""Clock seconds after an event's planned end at which the battery reverts by itself."""
MAX_REVERT_S = 65534
"""Longest revert time a uint16 register holds (s); 0xFFFF means "not implemented"."""
OPEN_REVERT_S = 20.0
"""Real seconds after the last write at which the battery ends an open-ended event by
itself; the BIS rewrites the window every quarter of it while it is healthy."""
_CONTROLS = ("OutWRte", "InWRte", "StorCtl_Mod")
_RATINGS = ["WChaRteMax", "WDisChaRteMax", "WHRtg", "SoCMax", "SoCMin", "SocRsvMax", "SoCRsvMin"]
"""Model-802 points read at connection (ratings, SOC limits and reserves)."""
_WINDOW_SF = "InOutWRte_SF"
"""The scale factor of model 124's ``OutWRte`` and ``InWRte``."""
PREFETCH_FRESH_S = 0.5
"""Longest real time from a :meth:`SunSpecBattery.prepare` read to the write using it, s."""


class SunSpecBattery(DeviceAdapter):
    """A SunSpec battery (models 802 and 124, optionally 713) over Modbus TCP."""

    comm_errors: ClassVar[tuple[type[BaseException], ...]] = (SunSpecError, OSError, TimeoutError)

    def __init__(
        self,
        host: str,
        port: int,
        *,
        unit: int = 1,
        timeout_s: float = 1.0,
        open_revert_s: float = OPEN_REVERT_S,
        charge_efficiency_pct: float = DEFAULT_EFFICIENCY_PCT,
        discharge_efficiency_pct: float = DEFAULT_EFFICIENCY_PCT,
    ) -> None:
        self.charge_efficiency_pct = charge_efficiency_pct
        self.discharge_efficiency_pct = discharge_efficiency_pct
        self.soc_limits_pct: tuple[float, float] | None = None  # read at connection
        self.modbus = SunSpecClient(host, port, unit=unit, timeout_s=timeout_s, retries=0)
        self.open_revert_s = open_revert_s
        self._armed_at = 0.0  # loop time of the last window write, real s
        self.setpoint_kw = 0.0
        self.reading: BatteryReading | None = None
        self.writes = 0
        self.max_charge_kw = self.max_discharge_kw = self.rated_energy_kwh = 0.0
        self._written: dict[str, float] = {}
        self._controls: dict[str, float] = {}
        self._lock = asyncio.Lock()  # one Modbus request at a time (apply runs beside read)
        self._prefetch: tuple[float, asyncio.Task[dict[str, PointValue]]] | None = None

    async def connect(self) -> None:
        """Connect, scan the SunSpec chain (models 802 and 124 required) and read the ratings."""
        async with self._lock:
            await self.modbus.connect()
            await self.modbus.scan()
            for model_id in (802, 124):
                if not self.modbus.has_model(model_id):
                    raise SunSpecError(f"battery has no SunSpec model {model_id}")
            ratings = await self.modbus.read_points(802, _RATINGS)
            limits = await self.modbus.read_points(124, ["WChaMax", "MinRsvPct"])
        w_cha = limits["WChaMax"]
        self.max_charge_kw = _kw(w_cha) or _kw(ratings["WChaRteMax"]) or 0.0
        self.max_discharge_kw = _kw(ratings["WDisChaRteMax"]) or self.max_charge_kw
        self.rated_energy_kwh = _kw(ratings["WHRtg"]) or 0.0
        self.soc_limits_pct = _soc_limits_pct(ratings, limits["MinRsvPct"])
        log.info(
            "%s: battery found (%.1f kW charge, %.1f kW discharge, %.1f kWh)",
            self.host.agent_id,
            self.max_charge_kw,
            self.max_discharge_kw,
            self.rated_energy_kwh,
        )

    async def apply(self, event: EnergyEvent, left_s: float | None) -> None:
        """Write ``event``'s setpoint as model-124 controls (clipped, never raw)."""
        requested = requested_power_kw(event)
        setpoint = clip_power_kw(requested, self.max_charge_kw, self.max_discharge_kw)
        if setpoint != requested:
            log.warning(
                "%s: %s at %.0f kW clipped to %.1f kW (battery rating)",
                self.host.agent_id,
                event.cmd.value,
                abs(requested),
                abs(setpoint),
            )
        in_pct = (
            100.0 * setpoint / self.max_charge_kw
            if setpoint >= 0
            else -100.0 * -setpoint / self.max_discharge_kw
        )
        written = {"OutWRte": round(-in_pct, 2), "InWRte": round(in_pct, 2), "StorCtl_Mod": 3}
        async with self._lock:
            await self._write_window(written, left_s)
            await self.modbus.write_point(124, "StorCtl_Mod", 3)
        self.setpoint_kw, self._written = setpoint, written
        self.writes += 1

    def nameplate(self) -> dict[str, Variant] | None:
        """Ratings read at connection (kW, kWh, SOC %), efficiencies from configuration (%)."""
        if self.soc_limits_pct is None or self.rated_energy_kwh <= 0 or self.max_charge_kw <= 0:
            return None  # not connected yet, or a battery that reports no rating
        soc_min, soc_max = self.soc_limits_pct
        return battery_nameplate(
            charge_kw=self.max_charge_kw,
            discharge_kw=self.max_discharge_kw,
            capacity_kwh=self.rated_energy_kwh,
            soc_min_pct=soc_min,
            soc_max_pct=soc_max,
            charge_efficiency_pct=self.charge_efficiency_pct,
            discharge_efficiency_pct=self.discharge_efficiency_pct,
        )

    def prepare(self) -> bool:
        """Read the power window's scale factor while the arriving command is checked
        (the read the write needs first; a read only, so a refused command changes
        nothing). Returns whether a read started (not when one started under
        :data:`PREFETCH_FRESH_S` ago is still unused, or the link is down)."""
        now = asyncio.get_running_loop().time()
        if not self.modbus.connected:
            return False
        if self._prefetch is not None and now - self._prefetch[0] <= PREFETCH_FRESH_S:
            return False
        task = asyncio.ensure_future(self.modbus.read_points(124, [_WINDOW_SF]))
        task.add_done_callback(_retrieve)
        self._prefetch = (now, task)
        return True

    async def _prefetched_scale(self) -> dict[str, PointValue] | None:
        """The scale factor read by :meth:`prepare` for this write, if fresh and read
        (else ``None``: the write reads it itself)."""
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is None:
            return None
        started, task = prefetch
        if asyncio.get_running_loop().time() - started > PREFETCH_FRESH_S:
            return None
        try:
            return await task
        except self.comm_errors:
            return None  # the write's own read reports the fault

    async def rearm(self, event: EnergyEvent, left_s: float | None) -> None:
        """Rewrite an open-ended event's window (restarting its revert timer) every quarter
        of ``open_revert_s``; a timed event's revert is its planned end and needs none."""
        now = asyncio.get_running_loop().time()
        if left_s is None and self._written and now - self._armed_at >= self.open_revert_s / 4:
            async with self._lock:
                await self._write_window(self._written, None)

    async def _write_window(self, written: dict[str, float], left_s: float | None) -> None:
        """Write the power window with its revert time (clock s): the event's end plus a
        margin, or ``open_revert_s`` for an open-ended event."""
        if left_s is None:
            revert_s = int(self.host.clock.to_clock(self.open_revert_s)) or 1
        else:
            revert_s = int(left_s + REVERT_MARGIN_S)
        # OutWRte, InWRte, InOutWRte_WinTms, InOutWRte_RvrtTms are adjacent: one write
        await self.modbus.write_points(
            124,
            {
                "OutWRte": written["OutWRte"],
                "InWRte": written["InWRte"],
                "InOutWRte_WinTms": 0,
                "InOutWRte_RvrtTms": min(revert_s, MAX_REVERT_S),
            },
            scale_factors=await self._prefetched_scale(),
        )
        self._armed_at = asyncio.get_running_loop().time()

    async def read(self) -> None:
        """Read model 802 (and 713's stored energy), and model 124's controls for readback."""
        async with self._lock:
            bat = await self.modbus.read_points(802, ["SoC", "V", "A", "W", "State", "Evt1"])
            controls = await self.modbus.read_points(124, list(_CONTROLS))
            energy_wh = (
                await self.modbus.read_point(713, "WHAvail") if self.modbus.has_model(713) else None
            )
        self._controls = {k: float(v) for k, v in controls.items() if isinstance(v, int | float)}
        soc = float(bat["SoC"] or 0.0)
        state = bat["State"]
        self.reading = BatteryReading(
            soc_pct=soc,
            rated_energy_kwh=self.rated_energy_kwh,
            energy_kwh=(
                float(energy_wh) / 1000.0
                if isinstance(energy_wh, int | float)
                else soc / 100.0 * self.rated_energy_kwh
            ),
            rated_power_kw=self.max_charge_kw,
            dc_volts=float(bat["V"] or 0.0),
            # SunSpec 802 counts discharge as positive; SEF telemetry counts charge as +.
            dc_current_a=-float(bat["A"] or 0.0),
            power_kw=-float(bat["W"] or 0.0) / 1000,
            state=STATE_NAMES.get(state, str(state)) if isinstance(state, int) else "UNKNOWN",
            alarms=int(bat["Evt1"] or 0),
        )

    def readback(self) -> str | None:
        """Model-124 controls that differ from the last write (``OutWRte 100.0 (wrote -50.0)``)."""
        differ = [
            f"{name} {self._controls.get(name)} (wrote {value})"
            for name, value in self._written.items()
            if abs(self._controls.get(name, float("nan")) - value) > 0.011
        ]
        return ", ".join(differ) or None

    async def close(self) -> None:
        """Close the Modbus connection; forget what was written (nothing to read back)."""
        self.modbus.close()
        self._written = {}  # nothing to read back until the next write
        self._prefetch = None  # read on the closed link

    def telemetry(self, status: DeviceStatus) -> dict[str, Variant]:
        """Battery keys (:func:`~sef.agents._battery.battery_telemetry`): kW, kWh, %, V, A."""
        return battery_telemetry(
            self.reading,
            self.host.current_event,
            self.setpoint_kw,
            comm_fault=bool(status.fault),
            fault_text=status.fault,
        )


class BISAgent(DERAgent[SunSpecBattery]):
    """Battery agent over SunSpec Modbus TCP.

    Args:
        agent_id: id on the bus.
        broker: broker URL.
        modbus_host: battery (or emulator) address.
        modbus_port: Modbus TCP port.
        unit: Modbus unit id.
        poll_s: time between polls, **real** seconds (Modbus is real I/O, whatever the
            clock's speed); also the telemetry period.
        open_revert_s: real seconds after which the battery ends an open-ended event by
            itself unless the BIS, healthy, re-arms it.
        host_loss_grace_s: real seconds without an online EMS before the host-loss
            policy applies (:mod:`sef.agents._host_loss`).
        charge_efficiency_pct, discharge_efficiency_pct: one-way efficiencies published
            in the ``Nameplate``, % (SunSpec carries none; default 97.5 %).
    """

    def __init__(
        self,
        agent_id: str,
        broker: BrokerURL | str,
        *,
        modbus_host: str,
        modbus_port: int,
        unit: int = 1,
        poll_s: float = 1.0,
        open_revert_s: float = OPEN_REVERT_S,
        host_loss_grace_s: float = DEFAULT_GRACE_S,
        charge_efficiency_pct: float = DEFAULT_EFFICIENCY_PCT,
        discharge_efficiency_pct: float = DEFAULT_EFFICIENCY_PCT,
        clock: Clock | None = None,
        groups: Sequence[str] = (),
        keepalive_s: int = 10,
        security: Security | None = None,
        sign_telemetry: bool = False,
    ) -> None:
        battery = SunSpecBattery(
            modbus_host,
            modbus_port,
            unit=unit,
            timeout_s=min(1.0, poll_s),
            open_revert_s=open_revert_s,
            charge_efficiency_pct=charge_efficiency_pct,
            discharge_efficiency_pct=discharge_efficiency_pct,
        )
        super().__init__(
            agent_id,
            broker,
            battery,
            poll_s=poll_s,
            host_loss_grace_s=host_loss_grace_s,
            clock=clock,
            groups=groups,
            keepalive_s=keepalive_s,
            security=security,
            sign_telemetry=sign_telemetry,
            about=AboutInfo(
                app_name="SEF BIS",
                model_number="sef-bis",
                description="battery agent over SunSpec Modbus TCP",
            ),
        )


def _kw(watts: object) -> float | None:
    return float(watts) / 1000.0 if isinstance(watts, int | float) and watts > 0 else None


def _soc_limits_pct(
    ratings: Mapping[str, PointValue], min_reserve: PointValue
) -> tuple[float, float]:
    """(lowest, highest) SOC the battery allows, %: 802 ``SoCMin`` / ``SoCMax`` (0 / 100
    when not implemented) narrowed by the reserves 802 ``SoCRsvMin`` / ``SocRsvMax`` and
    124 ``MinRsvPct`` when they are set (and leave a window)."""
    limits = _window([ratings["SoCMin"]], [ratings["SoCMax"]]) or (0.0, 100.0)
    reserves = [ratings["SoCRsvMin"], min_reserve], [ratings["SocRsvMax"]]
    narrowed = _window([limits[0], *reserves[0]], [limits[1], *reserves[1]])
    return narrowed or limits


def _window(lows: list[PointValue], highs: list[PointValue]) -> tuple[float, float] | None:
    """(max of the lows, min of the highs), % (values outside 0..100 ignored), if low < high."""
    low = max([0.0, *(float(v) for v in lows if isinstance(v, int | float) and 0 <= v < 100)])
    high = min([100.0, *(float(v) for v in highs if isinstance(v, int | float) and 0 < v <= 100)])
    return (low, high) if low < high else None


def _retrieve(task: asyncio.Task[dict[str, PointValue]]) -> None:
    """Take a prefetch's outcome, so that a failed read nobody waited for is not reported
    as never retrieved (a write that uses it sees the failure itself)."""
    if not task.cancelled():
        task.exception()

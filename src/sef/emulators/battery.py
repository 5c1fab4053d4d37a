"""Battery emulator: the battery model behind a pymodbus TCP server with a SunSpec map.

Chain at protocol address 40000: ``SunS``, model 1 (common), 802 (battery base),
124 (basic storage controls), 713 (storage capacity), end marker ``0xFFFF 0``.
The model advances on the clock every ``tick_s`` and before every read or write, so
reads are fresh and a control takes effect at the instant it is written. Register
map, control semantics and sign conventions: ``docs/battery.md``.

Control (model 124, the Fronius-style "power window")::

    upper_W = WChaMax * (InWRte/100 if StorCtl_Mod bit0 else 1)
    lower_W = -WDisChaRteMax * (OutWRte/100 if StorCtl_Mod bit1 else 1)
    setpoint_W (+ = charge) = 0 clipped into [lower_W, upper_W]  (idle if lower > upper)

so "charge at 4 kW" is ``InWRte=50, OutWRte=-50, StorCtl_Mod=3`` (WChaMax = 8000 W).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from typing import Any

import sef
from sef.clock import Clock, default_clock
from sef.emulators._sunspec_server import SunSpecServer, Written
from sef.models.battery import BatteryModel, BatteryParams
from sef.protocols.sunspec import SunSpecImage, choose_sf

__all__ = ["MODEL_IDS", "BatteryEmulator", "run_battery_emulator"]

#: Models served, in chain order.
MODEL_IDS: tuple[int, ...] = (1, 802, 124, 713)

# 802 ChaSt / State values, 802 Evt1 bits (pysunspec2 model_802.json symbols).
CHAST_OFF, CHAST_EMPTY, CHAST_DISCHARGING, CHAST_CHARGING, CHAST_FULL, CHAST_HOLDING = range(1, 7)
STATE_DISCONNECTED, STATE_CONNECTED, STATE_SOC_PROTECTION, STATE_FAULT = 1, 3, 5, 99
EVT_UNDER_SOC_MIN_WARNING, EVT_OVER_SOC_MAX_WARNING = 1 << 14, 1 << 16
EVT_OTHER_ALARM, EVT_CONFIGURATION_WARNING = 1 << 25, 1 << 29
_IDLE_KW = 1e-6
_TELEMETRY_S = 1.0  # clock s averaged by the reported powers


class BatteryEmulator(SunSpecServer):
    """One emulated SunSpec battery (model + register image + Modbus TCP server,
    :class:`~sef.emulators._sunspec_server.SunSpecServer`).

    Parameters:
        host: address to bind.
        port: TCP port to bind (0 picks a free port; see :attr:`address`).
        unit: Modbus unit id served.
        clock: time source (default :func:`sef.clock.default_clock`).
        params: battery parameters.
        soc: initial state of charge (fraction).
        tick_s: clock seconds between background steps (at least 20 ms real).
        serial: model 1 serial number (default ``SEF-BAT-<port>-<unit>``).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        unit: int = 1,
        clock: Clock | None = None,
        params: BatteryParams | None = None,
        soc: float = 0.5,
        tick_s: float = 1.0,
        serial: str | None = None,
    ) -> None:
        super().__init__(
            SunSpecImage(MODEL_IDS), host, port, unit, clock or default_clock(), tick_s
        )
        self.params = params or BatteryParams()
        self.model = BatteryModel(self.params, n=1, soc=soc)
        self.connected = True
        self.fault = False
        self.latched_events = 0
        self.discharged_kwh = 0.0
        self._last = self.clock.monotonic()
        self._rate_written_at = self._last
        self._init_image(serial or f"SEF-BAT-{port}-{unit}")
        self._refresh()

    # -- image ----------------------------------------------------------------------

    def _init_image(self, serial: str) -> None:
        p, img = self.params, self.image
        rated_w = p.rated_power_kw * 1000.0
        md = f"SEF-BAT-{p.rated_power_kw:g}kW-{p.capacity_kwh:g}kWh"
        img.set_many(1, {"Mn": "SEF", "Md": md, "Opt": "emulator", "Vr": sef.__version__,
                         "SN": serial, "DA": self.unit})  # fmt: skip
        amax = rated_w / p.nominal_volts
        img.set_many(802, {
            "AHRtg_SF": choose_sf(p.rated_ah),
            "WHRtg_SF": choose_sf(p.capacity_kwh * 1000, min_sf=0),
            "WChaDisChaMax_SF": choose_sf(rated_w, min_sf=0), "DisChaRte_SF": -2, "SoC_SF": -2,
            "DoD_SF": -2, "SoH_SF": -2, "V_SF": choose_sf(p.max_volts * 1.1, min_sf=-2),
            "CellV_SF": -3, "A_SF": choose_sf(2 * rated_w / p.min_volts, signed=True, min_sf=-2),
            "AMax_SF": choose_sf(amax, min_sf=-2),
            "W_SF": choose_sf(rated_w * 1.1, signed=True, min_sf=0),
        })  # fmt: skip
        img.set_many(802, {
            "AHRtg": p.rated_ah, "WHRtg": p.capacity_kwh * 1000, "WChaRteMax": rated_w,
            "WDisChaRteMax": rated_w, "DisChaRte": 100 * p.standby_kw * 24 / p.capacity_kwh,
            "SoCMax": 100 * p.soc_max, "SoCMin": 100 * p.soc_min, "SocRsvMax": 100 * p.soc_max,
            "SoCRsvMin": 100 * p.soc_min, "SoH": 100.0, "LocRemCtl": 0, "Hb": 0, "CtrlHb": 0,
            "AlmRst": 0, "Typ": 4, "Evt2": 0, "EvtVnd1": 0, "EvtVnd2": 0,
            "VMax": p.max_volts, "VMin": p.min_volts, "AChaMax": amax, "ADisChaMax": amax,
            "ReqInvState": 0, "SetOp": 1, "SetInvState": 3,
        })  # fmt: skip
        img.set_many(124, {
            "WChaMax_SF": choose_sf(rated_w, min_sf=0), "WChaDisChaGra_SF": 0, "MinRsvPct_SF": -2,
            "ChaState_SF": -2, "StorAval_SF": choose_sf(p.rated_ah),
            "InBatV_SF": img.get(802, "V_SF"),
            "InOutWRte_SF": -2, "WChaMax": rated_w, "WChaGra": 100, "WDisChaGra": 100,
            "StorCtl_Mod": 0, "MinRsvPct": 100 * p.soc_min, "OutWRte": 100.0, "InWRte": 100.0,
            "InOutWRte_WinTms": 0, "InOutWRte_RvrtTms": 0, "InOutWRte_RmpTms": 0, "ChaGriSet": 1,
        })  # fmt: skip
        img.set_many(713, {"WH_SF": choose_sf(p.capacity_kwh * 1000, min_sf=0), "Pct_SF": -2,
                           "WHRtg": p.capacity_kwh * 1000, "SoH": 100.0})  # fmt: skip

    def _num(self, model_id: int, name: str) -> float:
        value = self.image.get(model_id, name)
        return float(value) if isinstance(value, int | float) else 0.0

    def window_w(self) -> tuple[float, float]:
        """The (lower, upper) AC power window set by model 124 (W, + = charge)."""
        mode = int(self._num(124, "StorCtl_Mod"))
        upper = self._num(124, "WChaMax") * (self._num(124, "InWRte") / 100 if mode & 1 else 1.0)
        lower = -self._num(802, "WDisChaRteMax") * (
            self._num(124, "OutWRte") / 100 if mode & 2 else 1.0
        )
        return lower, upper

    def setpoint_w(self) -> float:
        """AC power the controls ask for now (W, + = charge), before model limits."""
        if not self.connected or self.fault:
            return 0.0
        lower, upper = self.window_w()
        return 0.0 if lower > upper else min(max(0.0, lower), upper)

    def _soc_window(self) -> tuple[float, float]:
        lo = max(self._num(802, "SoCRsvMin"), self._num(124, "MinRsvPct")) / 100
        return lo, self._num(802, "SocRsvMax") / 100

    def _refresh(self) -> None:
        """Write the live state of the model into the image."""
        m, p, img = self.model, self.params, self.image
        soc = float(m.soc[0])
        dc_kw = float(m.dc_power_kw[0])
        volts, amps = float(m.dc_volts[0]), float(m.dc_current_a[0])
        lo, hi = self._soc_window()
        lo, hi = max(lo, p.soc_min), min(hi, p.soc_max)
        at_min, at_max = soc <= lo + 1e-6, soc >= hi - 1e-6
        want = self.setpoint_w()
        if not self.connected or self.fault:
            chast = CHAST_OFF
        elif dc_kw > _IDLE_KW:
            chast = CHAST_CHARGING
        elif dc_kw < -(p.standby_kw + _IDLE_KW):
            chast = CHAST_DISCHARGING
        else:
            chast = CHAST_EMPTY if at_min else CHAST_FULL if at_max else CHAST_HOLDING
        if self.fault:
            state = STATE_FAULT
        elif not self.connected:
            state = STATE_DISCONNECTED
        elif (at_min and want < 0) or (at_max and want > 0):
            state = STATE_SOC_PROTECTION
        else:
            state = STATE_CONNECTED
        events = self.latched_events | (EVT_OTHER_ALARM if self.fault else 0)
        events |= EVT_UNDER_SOC_MIN_WARNING if at_min else 0
        events |= EVT_OVER_SOC_MAX_WARNING if at_max else 0
        lower, upper = self.window_w()
        events |= EVT_CONFIGURATION_WARNING if lower > upper else 0
        usable_ah = float(m.available_discharge_kwh[0]) * 1000 / p.nominal_volts
        img.set_many(802, {
            "SoC": 100 * soc, "DoD": 100 * (1 - soc),
            "NCyc": int(self.discharged_kwh / p.capacity_kwh), "ChaSt": chast, "State": state,
            "Evt1": events, "V": volts, "A": -amps, "W": -1000 * dc_kw,
            "CellVMax": volts / p.cells_in_series, "CellVMin": volts / p.cells_in_series,
            "CellVAvg": volts / p.cells_in_series,
        })  # fmt: skip
        img.set_many(124, {"ChaState": 100 * soc, "StorAval": usable_ah, "InBatV": volts,
                           "ChaSt": chast})  # fmt: skip
        sta = 2 if self.fault else 1 if (at_min or at_max) else 0
        img.set_many(713, {"WHAvail": float(m.energy_kwh[0]) * 1000, "SoC": 100 * soc, "Sta": sta})

    # -- time -----------------------------------------------------------------------

    def advance(self) -> None:
        """Step the model to the clock's present with the controls in force."""
        now = self.clock.monotonic()
        revert_s = self._num(124, "InOutWRte_RvrtTms")
        deadline = self._rate_written_at + revert_s
        mode = int(self._num(124, "StorCtl_Mod"))
        if revert_s > 0 and mode and self._last < deadline <= now:
            self._step(deadline - self._last)
            self.image.set(124, "StorCtl_Mod", 0)  # revert: rate limits off → idle
            self._last = deadline
        self._step(max(0.0, now - self._last))
        self._last = max(self._last, now)
        hb = self.image.get(802, "Hb")
        self.image.set(802, "Hb", ((hb if isinstance(hb, int) else 0) + 1) % 0xFFFF)
        self._refresh()

    def _step(self, dt_s: float) -> None:
        """Step ``dt_s`` clock s; the last second is a separate step so the reported
        powers are those at the end of the interval (e.g. 0 once full), not its mean."""
        lo, hi = self._soc_window()
        setpoint_kw = self.setpoint_w() / 1000
        for piece in (dt_s - _TELEMETRY_S, min(dt_s, _TELEMETRY_S)):
            if piece > 0:
                ac = self.model.step(setpoint_kw, piece, soc_min=lo, soc_max=hi)
                self.discharged_kwh += max(0.0, -float(ac[0])) * piece / 3600

    def set_fault(self, active: bool) -> None:
        """Inject (True) or clear (False) a battery fault: State FAULT, Evt1 OTHER_ALARM.

        The alarm stays latched in Evt1 until a client writes AlmRst after clearing.
        """
        self.advance()
        self.fault = active
        if active:
            self.latched_events |= EVT_OTHER_ALARM
        self._refresh()

    # -- writes (SunSpecServer) ------------------------------------------------------

    def valid(self, model_id: int, name: str, value: Any) -> bool:
        """Range checks of a written value (engineering units)."""
        return self._valid(model_id, name, value)

    def apply(self, new: Written) -> None:
        """React to an accepted write, then refresh the image."""
        self._apply(new)
        self._refresh()

    def _valid(self, model_id: int, name: str, v: float | int | str | None) -> bool:
        if not isinstance(v, int | float) or not math.isfinite(v):
            return False
        rated_w = self.params.rated_power_kw * 1000
        limits: dict[tuple[int, str], tuple[float, float]] = {
            (1, "DA"): (self.unit, self.unit),
            (802, "SocRsvMax"): (0, 100), (802, "SoCRsvMin"): (0, 100),
            (802, "SetOp"): (1, 2), (802, "SetInvState"): (1, 3),
            (124, "WChaMax"): (0, rated_w), (124, "StorCtl_Mod"): (0, 3),
            (124, "OutWRte"): (-100, 100), (124, "InWRte"): (-100, 100),
            (124, "MinRsvPct"): (0, 100), (124, "ChaGriSet"): (0, 1),
            (124, "WChaGra"): (0, 100), (124, "WDisChaGra"): (0, 100),
        }  # fmt: skip
        lo, hi = limits.get((model_id, name), (-math.inf, math.inf))
        return lo - 1e-9 <= v <= hi + 1e-9

    def _apply(self, new: dict[tuple[int, str], Any]) -> None:
        if (802, "SetOp") in new:
            self.connected = new[(802, "SetOp")] == 1
        if new.get((802, "AlmRst")):
            self.latched_events = EVT_OTHER_ALARM if self.fault else 0
        if any(k[0] == 124 for k in new):
            self._rate_written_at = self._last

    def on_bound(self, port: int) -> None:
        """Fix the serial number once the port is known; restart the time base."""
        if self.port == 0:
            self.image.set(1, "SN", f"SEF-BAT-{port}-{self.unit}")
        self._last = self._rate_written_at = self.clock.monotonic()


async def run_battery_emulator(
    host: str,
    port: int,
    unit: int = 1,
    clock: Clock | None = None,
    params: BatteryParams | None = None,
    ready: asyncio.Event | None = None,
    tick_s: float = 1.0,
    soc: float = 0.5,
    on_ready: Callable[[BatteryEmulator], None] | None = None,
) -> None:
    """Serve an emulated SunSpec battery until cancelled.

    ``ready`` is set (and ``on_ready(emulator)`` called; ``emulator.address`` holds the
    bound (host, port), useful with ``port=0``) once the server listens. Cancel the
    task to stop; the server is shut down cleanly.
    """
    emulator = BatteryEmulator(host, port, unit, clock, params, soc=soc, tick_s=tick_s)
    await emulator.start()
    try:
        if on_ready is not None:
            on_ready(emulator)
        if ready is not None:
            ready.set()
        await emulator.run()
    finally:
        with contextlib.suppress(Exception):
            await emulator.stop()

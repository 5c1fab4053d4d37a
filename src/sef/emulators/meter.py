"""Meter emulator: a SunSpec revenue meter on Modbus TCP measuring a feeder's net load.

Chain at protocol address 40000: ``SunS``, model 1 (common), model **201** (single phase)
or **203** (three-phase wye), end marker ``0xFFFF 0``. The map is read-only: a write is
refused with exception 2. Register map and sign conventions: ``docs/meter.md``.

What it measures is the sum of its sources (:mod:`._meter_sources`):

* a **base load** profile (a CSV ``time_s,kw`` or a scenario's base load), step-held on the
  clock's UTC time of day;
* the **devices on the feeder**, each reporting its AC power like a current transformer on
  its circuit (UDP datagrams on ``ct_port``; ``sef emulate battery/waterheater --ct``).

``W`` is the power at the instant of the read (+ = import: drawn from the grid).
``TotWhImp`` / ``TotWhExp`` integrate it exactly: between two events (a read, a tick, a CT
datagram) every source is constant, so the energy of each base-load step is added to the
import register when the net power is positive, to the export register otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

import sef
from sef.clock import Clock, default_clock
from sef.protocols.sunspec import SunSpecImage, choose_sf

from ._meter_sources import BaseLoad, CtReceiver

__all__ = ["METER_MODELS", "MeterEmulator", "run_meter_emulator"]

log = logging.getLogger("sef.emulator.meter")

METER_MODELS: dict[int, int] = {1: 201, 3: 203}
"""The SunSpec meter model served for each number of phases."""
DEFAULT_PHASE_V: dict[int, float] = {1: 240.0, 3: 120.0}
"""Phase voltage, V: a 240-V single-phase service; a 208Y/120-V three-phase service."""
TOT_WH_SF = 0
"""Energy registers count Wh."""
_ACC32 = 1 << 32
_MIN_REAL_TICK_S = 0.02
_MAX_GAP_S = 7 * 86400.0
"""A longer pause (a suspended process) is not integrated: the meter resumes from now."""


class MeterEmulator:
    """One emulated SunSpec meter (sources + register image + Modbus TCP server).

    Parameters:
        host: address to bind (Modbus and CT).
        port: Modbus TCP port (0 picks a free port; see :attr:`address`).
        unit: Modbus unit id served.
        clock: time source (default :func:`sef.clock.default_clock`).
        phases: 1 (model 201) or 3 (model 203).
        base_load: the uncontrolled load (default 0 kW).
        ct_port: UDP port of the CT inputs (0 = a free one; None = no CT input).
        ct_timeout_s: real seconds of silence after which a CT source counts as 0 W.
        max_kw: largest power the registers must hold, kW (sets ``W_SF`` and ``A_SF``).
        phase_v: phase voltage, V (default :data:`DEFAULT_PHASE_V`).
        hz: line frequency, Hz.
        tick_s: clock seconds between background updates.
        serial: model 1 serial number (default ``SEF-MTR-<port>-<unit>``).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        unit: int = 1,
        clock: Clock | None = None,
        *,
        phases: int = 1,
        base_load: BaseLoad | None = None,
        ct_port: int | None = None,
        ct_timeout_s: float = 5.0,
        max_kw: float = 100.0,
        phase_v: float | None = None,
        hz: float = 60.0,
        tick_s: float = 1.0,
        serial: str | None = None,
    ) -> None:
        if phases not in METER_MODELS:
            raise ValueError(f"phases must be 1 or 3, got {phases}")
        if not 1 <= unit <= 247:
            raise ValueError(f"unit must be 1..247, got {unit}")
        if not max_kw > 0:
            raise ValueError("max_kw must be > 0")
        self.host, self.port, self.unit = host, port, unit
        self.clock = clock or default_clock()
        self.phases = phases
        self.model_id = METER_MODELS[phases]
        self.base_load = base_load or BaseLoad.constant(0.0)
        self.ct_port, self.ct_timeout_s = ct_port, ct_timeout_s
        self.max_w = max_kw * 1000.0
        self.phase_v = phase_v or DEFAULT_PHASE_V[phases]
        self.hz = hz
        self.tick_s = tick_s
        self.image = SunSpecImage((1, self.model_id))
        self.import_wh = self.export_wh = 0.0
        self.sources: dict[str, tuple[float, float]] = {}  # src → (W, real time received)
        self.injected: dict[str, int] = {}  # point → raw value forced (fault injection)
        self._genuine: dict[str, list[int]] = {}  # point → its registers under an injection
        self.saturated = False
        self._last = self.clock.now()
        self._server: ModbusTcpServer | None = None
        self._ct: asyncio.DatagramTransport | None = None
        self.ct_receiver: CtReceiver | None = None
        self.address: tuple[str, int] | None = None
        self.ct_address: tuple[str, int] | None = None
        self._init_image(serial or f"SEF-MTR-{port}-{unit}")
        self._refresh()

    # -- image ----------------------------------------------------------------------

    def _init_image(self, serial: str) -> None:
        mid, img = self.model_id, self.image
        img.set_many(1, {"Mn": "SEF", "Md": f"SEF-METER-{mid}", "Opt": "emulator",
                         "Vr": sef.__version__, "SN": serial, "DA": self.unit})  # fmt: skip
        img.set_many(mid, {
            "A_SF": choose_sf(self.max_w / self.phase_v, signed=True, min_sf=-2),
            "V_SF": -1, "Hz_SF": -2, "W_SF": choose_sf(self.max_w, signed=True, min_sf=0),
            "TotWh_SF": TOT_WH_SF, "Evt": 0,
        })  # fmt: skip
        volts = {"PhV": self.phase_v, "PhVphA": self.phase_v, "Hz": self.hz}
        if self.phases == 3:
            line_v = self.phase_v * math.sqrt(3.0)
            volts |= {"PhVphB": self.phase_v, "PhVphC": self.phase_v, "PPV": line_v,
                      "PhVphAB": line_v, "PhVphBC": line_v, "PhVphCA": line_v}  # fmt: skip
        img.set_many(mid, volts)

    def power_w(self) -> float:
        """Net power now, W (+ = import): base load plus every live CT source."""
        return self.base_load.kw_at(self.clock.now()) * 1000.0 + self._ct_w()

    def _ct_w(self) -> float:
        return sum(w for w, _ in self.sources.values())

    def _refresh(self) -> None:
        """Write the present measurement into the image."""
        mid, img = self.model_id, self.image
        self._restore_genuine()
        watts = self.power_w()
        limit = 32767 * 10.0 ** int(img.get_raw(mid, "W_SF") or 0)
        shown = min(max(watts, -limit), limit)
        if (shown != watts) != self.saturated:
            self.saturated = shown != watts
            if self.saturated:
                log.warning(
                    "meter: %.0f W is beyond the register range; showing %.0f", watts, shown
                )
        per_phase = shown / self.phases
        amps = abs(per_phase) / self.phase_v
        a_limit = 32767 * 10.0 ** int(img.get_raw(mid, "A_SF") or 0)
        amps = min(amps, a_limit / self.phases)
        values: dict[str, float | int] = {"W": shown, "WphA": per_phase, "A": amps * self.phases,
                                          "AphA": amps}  # fmt: skip
        if self.phases == 3:
            values |= {"WphB": per_phase, "WphC": per_phase, "AphB": amps, "AphC": amps}
        quantum = 10.0**TOT_WH_SF
        values["TotWhImp"] = (math.floor(self.import_wh / quantum) % _ACC32) * quantum
        values["TotWhExp"] = (math.floor(self.export_wh / quantum) % _ACC32) * quantum
        img.set_many(mid, values)
        self._apply_injections()

    def _point_slice(self, name: str) -> slice:
        p = self.image.model(self.model_id).point(name)
        start = self.image.model_address[self.model_id] - self.image.base + p.offset
        return slice(start, start + p.size)

    def _apply_injections(self) -> None:
        """Serve the injected raw values; the image keeps its genuine ones underneath."""
        for name, raw in self.injected.items():
            where = self._point_slice(name)
            self._genuine[name] = self.image.registers[where]
            size = where.stop - where.start
            self.image.registers[where] = [
                (raw >> (16 * (size - 1 - i))) & 0xFFFF for i in range(size)
            ]

    def _restore_genuine(self) -> None:
        for name, regs in self._genuine.items():
            self.image.registers[self._point_slice(name)] = regs
        self._genuine.clear()

    def inject_raw(self, name: str, raw: int | None) -> None:
        """Force point ``name`` of the meter model to the raw register value ``raw`` (e.g.
        ``0x8000``, "not implemented") until called again with ``None``: a faulty meter."""
        self.image.model(self.model_id).point(name)  # unknown name: PointError
        if raw is None:
            self.injected.pop(name, None)
        else:
            self.injected[name] = raw
        self._refresh()

    # -- time and sources ----------------------------------------------------------------

    def advance(self) -> None:
        """Integrate the energy registers up to the clock's present; refresh the image."""
        now = self.clock.now()
        self._drop_stale()
        if now - self._last > _MAX_GAP_S:
            log.warning("meter: %.0f s without an update: not integrated", now - self._last)
            self._last = now
        if now > self._last:
            ct_w = self._ct_w()
            for duration_s, kw in self.base_load.segments(self._last, now):
                wh = (kw * 1000.0 + ct_w) * duration_s / 3600.0
                if wh >= 0:
                    self.import_wh += wh
                else:
                    self.export_wh -= wh
            self._last = now
        self._refresh()

    def _drop_stale(self) -> None:
        limit = time.monotonic() - self.ct_timeout_s
        for src in [s for s, (_, at) in self.sources.items() if at < limit]:
            log.warning("meter: CT source %s silent for %.0f s: 0 W", src, self.ct_timeout_s)
            del self.sources[src]

    def on_ct(self, source: str, watts: float) -> None:
        """A CT reading: ``source`` draws ``watts`` W from now on (+ = from the grid)."""
        self.advance()  # the old value held until now
        if source not in self.sources:
            log.info("meter: CT source %s connected (%.0f W)", source, watts)
        self.sources[source] = (watts, time.monotonic())
        self._refresh()

    # -- Modbus ---------------------------------------------------------------------

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """Hook of pymodbus: refresh on reads; the map is read-only."""
        try:
            if values is not None and function_code not in (3, 4):
                return ExcCodes.ILLEGAL_ADDRESS
            self.advance()
            i = address - start_address
            registers[i : i + count] = self.image.slice(address, count)
            return None
        except Exception:  # never let a request crash the server
            log.exception("meter: request failed")
            return ExcCodes.DEVICE_FAILURE

    async def start(self) -> tuple[str, int]:
        """Start serving (Modbus, and the CT input if any); returns the Modbus (host, port)."""
        device = SimDevice(
            id=self.unit,
            simdata=SimData(self.image.base, values=list(self.image.registers),
                            datatype=DataType.REGISTERS),
            action=self._action,
        )  # fmt: skip
        other_units = SimDevice(
            id=0,
            simdata=SimData(0, count=0x10000, values=0, datatype=DataType.REGISTERS),
            action=_no_such_unit,
        )
        if self.ct_port is not None:
            loop = asyncio.get_running_loop()
            self._ct, self.ct_receiver = await loop.create_datagram_endpoint(
                lambda: CtReceiver(self.on_ct), local_addr=(self.host, self.ct_port)
            )
            self.ct_address = self._ct.get_extra_info("sockname")[:2]
        self._server = ModbusTcpServer([device, other_units], address=(self.host, self.port))
        await self._server.serve_forever(background=True)
        sockets = getattr(self._server.transport, "sockets", None) or []
        port = int(sockets[0].getsockname()[1]) if sockets else self.port
        self.address = (self.host, port)
        if self.port == 0:
            self.image.set(1, "SN", f"SEF-MTR-{port}-{self.unit}")
        self._last = self.clock.now()
        return self.address

    async def run(self) -> None:
        """Update every tick until cancelled (the server must be started)."""
        while True:
            await self.clock.sleep(max(self.tick_s, self.clock.to_clock(_MIN_REAL_TICK_S)))
            self.advance()

    async def stop(self) -> None:
        """Stop serving and close every connection and the CT input."""
        if self._ct is not None:
            self._ct.close()
            self._ct = None
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None


async def _no_such_unit(*_args: object) -> ExcCodes:
    return ExcCodes.GATEWAY_NO_RESPONSE


async def run_meter_emulator(
    emulator: MeterEmulator,
    on_ready: Callable[[MeterEmulator], None] | None = None,
) -> None:
    """Serve ``emulator`` until cancelled; ``on_ready(emulator)`` once it listens
    (``emulator.address`` and ``emulator.ct_address`` then hold the bound addresses)."""
    await emulator.start()
    try:
        if on_ready is not None:
            on_ready(emulator)
        await emulator.run()
    finally:
        with contextlib.suppress(Exception):
            await emulator.stop()

"""The inverter agent: ``edu.pdx.powerlab.demo`` + ``org.sef.der.Inverter`` ⇄ SunSpec 70x.

The agent scans the SunSpec chain (models 701, 702 and 704 required; 705 optional), so it
drives any SunSpec 700-series inverter, not only SEF's emulator. Demo-interface commands
map to curtailment:

=========  ================================================================================
command    effect
=========  ================================================================================
shed r     limit the output to ``r`` kW (704 ``WMaxLimPct`` = 100·r/``WMax``, ``Ena`` = 1)
endshed    release that limit
idle       no change to normal operation: no curtailment by an event (the standing export
           limit stays); a timed sequence that runs out goes back to it
others     refused by the device: no change; the reply is ``ok`` (the sequence is valid, as
           ``docs/protocol.md`` §7.2 and ``sef certify`` require) with ``applied`` false,
           fault ``sef.Fault.NotSupported`` and the reason, also shown as ``Refused``
=========  ================================================================================

``org.sef.der.Inverter`` adds standing settings: an export limit (kW, combined with a
shed: the lower wins), a power-factor setpoint (704 ``PFWInj``) and the volt-var enable
(705 ``Ena``). Every apply writes the 704 limit block (one request); the settings when
they changed, and everything after a reconnection or a readback mismatch. A timed shed
also sets 704 ``WMaxLimPctRvrtTms`` to its end plus
:data:`REVERT_MARGIN_S`, with the standing export limit as the revert values: should the
agent die, the inverter ends the shed by itself. Telemetry keys, units and the register
map: ``docs/inverter.md``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from typing import ClassVar

from sef.agents._declare import AboutInfo, CallError, Outcome, method
from sef.agents._der import DERAgent
from sef.agents._device import DeviceAdapter, DeviceStatus
from sef.agents._host_loss import DEFAULT_GRACE_S
from sef.agents._inverter import InverterSettings, inverter_telemetry, num
from sef.agents._nameplate import pv_inverter_nameplate
from sef.bus import BrokerURL, ErrorName
from sef.clock import Clock
from sef.interface import DEMO_INTERFACE, Command, EnergyEvent, Variant, parse_events
from sef.protocols.sunspec import PointValue, SunSpecClient, SunSpecError
from sef.security import Security

__all__ = [
    "INVERTER_INTERFACE",
    "NOT_SUPPORTED",
    "InverterAgent",
    "InverterSettings",
    "SunSpecInverter",
]

log = logging.getLogger("sef.agent.inverter")

INVERTER_INTERFACE = "org.sef.der.Inverter"
REVERT_MARGIN_S = 60.0
"""Clock seconds after a timed shed's planned end at which the inverter reverts itself."""
MAX_REVERT_S = 0xFFFFFFFE
ACCEPTED = (Command.SHED, Command.ENDSHED, Command.IDLE)
NOT_SUPPORTED = "sef.Fault.NotSupported"
"""Reply fault of a valid command the device cannot carry out (charge, discharge)."""
_MEASURE = ["W", "Var", "PF", "A", "LNV", "Hz", "TotWhInj", "InvSt", "Alrm", "ThrotPct"]
_CONTROLS = ["WMaxLimPctEna", "WMaxLimPct", "PFWInjEna", "PFWInj.PF", "PFWInj.Ext"]
_SFS = ["WMaxLimPct_SF", "PF_SF"]
"""704 scale factors the writes need: read with every poll and passed to the writes."""


class SunSpecInverter(DeviceAdapter):
    """A SunSpec 700-series PV inverter (701, 702, 704; 705 optional) over Modbus TCP."""

    comm_errors: ClassVar[tuple[type[BaseException], ...]] = (SunSpecError, OSError, TimeoutError)

    def __init__(
        self,
        host: str,
        port: int,
        *,
        unit: int = 1,
        timeout_s: float = 1.0,
        dc_kwp: float | None = None,
    ) -> None:
        self.modbus = SunSpecClient(host, port, unit=unit, timeout_s=timeout_s, retries=0)
        self.settings = InverterSettings()
        self.dc_kwp = dc_kwp
        self.event_limit_kw: float | None = None  # the shed in force (kW)
        self.wmax_w = self.va_max_w = self.var_max = 0.0
        self.pf_min = 0.0
        self.reading: dict[str, PointValue] = {}
        self.controls: dict[str, PointValue] = {}
        self.volt_var_read: bool | None = None
        self.has_volt_var = False
        self.refused = ""
        self.writes = 0
        self._written: dict[str, float] = {}
        self._sfs: dict[str, PointValue] = {}  # 704 SFs of the last poll
        self._settings_written: tuple[float, bool, bool] | None = None
        self._lock = asyncio.Lock()

    # -- session --------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect, scan the chain (701, 702, 704 required) and read the ratings (702)."""
        async with self._lock:
            await self.modbus.connect()
            await self.modbus.scan()
            for model_id in (701, 702, 704):
                if not self.modbus.has_model(model_id):
                    raise SunSpecError(f"inverter has no SunSpec model {model_id}")
            self.has_volt_var = self.modbus.has_model(705)
            cap = await self.modbus.read_points(
                702, ["WMaxRtg", "WMax", "VAMaxRtg", "VarMaxInjRtg", "PFOvrExtRtg", "PFUndExtRtg"]
            )
        self.wmax_w = num(cap["WMax"]) or num(cap["WMaxRtg"]) or 0.0
        if self.wmax_w <= 0:
            raise SunSpecError("inverter reports no active-power rating (702 WMax/WMaxRtg)")
        self.va_max_w = num(cap["VAMaxRtg"]) or self.wmax_w
        self.var_max = num(cap["VarMaxInjRtg"]) or 0.0
        self.pf_min = max(num(cap["PFOvrExtRtg"]) or 0.0, num(cap["PFUndExtRtg"]) or 0.0)
        log.info("%s: inverter found (%.1f kW, %.1f kVA, volt-var %s)", self.host.agent_id,
                 self.wmax_w / 1000, self.va_max_w / 1000, self.has_volt_var)  # fmt: skip

    def limit_kw(self) -> float | None:
        """The active-power limit in force (kW): the lower of shed and export limit."""
        limits = [x for x in (self.event_limit_kw, self.settings.export_limit_kw) if x is not None]
        return min(limits) if limits else None

    def _pct(self, limit_kw: float | None) -> float:
        if limit_kw is None:
            return 100.0
        return round(min(100.0, max(0.0, 100.0 * limit_kw * 1000.0 / self.wmax_w)), 2)

    async def apply(self, event: EnergyEvent, left_s: float | None) -> None:
        """Write the curtailment of ``event`` and the standing settings (704, 705)."""
        if event.cmd == Command.SHED:
            self.event_limit_kw = float(event.rate_kw)
        elif event.cmd in ACCEPTED:  # endshed, idle: normal operation
            self.event_limit_kw = None
        # charge / discharge: refused by the device, the limit in force stays
        limit = self.limit_kw()
        s = self.settings
        standing = s.export_limit_kw
        revert_s = 0
        if event.cmd == Command.SHED and left_s is not None:
            revert_s = min(int(left_s + REVERT_MARGIN_S), MAX_REVERT_S)
        limits = {
            "WMaxLimPctEna": 0 if limit is None else 1,
            "WMaxLimPct": self._pct(limit),
            "WMaxLimPctRvrt": self._pct(standing),
            "WMaxLimPctEnaRvrt": 0 if standing is None else 1,
            "WMaxLimPctRvrtTms": revert_s,
        }
        pf_on = s.pf < 1.0
        pf = {"PFWInjEna": 1 if pf_on else 0}
        wanted = (s.pf, s.absorb, s.volt_var)
        async with self._lock:
            sfs = self._sfs if all(isinstance(self._sfs.get(n), int) for n in _SFS) else None
            await self.modbus.write_points(704, limits, scale_factors=sfs)
            if self._settings_written != wanted:  # unchanged settings are not rewritten
                pf_point = {"PFWInj.PF": s.pf, "PFWInj.Ext": int(s.absorb)}
                await self.modbus.write_points(704, pf_point, scale_factors=sfs)
                await self.modbus.write_points(704, pf)
                if self.has_volt_var:
                    await self.modbus.write_point(705, "Ena", int(s.volt_var))
                self._settings_written = wanted
        self._written = {"WMaxLimPctEna": limits["WMaxLimPctEna"], "PFWInjEna": pf["PFWInjEna"]}
        if limit is not None:
            self._written["WMaxLimPct"] = limits["WMaxLimPct"]
        if pf_on:
            self._written["PFWInj.PF"] = s.pf
        self.writes += 1

    async def read(self) -> None:
        """Read 701 (measurements), 704 (controls, for readback) and 705 ``Ena``."""
        async with self._lock:
            reading = await self.modbus.read_points(701, _MEASURE)
            controls = await self.modbus.read_points(704, [*_CONTROLS, *_SFS])
            vv = await self.modbus.read_point(705, "Ena") if self.has_volt_var else None
        self.reading, self.controls = reading, controls
        self._sfs = {name: controls[name] for name in _SFS}
        self.volt_var_read = None if vv is None else bool(vv)

    def readback(self) -> str | None:
        """704 controls that differ from the last write (another client changed them)."""
        differ = [
            f"{name} {self.controls.get(name)} (wrote {value})"
            for name, value in self._written.items()
            if not _close(self.controls.get(name), value)
        ]
        vv = self.volt_var_read
        if self.has_volt_var and self._written and vv is not None and vv != self.settings.volt_var:
            differ.append(f"705 Ena {int(vv)} (wrote {int(self.settings.volt_var)})")
        if differ:
            self._settings_written = None  # re-assert everything
        return ", ".join(differ) or None

    async def close(self) -> None:
        """Close the Modbus connection; nothing to read back until the next write."""
        self.modbus.close()
        self._written, self._sfs, self._settings_written = {}, {}, None

    def nameplate(self) -> dict[str, Variant] | None:
        """Ratings read from 702 (kW, kVA, kvar) and the configured DC rating (kWp)."""
        if self.wmax_w <= 0:
            return None
        return pv_inverter_nameplate(
            ac_kw=self.wmax_w / 1000.0,
            kva=self.va_max_w / 1000.0,
            var_kvar=self.var_max / 1000.0,
            dc_kwp=self.dc_kwp,
        )

    def telemetry(self, status: DeviceStatus) -> dict[str, Variant]:
        """Inverter keys: W, var, V, A, Hz, Wh, %, state (``docs/inverter.md``)."""
        return inverter_telemetry(
            self.reading, self.settings, self.limit_kw(), self.wmax_w / 1000, status, self.refused
        )


class InverterAgent(DERAgent[SunSpecInverter]):
    """PV inverter agent over SunSpec Modbus TCP (see the module docstring).

    Args:
        agent_id: id on the bus.
        broker: broker URL.
        modbus_host, modbus_port, unit: where the inverter is.
        poll_s: time between polls and telemetry, real s.
        dc_kwp: the PV array's DC rating for the Nameplate (kWp; SunSpec has none).
        host_loss_grace_s, clock, groups, keepalive_s, security, sign_telemetry: as for
            :class:`~sef.agents.DERAgent`.
    """

    # DERAgent infers tuple[str] for its one interface; Agent declares Sequence[str]
    interfaces = (DEMO_INTERFACE, INVERTER_INTERFACE)  # type: ignore[assignment]

    def __init__(
        self,
        agent_id: str,
        broker: BrokerURL | str,
        *,
        modbus_host: str,
        modbus_port: int,
        unit: int = 1,
        poll_s: float = 1.0,
        dc_kwp: float | None = None,
        host_loss_grace_s: float = DEFAULT_GRACE_S,
        clock: Clock | None = None,
        groups: Sequence[str] = (),
        keepalive_s: int = 10,
        security: Security | None = None,
        sign_telemetry: bool = False,
    ) -> None:
        # a Modbus timeout of its own, not the poll period: at a 0.1 s poll on a loaded host
        # every read timed out and the agent reported a fault for a whole demo run
        device = SunSpecInverter(
            modbus_host, modbus_port, unit=unit, timeout_s=max(1.0, poll_s), dc_kwp=dc_kwp
        )
        super().__init__(
            agent_id, broker, device, poll_s=poll_s, host_loss_grace_s=host_loss_grace_s,
            clock=clock, groups=groups, keepalive_s=keepalive_s, security=security,
            sign_telemetry=sign_telemetry,
            about=AboutInfo(app_name="SEF inverter agent", model_number="sef-inverter",
                            description="PV inverter agent over SunSpec Modbus TCP"),
        )  # fmt: skip

    async def on_start(self) -> None:
        """Publish the settings, then start the template."""
        self.set_property(INVERTER_INTERFACE, "Settings", self.device.settings.as_property())
        await super().on_start()

    @method(DEMO_INTERFACE, "EnergyMethod")
    async def energy_method(self, cmds: list[tuple[str, int, int]]) -> Outcome:
        """``EnergyMethod``: shed / endshed / idle act; charge / discharge are refused by the
        device (no change, ``applied`` false with the reason)."""
        events = parse_events(cmds)  # a malformed sequence: InvalidArgs, nothing changes
        bad = [e for e in events if e.cmd not in ACCEPTED]
        outcome = await super().energy_method(cmds)
        if not bad:
            return outcome
        shown = [e.as_tuple() for e in events]
        reason = (
            f"{bad[0].cmd.value}: a PV inverter cannot charge or discharge (no change); "
            "use shed RATE to curtail, endshed to release"
        )
        self.device.refused = f"{shown}: {reason}"
        log.warning("%s: refused %s: %s", self.agent_id, shown, reason)
        self._publish()
        if events[0].cmd in ACCEPTED:
            return outcome
        return Outcome(False, NOT_SUPPORTED, f"refused: {reason}")

    async def _settings_changed(self) -> Outcome:
        """Publish the settings and write them now (or at the next connection)."""
        self.set_property(INVERTER_INTERFACE, "Settings", self.device.settings.as_property())
        self._dirty = True
        if self._connected and self.status.healthy:
            try:
                await self._apply_running()
            except Exception as exc:
                self._fault(exc)
        self._publish()
        if not self._dirty:
            return Outcome(applied=True)
        if self.status.fault:
            return Outcome(False, ErrorName.DEVICE_UNREACHABLE, self.status.fault)
        return Outcome(applied=None)

    @method(INVERTER_INTERFACE, "SetExportLimit")
    async def set_export_limit(self, limit_kw: float) -> Outcome:
        """Set the standing export limit (kW, >= 0)."""
        if not math.isfinite(limit_kw) or limit_kw < 0:
            raise CallError(f"limit_kW must be >= 0, got {limit_kw}", ErrorName.INVALID_ARGS)
        self.device.settings.export_limit_kw = float(limit_kw)
        return await self._settings_changed()

    @method(INVERTER_INTERFACE, "ClearExportLimit")
    async def clear_export_limit(self) -> Outcome:
        """Remove the standing export limit."""
        self.device.settings.export_limit_kw = None
        return await self._settings_changed()

    @method(INVERTER_INTERFACE, "SetPowerFactor")
    async def set_power_factor(self, pf: float, absorb: bool) -> Outcome:
        """Set the power-factor setpoint (magnitude; 1 = unity)."""
        low = self.device.pf_min
        if not (math.isfinite(pf) and max(low, 0.0) <= pf <= 1.0 and pf > 0):
            raise CallError(
                f"pf must be within [{low:g}, 1] (the inverter's rating), got {pf}",
                ErrorName.INVALID_ARGS,
            )
        self.device.settings.pf, self.device.settings.absorb = float(pf), bool(absorb)
        return await self._settings_changed()

    @method(INVERTER_INTERFACE, "SetVoltVar")
    async def set_volt_var(self, enable: bool) -> Outcome:
        """Enable or disable volt-var (705 ``Ena``)."""
        if enable and self._connected and not self.device.has_volt_var:
            raise CallError("the inverter has no volt-var model (705)", ErrorName.FAILED)
        self.device.settings.volt_var = bool(enable)
        return await self._settings_changed()


def _close(read: PointValue, wrote: float) -> bool:
    return isinstance(read, int | float) and abs(float(read) - wrote) <= 0.011

"""PV inverter emulator: the PV model behind a SunSpec 700-series Modbus TCP map.

Chain (``sef.emulators._inverter_image``): 1, 701, 702, 704, 705, 711. The model
(:class:`sef.models.pv.PVFleet`, one system) is stepped on the clock's wall time (the
sun!) every ``tick_s`` and before every read or write, so a write to 704 changes the
output (701 ``W``) at once. Controls, in the order they apply:

* 702 ``WMax`` (W): the active-power setting; 704 ``WMaxLimPctEna``/``WMaxLimPct`` limit
  the output to ``WMaxLimPct`` % of ``WMax``, and revert to ``WMaxLimPctRvrt`` /
  ``WMaxLimPctEnaRvrt`` ``WMaxLimPctRvrtTms`` s after the write (0 = never);
* 704 ``WSetEna``/``WSetMod``/``WSet``/``WSetPct``: an active-power setpoint (a PV system
  cannot exceed its available power, so it acts as a further limit);
* 711 ``Ena`` and the grid frequency (:attr:`InverterEmulator.grid_hz`): over-frequency
  droop ``dP = (f - 60 - DbOf) / (60 KOf) * WMax``;
* reactive power: 704 ``VarSetEna`` (``VarSetMod`` VARS or VAR_MAX_PCT), else 705 ``Ena``
  (volt-var on the active curve ``Crv[0]`` at :attr:`InverterEmulator.grid_v`, Q in % of
  ``VarMaxInj``/``VarMaxAbs``; writing ``AdptCrvReq = 2`` copies ``Crv[1]`` into it), else
  704 ``PFWInjEna`` (constant power factor ``PFWInj.PF``, ``Ext`` 0 = over-excited =
  inject vars); all within 702 ``VAMax``.

Units and the register map: ``docs/inverter.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np

from sef.clock import Clock, default_clock
from sef.emulators._inverter_image import F_NOM_HZ, REPEAT_COUNTS, InverterSpec, build_image
from sef.emulators._sunspec_server import SunSpecServer, Written
from sef.models.pv import PVFleet, volt_var_kvar
from sef.models.pv_irradiance import ClearSky, Cloudiness, CsvIrradiance, IrradianceSource

__all__ = ["InverterEmulator", "InverterSpec", "run_inverter_emulator"]

INVST_SLEEPING, INVST_RUNNING, INVST_THROTTLED, INVST_FAULT = 1, 3, 4, 6
ALRM_MANUAL_SHUTDOWN = 1 << 6
DERMODE_GRID_FOLLOWING, DERMODE_PV_CLIPPED = 1 << 0, 1 << 2
THROT_MAX_W, THROT_FIXED_W, THROT_FIXED_VAR, THROT_FIXED_PF, THROT_VOLT_VAR, THROT_FREQ = (
    1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 4, 1 << 5)  # fmt: skip
_SUN_STEP_S = 1.0  # clock s between irradiance evaluations
_PCT_POINTS = {"WMaxLimPct", "WMaxLimPctRvrt", "WSetPct", "WSetPctRvrt"}
_ENA_POINTS = {"PFWInjEna", "PFWInjEnaRvrt", "PFWAbsEna", "PFWAbsEnaRvrt", "WMaxLimPctEna",
               "WMaxLimPctEnaRvrt", "WSetEna", "WSetEnaRvrt", "VarSetEna", "VarSetEnaRvrt",
               "AntiIslEna", "Ena"}  # fmt: skip


def _source(spec: InverterSpec) -> IrradianceSource:
    if spec.irradiance_csv:
        return CsvIrradiance(spec.irradiance_csv, temp_air_c=spec.temp_air_c)
    clouds = None if spec.cloud_seed is None else Cloudiness(seed=spec.cloud_seed)
    return ClearSky(spec.site, cloudiness=clouds, temp_air_c=spec.temp_air_c)


class InverterEmulator(SunSpecServer):
    """One emulated smart PV inverter (model + SunSpec image + Modbus TCP server).

    Attributes:
        spec: the :class:`InverterSpec`.
        model: the one-system :class:`~sef.models.pv.PVFleet`.
        grid_v: grid voltage at the terminals (V), drives volt-var.
        grid_hz: grid frequency (Hz), drives the frequency droop.
        fault: True = tripped (no output, InvSt FAULT).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        unit: int = 1,
        clock: Clock | None = None,
        spec: InverterSpec | None = None,
        tick_s: float = 1.0,
    ) -> None:
        self.spec = spec or InverterSpec()
        s = self.spec
        image = build_image(s, unit, f"SEF-PV-{port}-{unit}")
        super().__init__(image, host, port, unit, clock or default_clock(), tick_s)
        self.model = PVFleet(
            dc_kwp=s.dc_kwp, ac_kw=s.ac_kw, kva=s.kva, tilt_deg=s.tilt_deg,
            azimuth_deg=s.azimuth_deg, source=_source(s), site=s.site,
        )  # fmt: skip
        self.grid_v, self.grid_hz, self.fault = s.v_nom, F_NOM_HZ, False
        self._last = self.clock.monotonic()
        self._wall = self.clock.now()
        self._lim_written_at = self._last
        self._rvrt_pending = False
        self._avail_kw, self._avail_at = 0.0, -math.inf
        self._throttle = 0
        self.wh_injected = self.varh_injected = self.varh_absorbed = 0.0
        self.advance()

    # -- controls -------------------------------------------------------------------

    def _num(self, model_id: int, name: str, default: float = 0.0) -> float:
        value = self.image.get(model_id, name)
        return float(value) if isinstance(value, int | float) else default

    def wmax_w(self) -> float:
        """702 ``WMax``: the active-power setting (W)."""
        return self._num(702, "WMax", self.spec.ac_kw * 1000.0)

    def limit_w(self) -> float:
        """The active-power limit in force (W) from 704 and 711; ``inf`` = none."""
        lim, self._throttle = math.inf, 0
        wmax = self.wmax_w()
        if self._num(704, "WMaxLimPctEna"):
            lim, self._throttle = self._num(704, "WMaxLimPct", 100.0) / 100.0 * wmax, THROT_MAX_W
        if self._num(704, "WSetEna"):
            pct = self._num(704, "WSetMod") == 0
            w = self._num(704, "WSetPct") / 100 * wmax if pct else self._num(704, "WSet")
            if w < lim:
                lim, self._throttle = w, THROT_FIXED_W
        df = self.grid_hz - F_NOM_HZ - self._num(711, "Ctl[0].DbOf")
        if self._num(711, "Ena") and df > 0:
            k = max(self._num(711, "Ctl[0].KOf", 0.05), 1e-3)
            floor = self._num(711, "Ctl[0].PMin") / 100 * wmax
            w = max(self._avail_kw * 1000.0 - df / (F_NOM_HZ * k) * wmax, floor, 0.0)
            if w < lim:
                lim, self._throttle = w, THROT_FREQ
        return min(lim, wmax)

    def reactive(self) -> tuple[float | None, bool, float | None, int]:
        """(pf, inject, q_kvar, throttle bit) of the reactive mode in force."""
        var_inj, var_abs = self._num(702, "VarMaxInj"), self._num(702, "VarMaxAbs")
        if self._num(704, "VarSetEna"):
            mode = self._num(704, "VarSetMod")
            if mode == 4:
                return None, False, self._num(704, "VarSet") / 1000, THROT_FIXED_VAR
            pct = self._num(704, "VarSetPct")
            return None, False, pct / 100 * (var_inj if pct >= 0 else var_abs) / 1000, 0
        if self._num(705, "Ena"):
            n = int(self._num(705, "Crv[0].ActPt", 0))
            pts = [(self._num(705, f"Crv[0].Pt[{k}].V"), self._num(705, f"Crv[0].Pt[{k}].Var"))
                   for k in range(min(n, REPEAT_COUNTS[705]["NPt"]))]  # fmt: skip
            if len(pts) >= 2:
                v_pct = 100.0 * self.grid_v / max(self._num(702, "VNom", self.spec.v_nom), 1.0)
                frac = float(volt_var_kvar(v_pct, [p[0] for p in pts], [p[1] for p in pts], 1.0))
                ref = var_inj if frac >= 0 else var_abs
                return None, False, frac * ref / 1000.0, THROT_VOLT_VAR
        if self._num(704, "PFWInjEna"):
            inject = self._num(704, "PFWInj.Ext") == 0
            return self._num(704, "PFWInj.PF", 1.0), inject, None, THROT_FIXED_PF
        return None, False, None, 0

    # -- time -----------------------------------------------------------------------

    def advance(self) -> None:
        """Step the model to the clock's present with the controls in force."""
        now = self.clock.monotonic()
        rvrt = self._num(704, "WMaxLimPctRvrtTms")
        if self._rvrt_pending and rvrt > 0 and now >= self._lim_written_at + rvrt:
            self._rvrt_pending = False
            self._step(self._lim_written_at + rvrt - self._last, recompute=False)
            self._last = self._lim_written_at + rvrt
            self.image.set(704, "WMaxLimPct", self._num(704, "WMaxLimPctRvrt", 100.0))
            self.image.set(704, "WMaxLimPctEna", self._num(704, "WMaxLimPctEnaRvrt"))
        self._wall = self.clock.now()
        self._step(max(0.0, now - self._last), recompute=True)
        self._last = max(self._last, now)
        self._refresh()

    def _step(self, dt_s: float, recompute: bool) -> None:
        if dt_s < 0:
            return
        if recompute and abs(self._wall - self._avail_at) >= _SUN_STEP_S:
            t = datetime.fromtimestamp(self._wall, tz=UTC)
            self._avail_kw = float(self.model.available_kw(t)[0, 0])
            self._avail_at = self._wall
        lim = self.limit_w()
        pf, inject, q, _ = self.reactive()
        limit_kw = 0.0 if self.fault else lim / 1000.0
        kva = self._num(702, "VAMax", self.spec.kva * 1000.0) / 1000.0
        self.model.kva = np.array([max(kva, 1e-3)])
        self.model.step(None, dt_s, limit_kw=limit_kw, pf=pf, pf_inject=inject, q_kvar=q,
                        available_kw=self._avail_kw)  # fmt: skip
        p, qq = float(self.model.p_kw[0]), float(self.model.q_kvar[0])
        self.wh_injected += p * 1000.0 * dt_s / 3600.0
        self.varh_injected += max(qq, 0.0) * 1000.0 * dt_s / 3600.0
        self.varh_absorbed += max(-qq, 0.0) * 1000.0 * dt_s / 3600.0

    def _refresh(self) -> None:
        """Write the live state into 701 and the revert countdown into 704."""
        p_w, q_var = float(self.model.p_kw[0]) * 1000.0, float(self.model.q_kvar[0]) * 1000.0
        s_va = math.hypot(p_w, q_var)
        avail_w = self._avail_kw * 1000.0
        _, _, _, q_bit = self.reactive()
        curtailed = p_w < avail_w - 1.0
        throt = (self._throttle if curtailed else 0) | (q_bit if q_var != 0 else 0)
        if self.fault:
            inv_st = INVST_FAULT
        elif avail_w <= 0.0:
            inv_st = INVST_SLEEPING
        else:
            inv_st = INVST_THROTTLED if curtailed else INVST_RUNNING
        clipped = avail_w >= self.spec.ac_kw * 1000.0 - 1.0
        wmax = max(self.wmax_w(), 1.0)
        temp = self.spec.temp_air_c
        v, a = self.grid_v, s_va / max(self.grid_v, 1.0)
        pf = p_w / s_va if s_va > 0 else 1.0
        self.image.set_many(701, {
            "St": 0 if self.fault else 1, "InvSt": inv_st, "ConnSt": 0 if self.fault else 1,
            "Alrm": ALRM_MANUAL_SHUTDOWN if self.fault else 0,
            "DERMode": DERMODE_GRID_FOLLOWING | (DERMODE_PV_CLIPPED if clipped else 0),
            "W": p_w, "VA": s_va, "Var": q_var, "PF": pf, "A": a, "LNV": v, "Hz": self.grid_hz,
            "TotWhInj": int(self.wh_injected), "TotVarhInj": int(self.varh_injected),
            "TotVarhAbs": int(self.varh_absorbed), "TmpAmb": temp,
            "TmpCab": temp + 15.0 * p_w / wmax, "TmpSnk": temp + 25.0 * p_w / wmax,
            "WL1": p_w, "VAL1": s_va, "VarL1": q_var, "PFL1": pf, "AL1": a, "VL1": v,
            "TotWhInjL1": int(self.wh_injected), "TotWhAbsL1": 0,
            "ThrotPct": round(100.0 * max(avail_w - p_w, 0.0) / wmax), "ThrotSrc": throt,
        })  # fmt: skip
        rvrt = self._num(704, "WMaxLimPctRvrtTms")
        pending = self._rvrt_pending and rvrt > 0
        rem = max(0.0, self._lim_written_at + rvrt - self._last) if pending else 0.0
        self.image.set(704, "WMaxLimPctRvrtRem", math.ceil(rem))

    def set_fault(self, active: bool) -> None:
        """Trip (True) or reconnect (False) the inverter: no output while tripped."""
        self.advance()
        self.fault = active
        self.advance()

    # -- writes ---------------------------------------------------------------------

    def valid(self, model_id: int, name: str, value: object) -> bool:
        """Range checks of written values (engineering units)."""
        if not self.finite(value):
            return False
        assert isinstance(value, int | float)
        leaf = name.rsplit(".", 1)[-1]
        s = self.spec
        if model_id == 1:
            return name == "DA" and value == self.unit
        if model_id == 705 and name.startswith("Crv[0]."):
            return False  # the active curve is read-only: adopt a curve with AdptCrvReq
        if leaf in _ENA_POINTS or leaf == "Ext":
            return value in (0, 1)
        if leaf in _PCT_POINTS:
            return 0 <= value <= 100
        if leaf == "PF":
            return s.pf_min - 1e-9 <= value <= 1.0
        if model_id == 702:
            ratings = {"WMax": s.ac_kw * 1000, "VAMax": s.kva * 1000, "VarMaxInj": s.var_max,
                       "VarMaxAbs": s.var_max}  # fmt: skip
            return name in ratings and 0 <= value <= ratings[name] + 1e-9
        if model_id == 705 and name == "AdptCrvReq":
            return 0 <= value <= REPEAT_COUNTS[705]["NCrv"]
        if name in ("WSetMod",):
            return value in (0, 1)
        if name == "VarSetMod":
            return value in (1, 4)
        return True

    def apply(self, new: Written) -> None:
        """Restart the revert timer on a 704 limit write; adopt a volt-var curve."""
        if any(k[0] == 704 and k[1].startswith("WMaxLimPct") for k in new):
            self._lim_written_at = self._last
            self._rvrt_pending = self._num(704, "WMaxLimPctRvrtTms") > 0
        req = new.get((705, "AdptCrvReq"))
        if req and int(req) >= 2:
            self._adopt_curve(int(req) - 1)
        self._step(0.0, recompute=False)  # the new controls act now
        self._refresh()

    def _adopt_curve(self, c: int) -> None:
        img = self.image
        pts = [(self._num(705, f"Crv[{c}].Pt[{k}].V"), self._num(705, f"Crv[{c}].Pt[{k}].Var"))
               for k in range(REPEAT_COUNTS[705]["NPt"])]  # fmt: skip
        n = int(self._num(705, f"Crv[{c}].ActPt"))
        ok = 2 <= n <= len(pts) and all(a[0] < b[0] for a, b in itertools.pairwise(pts[:n]))
        if ok:
            for leaf in ("ActPt", "DeptRef", "Pri", "VRef", "VRefAutoEna", "RspTms"):
                img.set(705, f"Crv[0].{leaf}", img.get(705, f"Crv[{c}].{leaf}"))
            for k, (v, q) in enumerate(pts):
                img.set_many(705, {f"Crv[0].Pt[{k}].V": v, f"Crv[0].Pt[{k}].Var": q})
        img.set_many(705, {"AdptCrvRslt": 1 if ok else 2, "AdptCrvReq": 0})

    def on_bound(self, port: int) -> None:
        """Fix the serial number once the port is known; restart the time base."""
        if self.port == 0:
            self.image.set(1, "SN", f"SEF-PV-{port}-{self.unit}")
        self._last = self._lim_written_at = self.clock.monotonic()


async def run_inverter_emulator(
    host: str,
    port: int,
    unit: int = 1,
    clock: Clock | None = None,
    spec: InverterSpec | None = None,
    ready: asyncio.Event | None = None,
    tick_s: float = 1.0,
    on_ready: Callable[[InverterEmulator], None] | None = None,
) -> None:
    """Serve an emulated SunSpec PV inverter until cancelled.

    ``ready`` is set (and ``on_ready(emulator)`` called; ``emulator.address`` holds the
    bound (host, port)) once the server listens. Cancel the task to stop.
    """
    emulator = InverterEmulator(host, port, unit, clock, spec, tick_s=tick_s)
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

"""The simulator's PV inverters and EV chargers (issue 17), on the device models.

:class:`DERSim` holds a :class:`sef.models.pv.PVFleet` stepped on the scenario's realised
available power (``PVFleet.step(available_kw=…)``: the app's active-power limits, the
inverters' ratings) and an :class:`sef.models.ev.EVFleet` of the scenario's sessions (the
evening before charged uncontrolled up to step 0). Per step it gives the observation's
DER fields (what an EMS gets from SunSpec and OCPP telemetry: power, available power,
each plugged EV's remaining AC need, declared departure and acceptance), applies the
app's decision, records the series and returns PV and EV power for the net load; at the
end, each session's outcome.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from sef.control.controllers.base import Decision
from sef.control.scenario import Scenario

if TYPE_CHECKING:
    from sef.models.pv import PVFleet

__all__ = ["DER_SERIES", "DERSim"]

FloatArray = npt.NDArray[np.float64]

#: Per-step DER series (kW, counts, kWh), recorded only when the scenario has PV or EVs.
DER_SERIES = (
    "pv_avail_kw",
    "pv_kw",
    "pv_curtailed_kw",
    "ev_kw",
    "ev_plugged",
    "ev_need_kwh",
)


class DERSim:
    """PV and EV fleets of a scenario inside :func:`sef.control.simulator.simulate`."""

    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        self.on = sc.pv is not None or sc.ev is not None or sc.export_limit_kw is not None
        self.pv: PVFleet | None = None
        if sc.pv is not None:  # pvlib: the der extra, only for a scenario with PV
            from sef.models.pv import PVFleet

            self.pv = PVFleet(sc.pv.dc_kwp, sc.pv.ac_kw, kva=sc.pv.ac_kw)
        self.ev = sc.ev.fleet_at_start(sc.dt_s) if sc.ev is not None else None
        n_s = sc.n_ev_sessions
        self.need0 = np.zeros(0)  # AC need at step 0 (plugged) or at arrival
        if self.ev is not None:
            ss = self.ev.sessions
            e0 = ss.soc0 * ss.battery_kwh
            at_arrival = (np.minimum(e0 + ss.need_kwh, ss.battery_kwh) - e0) / ss.efficiency
            self.need0 = np.where(ss.arrival_s < 0, self.ev.remaining_ac_kwh, at_arrival)
        self.delivered0 = self.ev.delivered_kwh.copy() if self.ev is not None else np.zeros(0)
        self.done_s = np.full(n_s, np.nan)  # when each session's need was met (s)
        self.curtailed_kwh = 0.0

    def observe(self, k: int) -> dict[str, Any]:
        """Observation fields for step ``k`` (none without PV and EVs)."""
        if not self.on:
            return {}
        out: dict[str, Any] = {}
        if self.pv is not None:
            out["pv_power_kw"] = self.pv.p_kw.copy()
            out["pv_available_kw"] = self.pv.last_available_kw.copy()
        if self.ev is not None:
            ev = self.ev
            plugged = ev.plugged()
            s = ev.sessions
            out["ev_power_kw"] = ev.power_kw.copy()
            out["ev_need_kwh"] = np.where(plugged, ev.remaining_ac_kwh, 0.0)
            out["ev_departure_s"] = np.where(plugged, s.departure_s, np.nan)
            out["ev_max_kw"] = np.where(plugged, ev.acceptance_kw(), 0.0)
        return out

    def step(self, k: int, dec: Decision, rec: dict[str, FloatArray]) -> float:
        """Apply ``dec`` for step ``k``; record; return PV and EV power for the net (kW)."""
        dt = self.sc.dt_s
        net = 0.0
        if self.pv is not None and self.sc.pv is not None:
            avail = self.sc.pv.available_kw[k]
            out = self.pv.step(k * dt, dt, limit_kw=dec.pv_limit_kw, available_kw=avail)
            a, p = float(out.available_kw.sum()), float(out.p_kw.sum())
            rec["pv_avail_kw"][k], rec["pv_kw"][k], rec["pv_curtailed_kw"][k] = a, p, a - p
            self.curtailed_kwh += (a - p) * dt / 3600.0
            net -= p
        if self.ev is not None:
            ev = self.ev
            limit = dec.ev_kw if dec.ev_kw is not None else ev.sessions.max_rate_kw
            before = ev.remaining_kwh > 1e-9
            p_ev = ev.step(dt, limit)
            met = before & (ev.remaining_kwh <= 1e-9)
            self.done_s[met] = ev.t_s
            plugged = ev.plugged(k * dt)
            rec["ev_kw"][k] = float(p_ev.sum())
            rec["ev_plugged"][k] = float(plugged.sum())
            rec["ev_need_kwh"][k] = float(np.sum(ev.remaining_ac_kwh[ev.plugged()]))
            net += float(p_ev.sum())
        return net

    def extra(self, app: object) -> dict[str, float]:
        """Run figures: PV energy available / delivered / curtailed (kWh), the app's
        largest planned EV shortfall (kWh)."""
        if not self.on:
            return {}
        out: dict[str, float] = {"pv_curtailed_kwh": self.curtailed_kwh}
        if self.pv is not None:
            out["pv_delivered_kwh"] = float(self.pv.energy_kwh.sum())
        if hasattr(app, "solve_max_s"):
            out["lp_solve_max_s"] = float(app.solve_max_s)
        short = getattr(app, "ev_short_kwh", None)
        if short is not None:
            out["ev_plan_shortfall_kwh"] = float(short)
        return out

    def sessions(self) -> dict[str, FloatArray]:
        """Per-session outcomes (see :class:`sef.control.simulator.SimResult`)."""
        if self.ev is None:
            return {}
        ev, s = self.ev, self.ev.sessions
        end = ev.t_s
        gone = s.departure_s <= end
        in_run = s.departure_s > 0
        met_s = np.where(np.isnan(self.done_s) & (self.need0 <= 1e-9), 0.0, self.done_s)
        start_h = np.maximum(s.arrival_s, 0.0)
        return {
            "arrival_s": s.arrival_s[in_run],
            "departure_s": s.departure_s[in_run],
            "need_kwh": self.need0[in_run],
            "delivered_kwh": (ev.delivered_kwh - self.delivered0)[in_run],
            "missed_kwh": np.where(gone, ev.remaining_kwh, np.nan)[in_run],
            "finish_margin_h": ((s.departure_s - np.maximum(met_s, start_h)) / 3600.0)[in_run],
            "end_laxity_h": np.where(gone, np.nan, ev.laxity_s() / 3600.0)[in_run],
        }

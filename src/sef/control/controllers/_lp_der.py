"""PV curtailment and deferrable EV charging in the aggregate LP (issue 17).

:func:`sef.control.controllers._lp.solve_plan` calls :func:`extend` when its input has a
:class:`DERInput`; without one the LP is exactly what it was (no column, no row added).
The caller passes the base load net of the forecast PV (``base − pv``); per interval
``j`` (kW; energies kWh; ``h`` the interval in hours)::

    variables  y_j ∈ [0, pv_j]          PV curtailed (kW)
               x_j ≥ 0                   net load below −export_limit (kW)
               e_gj ∈ [0, P_gj]          charging of EV group g (AC kW); P_gj: the summed
                                         rating of its EVs × their plugged share of j
               s_g ≥ 0                   energy group g misses at its deadline (kWh)
    deviation row j:  … + y_j + Σ_g e_gj  (both add to the net load)
    export:   net_j + x_j ≥ −export_limit   (net_j = target_j + Σ_s u_js − Σ_s v_js)
    deadline: Σ_{j ≤ D_g} e_gj h + s_g ≥ E_g    (E_g: AC energy due at the end of D_g)
    cap:      Σ_j e_gj h ≤ E_g^max               (no more than the group wants)
    cost      K h y_j + M h x_j + M s_g + (ε_t (j + 1) + ε_l ℓ_j) h e_gj

Costs, against the LP's own (``slack`` = the energy-bound slack cost, ≥ 1000 /kWh and ≥
10 × the steepest deviation cost): a missed EV energy (``M = slack``) and an export excess
(``M``) are the dearest things in the plan; curtailment ``K = slack / 2`` — dearer than
any deviation from the target (so an import cap or a tracking error never buys it) and
than battery throughput or heater shifting (ε, ε_w): PV is curtailed only where the
export limit would otherwise be crossed and the batteries, tanks and EVs cannot take the
power (a last resort); the EV costs only break ties: ε_l = 2e-3 /kWh × ℓ_j, the interval's
forecast load (base − PV) scaled to 0 at the horizon's lowest and 1 at its highest, so
EVs fill the valleys and leave the peak hours' headroom alone, and ε_t = 1e-4 /kWh per
interval toward earlier charging (less risk from a later forecast error); both stay
below the battery throughput cost, so no battery energy is moved for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import sparse

__all__ = ["DERBlock", "DERInput", "DERPlan", "EVGroup", "extend"]

FloatArray = npt.NDArray[np.float64]

#: cost per kWh per interval of charging later (tie break toward earlier charging)
EV_TIME_COST = 1e-4
#: cost per kWh of charging at the horizon's highest forecast load (0 at its lowest):
#: EVs fill the valleys and leave the peak hours' headroom alone (below ε = 0.01, so it
#: never buys battery throughput)
EV_LOAD_COST = 2e-3


@dataclass(frozen=True)
class EVGroup:
    """EVs planned together (a departure cohort): AC energies and powers.

    Attributes:
        energy_kwh: AC energy due by the end of interval ``deadline`` (kWh).
        max_kwh: at most this much in the horizon (kWh, ≥ ``energy_kwh``).
        p_max_kw: power bound per interval (kW), ``(J,)``; 0 where no EV is plugged.
        deadline: last interval index of the deadline (``J − 1``: the horizon end).
    """

    energy_kwh: float
    max_kwh: float
    p_max_kw: FloatArray
    deadline: int


@dataclass(frozen=True)
class DERInput:
    """PV and EV inputs on the LP grid (length ``J``).

    Attributes:
        pv_kw: available PV fleet power forecast (kW) or ``None``.
        export_limit_kw: reverse-flow cap (kW): the net load stays ≥ −limit; ``None``.
        ev_groups: the EV groups (:class:`EVGroup`).
    """

    pv_kw: FloatArray | None = None
    export_limit_kw: float | None = None
    ev_groups: list[EVGroup] = field(default_factory=list)


@dataclass(frozen=True)
class DERPlan:
    """Planned PV curtailment and EV charging (kW per interval).

    Attributes:
        pv_curtail_kw: PV curtailed (kW), ``(J,)``.
        ev_kw: EV fleet charging (kW), ``(J,)``.
        ev_group_kw: per group (kW), ``(G, J)``.
        ev_shortfall_kwh: energy each group misses at its deadline (kWh), ``(G,)``.
        export_excess_kw: planned net load below −export_limit (kW), ``(J,)``.
    """

    pv_curtail_kw: FloatArray
    ev_kw: FloatArray
    ev_group_kw: FloatArray
    ev_shortfall_kwh: FloatArray
    export_excess_kw: FloatArray


@dataclass
class DERBlock:
    """The columns and rows :func:`extend` adds (offsets into the LP's variable vector)."""

    a_eq_cols: sparse.csr_array  # (n_eq, n_new): new columns' entries in existing eq rows
    a_ub_rows: sparse.csr_array  # (n_new_ub, n_old + n_new)
    b_ub: FloatArray
    cost: FloatArray
    lo: FloatArray
    hi: FloatArray
    off: dict[str, int]
    n_groups: int

    def decode(self, x: FloatArray, J: int) -> DERPlan:
        """The plan's DER part from the LP solution ``x``."""
        o, G = self.off, self.n_groups
        curt = x[o["y"] : o["y"] + J] if "y" in o else np.zeros(J)
        exc = x[o["x"] : o["x"] + J] if "x" in o else np.zeros(J)
        grp = x[o["e"] : o["e"] + G * J].reshape(G, J) if G else np.zeros((0, J))
        short = x[o["s"] : o["s"] + G] if G else np.zeros(0)
        return DERPlan(
            pv_curtail_kw=np.maximum(curt, 0.0),
            ev_kw=np.maximum(grp.sum(axis=0), 0.0),
            ev_group_kw=np.maximum(grp, 0.0),
            ev_shortfall_kwh=np.maximum(short, 0.0),
            export_excess_kw=np.maximum(exc, 0.0),
        )


def extend(
    d: DERInput,
    *,
    J: int,
    S: int,
    h: float,
    n_old: int,
    n_eq: int,
    dev_row: int,
    off_u: int,
    off_v: int,
    target_kw: FloatArray,
    slack_cost: float,
    base_kw: FloatArray | None = None,
) -> DERBlock:
    """Columns and rows for ``d`` (module docstring); ``dev_row``: first deviation row."""
    jj = np.arange(J)
    names: list[tuple[str, int]] = []
    if d.pv_kw is not None:
        names.append(("y", J))
    if d.export_limit_kw is not None:
        names.append(("x", J))
    G = len(d.ev_groups)
    if G:
        names += [("e", G * J), ("s", G)]
    off, n_new = {}, 0
    for name, size in names:
        off[name] = n_old + n_new
        n_new += size
    cost, lo, hi = np.zeros(n_new), np.zeros(n_new), np.full(n_new, np.inf)
    er: list[npt.NDArray[Any]] = []
    ec: list[npt.NDArray[Any]] = []  # eq entries (rows, local columns)
    if "y" in off:
        c0 = off["y"] - n_old
        assert d.pv_kw is not None
        er.append(dev_row + jj)
        ec.append(c0 + jj)
        hi[c0 : c0 + J] = np.maximum(d.pv_kw, 0.0)
        cost[c0 : c0 + J] = 0.5 * slack_cost * h
    if "e" in off:
        c0 = off["e"] - n_old
        g_idx = np.repeat(np.arange(G), J)
        j_idx = np.tile(jj, G)
        er.append(dev_row + j_idx)
        ec.append(c0 + g_idx * J + j_idx)
        hi[c0 : c0 + G * J] = np.concatenate([np.maximum(g.p_max_kw, 0.0) for g in d.ev_groups])
        load = np.zeros(J) if base_kw is None else np.asarray(base_kw, dtype=np.float64)
        span = float(load.max() - load.min())
        rel = (load - load.min()) / span if span > 0 else np.zeros(J)
        cost[c0 : c0 + G * J] = (EV_TIME_COST * (j_idx + 1) + EV_LOAD_COST * rel[j_idx]) * h
        cost[off["s"] - n_old :] = slack_cost
    rows = np.concatenate(er) if er else np.zeros(0)
    cols = np.concatenate(ec) if ec else np.zeros(0)
    a_eq_cols = sparse.csr_array((np.ones(rows.size), (rows, cols)), shape=(n_eq, n_new))
    ur: list[npt.NDArray[Any]] = []
    uc: list[npt.NDArray[Any]] = []
    uv: list[npt.NDArray[Any]] = []
    b_ub: list[npt.NDArray[Any]] = []
    r0 = 0
    if "x" in off:
        assert d.export_limit_kw is not None
        seg = np.arange(J * S)
        ur += [seg // S, seg // S, jj]
        uc += [off_u + seg, off_v + seg, off["x"] + jj]
        uv += [-np.ones(J * S), np.ones(J * S), -np.ones(J)]
        b_ub.append(target_kw + d.export_limit_kw)
        cost[off["x"] - n_old : off["x"] - n_old + J] = slack_cost * h
        r0 = J
    for g, grp in enumerate(d.ev_groups):
        ej = off["e"] + g * J + jj
        due = jj[: min(grp.deadline, J - 1) + 1]
        # deadline: -sum_{j<=D} e h - s <= -E ; cap: sum_j e h <= E_max
        ur += [np.full(due.size, r0), np.array([r0]), np.full(J, r0 + 1)]
        uc += [off["e"] + g * J + due, np.array([off["s"] + g]), ej]
        uv += [np.full(due.size, -h), np.array([-1.0]), np.full(J, h)]
        b_ub.append(np.array([-grp.energy_kwh, max(grp.max_kwh, grp.energy_kwh)]))
        r0 += 2
    a_ub_rows = sparse.csr_array(
        (
            np.concatenate(uv) if uv else np.zeros(0),
            (np.concatenate(ur) if ur else np.zeros(0), np.concatenate(uc) if uc else np.zeros(0)),
        ),
        shape=(r0, n_old + n_new),
    )
    return DERBlock(
        a_eq_cols=a_eq_cols,
        a_ub_rows=a_ub_rows,
        b_ub=np.concatenate(b_ub) if b_ub else np.zeros(0),
        cost=cost,
        lo=lo,
        hi=hi,
        off=off,
        n_groups=G,
    )

"""The aggregate linear program shared by the MPC and the perfect-foresight optimum.

Grid: ``J`` intervals of ``h`` hours. Per interval ``j`` (all kW, energies kWh)::

    variables  c_j, d_j ∈ [0, P_b]      battery fleet charge / discharge (AC)
               w_j ∈ [0, P_w]            water-heater fleet electric power
               B_{j+1}, W_{j+1}          battery energy, heat above inlet (fleet totals)
               u_js, v_js ∈ [0, δ]       positive / negative deviation segments
               σ                          soft-bound slacks (energy), cost ≥ 1e3 /kWh and
                                          10 × the steepest deviation cost
    B_{j+1} = B_j + (η_c c_j − d_j / η_d − s_b) h
    W_{j+1} = W_j + (w_j − L − q_j) h           (q_j: forecast draw heat, L: losses)
    base_j + c_j − d_j + w_j − target_j = Σ_s u_js − Σ_s v_js      (the deviation)
    w_j ≤ k (W_max − W_j)                        (room bound, W_j at the interval start)
    |w_j − w_{j−1}| ≤ R                           (heater ramp, j ≥ 1)
    w_j − L − q_j = w⁺_j − w⁻_j                   (heater energy shifted, w± ≥ 0)
    B_min ≤ B ≤ B_max,  W_min ≤ W ≤ W_max,  B_k ≥ B_ref, W_k ≥ W_ref at day ends k
    minimise  Σ_j h [ Σ_s (2s+1) δ (a u_js + b v_js) + ε (c_j + d_j) + ε_w (w⁺_j + w⁻_j) ]

Objectives (``objective``; ``target_kw`` is the target, the cap or the floor):

* ``track``: ``a = b = 1`` — symmetric squared error;
* ``cap``: ``a = excess_weight`` (10), ``b = 0`` — only the excess above the cap costs,
  heavily (any kWh above the cap costs ≥ 10 δ, well above the tie-breaking costs ε, ε_w,
  so there is none where the fleet can avoid it, and where it cannot the squared
  excess — hence the peak — is minimal); below the cap the net load is free;
* ``floor``: the mirror (``a = 0``, ``b = excess_weight``).

End-of-horizon energy (``day_ends``): ``end_energy = "return"`` passes the starting
energies as references (the fleet ends where it started, so no controller wins by
emptying it; with ``day_end_exact`` the battery energy is held at the reference, not
above it); ``"free"`` passes none.

The segment costs make the objective the piecewise-linear interpolation of
``Σ h · dev²`` at the breakpoints (multiples of ``δ``, or ``breakpoints_kw``: the MPC uses
geometric ones, ``δ_0 ·1.15^s`` from 1/4000 of the fleet power, so a deviation of a few
tenths of a per cent of a large fleet is already priced quadratically — with uniform
segments of 1/200 of the fleet power every deviation below that cost the same per kWh,
an absolute-error objective with no reason to spread a shortfall evenly; exact at the
breakpoints, convex), so the LP minimises (approximately) the squared tracking error —
the RMSE metric — and not the absolute error, whose optimum is degenerate for
energy-limited peaks. Solved with HiGHS (``scipy.optimize.linprog(method="highs")``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import sparse
from scipy.optimize import linprog

from sef.control.controllers._lp_der import DERInput, DERPlan, extend

__all__ = ["LPInput", "LPPlan", "solve_plan"]

log = logging.getLogger("sef.control.lp")

FloatArray = npt.NDArray[np.float64]
_SLACK_COST = 1e3


@dataclass(frozen=True)
class LPInput:
    """Aggregate model and forecasts on the LP grid (length ``J``).

    Attributes:
        h: interval length (h).
        base_kw, target_kw, draw_kw: forecasts (kW); ``draw_kw`` is draw heat.
        b_p_max, b_e0, b_e_min, b_e_max, b_eta_c, b_eta_d, b_standby_kw: battery fleet.
        w_p_max, w_e0, w_e_min, w_e_max, w_loss_kw: water-heater fleet.
        w_room_rate_per_h: ``k`` (1/h) of the room bound ``w_j ≤ k (W_max − W_j)``: a
            Load Up only starts heaters with room, so a nearly full fleet cannot take its
            rated power; ``k`` = element power / heat room of one deadband.
        day_ends: ``(j, B_ref, W_ref)``: energies required at the end of interval ``j``.
        seg_kw: deviation segment width δ (kW); ``segments``: number of bounded segments.
        breakpoints_kw: instead of ``seg_kw``/``segments``, the segment ends
            ``0 < b_1 < … < b_S`` (kW; e.g. geometric, fine near zero and wide far out).
        objective: ``"track"`` | ``"cap"`` | ``"floor"`` (module docstring).
        day_end_exact: at each day end the battery energy is held *at* its reference (soft
            upper bound too), not only above it: ``return`` means return, and the scoring
            charges a surplus like a deficit. (Heat keeps ``≥``: tanks left warmer by the
            draws of the last hours are not forced down.)
        w_ramp_kw: largest change of heater fleet power between two intervals (kW): the
            real-time layer moves the heaters by at most ``max_step_kw`` per step, so a
            plan beyond ``m · max_step_kw`` per interval could not be realised.
        excess_weight: cost factor on the violating side for ``cap`` / ``floor``.
        throughput_cost: ε per kWh of battery throughput (tie breaker, wear).
        wh_shift_cost: cost per kWh of heater energy moved away from its expected
            uncontrolled demand ``L + q_j`` (each event has a comfort and rebound cost).
        der: PV curtailment, export limit and EV groups (:mod:`._lp_der`); ``base_kw`` is
            then net of the forecast PV. ``None``: the LP without them.
    """

    h: float
    base_kw: FloatArray
    target_kw: FloatArray
    draw_kw: FloatArray
    b_p_max: float
    b_e0: float
    b_e_min: float
    b_e_max: float
    b_eta_c: float
    b_eta_d: float
    b_standby_kw: float
    w_p_max: float
    w_e0: float
    w_e_min: float
    w_e_max: float
    w_loss_kw: float
    day_ends: list[tuple[int, float, float]] = field(default_factory=list)
    w_room_rate_per_h: float = 4.0
    seg_kw: float = 2.0
    segments: int = 24
    throughput_cost: float = 0.01
    wh_shift_cost: float = 0.05
    objective: str = "track"
    excess_weight: float = 10.0
    w_ramp_kw: float = float("inf")
    breakpoints_kw: tuple[float, ...] | None = None
    day_end_exact: bool = False
    der: DERInput | None = None

    def breakpoints(self) -> FloatArray:
        """Segment starts ``0 = b_0 < b_1 < …`` (kW); the last segment is unbounded."""
        if self.breakpoints_kw is None:
            return np.arange(self.segments + 1, dtype=np.float64) * self.seg_kw
        b = np.concatenate([[0.0], np.asarray(self.breakpoints_kw, dtype=np.float64)])
        if np.any(np.diff(b) <= 0):
            raise ValueError("breakpoints_kw must be increasing and > 0")
        return b

    def side_weights(self) -> tuple[float, float]:
        """Cost factors ``(a, b)`` of the positive / negative deviation (module docstring)."""
        if self.objective == "track":
            return 1.0, 1.0
        if self.objective == "cap":
            return self.excess_weight, 0.0
        if self.objective == "floor":
            return 0.0, self.excess_weight
        raise ValueError(f"objective must be 'track', 'cap' or 'floor', got {self.objective!r}")


@dataclass(frozen=True)
class LPPlan:
    """Optimal plan (fleet totals per interval).

    Attributes:
        battery_kw: AC battery power (kW, + = charge).
        wh_kw: water-heater power (kW).
        deviation_kw: planned net − target (kW).
        battery_kwh, wh_kwh: energies at the interval ends (kWh).
        status: HiGHS status message.
        der: planned PV curtailment and EV charging (``None`` without ``LPInput.der``).
    """

    battery_kw: FloatArray
    wh_kw: FloatArray
    deviation_kw: FloatArray
    battery_kwh: FloatArray
    wh_kwh: FloatArray
    status: str
    der: DERPlan | None = None

    @property
    def rmse_kw(self) -> float:
        """RMS of the planned deviation (kW)."""
        return float(np.sqrt(np.mean(self.deviation_kw**2)))


def solve_plan(p: LPInput) -> LPPlan:
    """Solve the LP (see module docstring); raises ``RuntimeError`` if HiGHS fails.

    A state outside the model's hard limits (measured in live mode: a tank fuller than
    the model's full, an empty battery that still loses standby power) or draws beyond
    what the heater ramp can follow make the LP infeasible; it is then solved again
    relaxed (stored energies below 0 and the room bound only as soft as the energy bounds,
    no heater ramp), and that is logged.
    """
    try:
        return _solve(p, relaxed=False)
    except _Infeasible as exc:
        log.warning("LP infeasible (%s): solved again without the hard state limits", exc)
        try:
            return _solve(p, relaxed=True)
        except _Infeasible as again:
            raise RuntimeError(f"LP failed: {again}") from again


class _Infeasible(RuntimeError):
    """HiGHS found no solution (its message)."""


def _solve(p: LPInput, relaxed: bool) -> LPPlan:
    bps = p.breakpoints()
    J, S, h = len(p.base_kw), bps.size, p.h
    p.side_weights()  # checks the objective
    # variable blocks
    names = ["c", "d", "w", "B", "W", "u", "v", "wp", "wm", "sbl", "sbh", "swl", "swh"]
    sizes = [J, J, J, J, J, J * S, J * S, J, J, J, J, J, J]
    off = dict(zip(names, np.cumsum([0, *sizes[:-1]]).tolist(), strict=True))
    nvar = int(sum(sizes))
    jj = np.arange(J)
    rows: list[FloatArray] = []
    cols: list[FloatArray] = []
    vals: list[FloatArray] = []

    def put(r: npt.ArrayLike, c: npt.ArrayLike, v: npt.ArrayLike) -> None:
        r_, c_ = np.asarray(r), np.asarray(c)
        rows.append(r_.astype(np.float64))
        cols.append(c_.astype(np.float64))
        vals.append(np.broadcast_to(np.asarray(v, dtype=np.float64), r_.shape).copy())

    # battery balance rows 0..J-1: B_{j+1} - B_j - (eta_c c - d/eta_d) h = -s_b h (+B0 at j=0)
    put(jj, off["B"] + jj, 1.0)
    put(jj[1:], off["B"] + jj[:-1], -1.0)
    put(jj, off["c"] + jj, -p.b_eta_c * h)
    put(jj, off["d"] + jj, h / p.b_eta_d)
    rhs_b = np.full(J, -p.b_standby_kw * h)
    rhs_b[0] += p.b_e0
    # water-heater balance rows J..2J-1
    put(J + jj, off["W"] + jj, 1.0)
    put(J + jj[1:], off["W"] + jj[:-1], -1.0)
    put(J + jj, off["w"] + jj, -h)
    rhs_w = -(p.w_loss_kw + p.draw_kw) * h
    rhs_w[0] += p.w_e0
    # deviation rows 2J..3J-1: c - d + w - sum u + sum v = target - base
    r = 2 * J + jj
    put(r, off["c"] + jj, 1.0)
    put(r, off["d"] + jj, -1.0)
    put(r, off["w"] + jj, 1.0)
    seg = np.arange(J * S)
    put(2 * J + seg // S, off["u"] + seg, -1.0)
    put(2 * J + seg // S, off["v"] + seg, 1.0)
    rhs_dev = p.target_kw - p.base_kw
    # shift rows 3J..4J-1: w - wp + wm = L + q  (wp, wm: heater power above/below natural)
    put(3 * J + jj, off["w"] + jj, 1.0)
    put(3 * J + jj, off["wp"] + jj, -1.0)
    put(3 * J + jj, off["wm"] + jj, 1.0)
    rhs_nat = p.w_loss_kw + p.draw_kw
    a_eq = sparse.csr_array(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(4 * J, nvar)
    )
    b_eq = np.concatenate([rhs_b, rhs_w, rhs_dev, rhs_nat])
    # soft energy bounds as inequalities: -B - sbl <= -Bmin ; B - sbh <= Bmax (same for W)
    lb_b = np.full(J, p.b_e_min)
    lb_w = np.full(J, p.w_e_min)
    ub_b = np.full(J, p.b_e_max)
    ub_w = np.full(J, p.w_e_max)
    for j, b_ref, w_ref in p.day_ends:
        if 0 <= j < J:
            lb_b[j] = max(lb_b[j], min(b_ref, p.b_e_max))
            lb_w[j] = max(lb_w[j], min(w_ref, p.w_e_max))
            if p.day_end_exact:  # "return" means return: no surplus either (soft)
                ub_b[j] = lb_b[j]
    ones = np.ones(J)
    k_room = p.w_room_rate_per_h
    jr = np.arange(J - 1)
    ramp = sparse.csr_array(
        (
            np.concatenate([np.ones(J - 1), -np.ones(J - 1)]),
            (np.concatenate([jr, jr]), np.concatenate([off["w"] + jr + 1, off["w"] + jr])),
        ),
        shape=(J - 1, nvar),
    )
    a_ub = sparse.vstack(
        [
            sparse.csr_array((-ones, (jj, off["B"] + jj)), shape=(J, nvar))
            - sparse.csr_array((ones, (jj, off["sbl"] + jj)), shape=(J, nvar)),
            sparse.csr_array((ones, (jj, off["B"] + jj)), shape=(J, nvar))
            - sparse.csr_array((ones, (jj, off["sbh"] + jj)), shape=(J, nvar)),
            sparse.csr_array((-ones, (jj, off["W"] + jj)), shape=(J, nvar))
            - sparse.csr_array((ones, (jj, off["swl"] + jj)), shape=(J, nvar)),
            sparse.csr_array((ones, (jj, off["W"] + jj)), shape=(J, nvar))
            - sparse.csr_array((ones, (jj, off["swh"] + jj)), shape=(J, nvar)),
            # room bound: w_j + k W_{j} <= k W_max  (W_0 = w_e0 is a constant);
            # relaxed: the part of W_{j-1} above W_max (its slack) leaves no less room
            sparse.csr_array((ones, (jj, off["w"] + jj)), shape=(J, nvar))
            + sparse.csr_array(
                (np.full(J - 1, k_room), (jj[1:], off["W"] + jj[:-1])), shape=(J, nvar)
            )
            - sparse.csr_array(
                (np.full(J - 1, k_room if relaxed else 0.0), (jj[1:], off["swh"] + jj[:-1])),
                shape=(J, nvar),
            ),
            # heater ramp: ±(w_j - w_{j-1}) <= R for j >= 1
            ramp,
            -ramp,
        ]
    ).tocsr()
    room_rhs = np.full(J, k_room * p.w_e_max)
    room_rhs[0] -= k_room * p.w_e0
    room_rhs = np.maximum(room_rhs, 0.0)
    ramp_kw = p.w_ramp_kw if np.isfinite(p.w_ramp_kw) and not relaxed else 1e9
    r_rhs = np.full(2 * (J - 1), ramp_kw)
    b_ub = np.concatenate([-lb_b, ub_b, -lb_w, ub_w, room_rhs, r_rhs])
    # costs and bounds
    cost = np.zeros(nvar)
    cost[off["c"] : off["c"] + J] = p.throughput_cost * h
    cost[off["d"] : off["d"] + J] = p.throughput_cost * h
    # slope of x² between breakpoints b_s, b_{s+1}: b_s + b_{s+1}; the tail: 2 b_last
    slopes = bps + np.append(bps[1:], bps[-1])
    w_pos, w_neg = p.side_weights()
    cost[off["u"] : off["u"] + J * S] = np.tile(slopes, J) * h * w_pos
    cost[off["v"] : off["v"] + J * S] = np.tile(slopes, J) * h * w_neg
    cost[off["wp"] : off["wp"] + 2 * J] = p.wh_shift_cost * h
    # the energy bounds must stay dearer than any deviation they could buy
    slack_cost = max(_SLACK_COST, 10.0 * float(slopes[-1]) * max(w_pos, w_neg))
    cost[off["sbl"] :] = slack_cost
    lo = np.zeros(nvar)
    if relaxed:  # stored energies only softly bounded (their slacks cost as before)
        lo[off["B"] : off["B"] + J] = -np.inf
        lo[off["W"] : off["W"] + J] = -np.inf
    hi = np.full(nvar, np.inf)
    hi[off["c"] : off["c"] + J] = p.b_p_max
    hi[off["d"] : off["d"] + J] = p.b_p_max
    hi[off["w"] : off["w"] + J] = p.w_p_max
    seg_hi = np.tile(np.append(np.diff(bps), np.inf), J)
    hi[off["u"] : off["u"] + J * S] = seg_hi
    hi[off["v"] : off["v"] + J * S] = seg_hi
    block = None
    if p.der is not None:  # issue 17: PV curtailment, export limit, EV groups
        block = extend(
            p.der,
            J=J,
            S=S,
            h=h,
            n_old=nvar,
            n_eq=4 * J,
            dev_row=2 * J,
            off_u=off["u"],
            off_v=off["v"],
            target_kw=p.target_kw,
            slack_cost=slack_cost,
            base_kw=p.base_kw,
        )
        n_new = block.cost.size
        a_eq = sparse.hstack([a_eq, block.a_eq_cols]).tocsr()
        a_ub = sparse.vstack(
            [sparse.hstack([a_ub, sparse.csr_array((a_ub.shape[0], n_new))]), block.a_ub_rows]
        ).tocsr()
        b_ub = np.concatenate([b_ub, block.b_ub])
        cost, lo, hi = (
            np.concatenate(z) for z in ((cost, block.cost), (lo, block.lo), (hi, block.hi))
        )
    res = linprog(
        cost,
        A_ub=a_ub,
        b_ub=b_ub,
        A_eq=a_eq,
        b_eq=b_eq,
        bounds=np.column_stack([lo, hi]),
        method="highs",
    )
    if res.x is None:
        raise _Infeasible(str(res.message))
    x = np.asarray(res.x, dtype=np.float64)

    def blk(name: str, size: int = J) -> FloatArray:
        return x[off[name] : off[name] + size]

    dev = blk("u", J * S).reshape(J, S).sum(axis=1) - blk("v", J * S).reshape(J, S).sum(axis=1)
    return LPPlan(
        battery_kw=blk("c") - blk("d"),
        wh_kw=blk("w").copy(),
        deviation_kw=dev,
        battery_kwh=blk("B").copy(),
        wh_kwh=blk("W").copy(),
        status=str(res.message),
        der=block.decode(x, J) if block is not None else None,
    )

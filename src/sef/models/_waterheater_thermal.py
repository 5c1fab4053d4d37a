"""Vectorized thermal kernels of the stratified water-heater tank.

Pure numpy functions used by :mod:`sef.models.waterheater`. Every array of
per-device temperatures has shape ``(n, N)``: ``n`` devices, ``N`` nodes, column
0 is the **top** node (outlet), column ``N - 1`` the bottom node (cold inlet).

All functions are free of Python loops over devices; the only loops are over
nodes. Units: temperatures in °C, heat capacities in J/K, conductances in W/K,
volumes in L, energies in J, time in s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

#: Specific heat of water, J/(kg·K) (same value as NREL OCHRE, 4.183 kJ/kg·K).
WATER_CP_J_PER_KG_K = 4183.0
#: Density of water, kg/L (OCHRE uses 1 kg/L; the 1–2 % error at 50 °C is ignored).
WATER_DENSITY_KG_PER_L = 1.0
#: Volumetric heat capacity of water, J/(L·K).
WATER_C_J_PER_L_K = WATER_CP_J_PER_KG_K * WATER_DENSITY_KG_PER_L
#: Thermal conductivity of water, W/(m·K) (OCHRE value).
WATER_K_W_PER_M_K = 0.6406

#: Height of the upper element below the tank top, as a fraction of the water
#: column (OCHRE: node 3 of 12, i.e. the centre 2.5/12 of the height).
UPPER_ELEMENT_POSITION = 2.5 / 12.0
#: Height of the lower element below the tank top (OCHRE: node 10 of 12).
LOWER_ELEMENT_POSITION = 9.5 / 12.0


def node_fractions(nodes: int) -> FloatArray:
    """Volume fraction of each node, top first.

    Parameters
    ----------
    nodes : int
        Number of nodes, ``N >= 1``.

    Returns
    -------
    numpy.ndarray
        Shape ``(N,)``, sums to 1. Two nodes follow OCHRE's ``TwoNodeWaterModel``
        (top 1/3, bottom 2/3); any other count uses equal volumes.
    """
    if nodes < 1:
        raise ValueError(f"nodes must be >= 1, got {nodes}")
    if nodes == 2:
        return np.array([1.0 / 3.0, 2.0 / 3.0])
    return np.full(nodes, 1.0 / nodes)


def node_at(position: float, fractions: FloatArray) -> int:
    """Index of the node containing a height position.

    Parameters
    ----------
    position : float
        Depth below the top of the water column as a fraction of its height, [0, 1].
    fractions : numpy.ndarray
        Node volume fractions, top first.

    Returns
    -------
    int
        Node index (0 = top).
    """
    edges = np.cumsum(fractions)
    found = int(np.searchsorted(edges, position, side="right"))
    return min(found, fractions.size - 1)


@dataclass(frozen=True)
class TankGeometry:
    """Per-device, per-node thermal constants of the tank.

    Attributes
    ----------
    fractions : numpy.ndarray
        Node volume fractions, shape ``(N,)``, top first.
    edges : numpy.ndarray
        Cumulative volume fractions at node boundaries, shape ``(N + 1,)``,
        ``edges[0] = 0`` (top) and ``edges[N] = 1`` (bottom).
    capacity_j_per_k : numpy.ndarray
        Heat capacity of each node, J/K, shape ``(n, N)``.
    ua_node_w_per_k : numpy.ndarray
        Loss conductance of each node to ambient, W/K, shape ``(n, N)``; rows sum
        to the tank UA. Split by node surface area: side area by node volume,
        top disc added to node 0, bottom disc to node N - 1.
    g_between_w_per_k : numpy.ndarray
        Conduction between node ``i`` and ``i + 1``, W/K, shape ``(n, N - 1)``.
    """

    fractions: FloatArray
    edges: FloatArray
    capacity_j_per_k: FloatArray
    ua_node_w_per_k: FloatArray
    g_between_w_per_k: FloatArray


def tank_geometry(
    volume_l: FloatArray, height_m: FloatArray, ua_w_per_k: FloatArray, nodes: int
) -> TankGeometry:
    """Build the per-node RC constants of a vertical cylindrical tank.

    Parameters
    ----------
    volume_l : numpy.ndarray
        Water volume, L, shape ``(n,)``.
    height_m : numpy.ndarray
        Height of the water column, m, shape ``(n,)``.
    ua_w_per_k : numpy.ndarray
        Total loss coefficient of the tank to ambient, W/K, shape ``(n,)``.
    nodes : int
        Number of nodes ``N``.

    Returns
    -------
    TankGeometry
    """
    frac = node_fractions(nodes)
    edges = np.concatenate(([0.0], np.cumsum(frac)))
    edges[-1] = 1.0
    disc_m2 = volume_l / 1000.0 / height_m
    radius_m = np.sqrt(disc_m2 / np.pi)
    side_m2 = 2.0 * np.pi * radius_m * height_m
    total_m2 = side_m2 + 2.0 * disc_m2
    area = side_m2[:, None] * frac[None, :]
    area[:, 0] += disc_m2
    area[:, -1] += disc_m2
    ua_node = ua_w_per_k[:, None] * area / total_m2[:, None]
    capacity = WATER_C_J_PER_L_K * volume_l[:, None] * frac[None, :]
    centre_gap = 0.5 * (frac[:-1] + frac[1:])  # distance between node centres / height
    g = WATER_K_W_PER_M_K * disc_m2[:, None] / (height_m[:, None] * centre_gap[None, :])
    return TankGeometry(frac, edges, capacity, ua_node, g)


def plug_flow_draw(
    temps_c: FloatArray, draw_fraction: FloatArray, inlet_c: FloatArray, geom: TankGeometry
) -> tuple[FloatArray, FloatArray]:
    """Move a drawn volume through the tank as an exact plug flow.

    Hot water leaves at the top, the same volume of inlet water enters at the
    bottom, and every node takes the volume-weighted mean of the water that ends
    up inside it (a conservative remap of the piecewise-constant profile). New
    temperatures are convex combinations of old ones and the inlet temperature,
    so the step never overshoots, for any draw volume (even more than the tank).

    Parameters
    ----------
    temps_c : numpy.ndarray
        Node temperatures, °C, shape ``(n, N)``; not modified.
    draw_fraction : numpy.ndarray
        Drawn volume divided by tank volume, dimensionless, ``>= 0``, shape ``(n,)``.
    inlet_c : numpy.ndarray
        Inlet (mains) temperature, °C, shape ``(n,)``.
    geom : TankGeometry

    Returns
    -------
    new_temps_c : numpy.ndarray
        Node temperatures after the draw, °C, shape ``(n, N)``.
    delivered_k : numpy.ndarray
        Heat carried out by the drawn water above the inlet temperature, per unit
        tank heat capacity, K (multiply by the tank's J/K to get J), shape ``(n,)``.
    """
    n, big_n = temps_c.shape
    frac = geom.fractions
    edges = geom.edges
    width = big_n + 1
    ext = np.empty((n, width))  # col N = inlet
    ext[:, :big_n] = temps_c
    ext[:, big_n] = inlet_c
    cum = np.zeros((n, width))
    heat = temps_c * frac[None, :]
    if big_n <= _FEW_NODES:  # column by column: the same sequential sums, no short rows
        for j in range(big_n):
            np.add(cum[:, j], heat[:, j], out=cum[:, j + 1])
    else:
        np.cumsum(heat, axis=1, out=cum[:, 1:])
    # evaluate the cumulative heat H(x) at x = edges + s  (x in tank-volume fractions from top)
    x = edges[None, :] + draw_fraction[:, None]  # (n, N+1)
    idx = np.searchsorted(edges, x.ravel(), side="right").reshape(x.shape) - 1
    np.clip(idx, 0, big_n, out=idx)
    flat = idx + (np.arange(n) * width)[:, None]  # row-major flat index of [row, idx]
    h_at = np.take(cum, flat) + (x - np.take(edges, idx)) * np.take(ext, flat)
    if big_n <= _FEW_NODES:
        new = np.empty((n, big_n))
        for j in range(big_n):
            np.subtract(h_at[:, j + 1], h_at[:, j], out=new[:, j])
            new[:, j] /= frac[j]
    else:
        new = np.diff(h_at, axis=1) / frac[None, :]
    # heat in the outflow: H(s) - s * T_in  (H(s) evaluated for x = 0 + s = h_at[:, 0])
    delivered = h_at[:, 0] - draw_fraction * inlet_c
    return new, delivered


#: up to this many nodes, row-wise operations on ``(n, N)`` arrays are done column by
#: column (NumPy runs a short row's loop per row: slow for a fleet; same arithmetic)
_FEW_NODES = 4


def take_rows(a: FloatArray, rows: NDArray[np.intp]) -> FloatArray:
    """``a[rows]`` of a C-contiguous ``(n, N)`` array (``np.take`` copies whole rows;
    fancy indexing copies row by row, ~10x slower for a fleet)."""
    return np.asarray(np.take(a, rows, axis=0), dtype=np.float64)


def put_rows(a: FloatArray, rows: NDArray[np.intp], values: FloatArray) -> None:
    """``a[rows] = values`` (``(len(rows), N)``) in place, whole rows at a time."""
    if a.flags.c_contiguous and a.ndim == 2 and a.shape[1] > 0:
        row = np.dtype((np.void, a.dtype.itemsize * a.shape[1]))
        v = np.ascontiguousarray(values, dtype=a.dtype)
        a.view(row).reshape(-1)[rows] = v.view(row).reshape(-1)
    else:
        a[rows] = values


def row_sum(a: FloatArray) -> FloatArray:
    """``a.sum(axis=1)`` of an ``(n, N)`` array, bit for bit, fast for few nodes.

    NumPy reduces each short row in its own inner loop (~15 ms per million rows of two);
    for ``N <= 4`` the same pairwise-sum order is done column-wise (a few vector adds).
    """
    if a.shape[1] > 4 or a.shape[1] == 0:
        return np.asarray(a.sum(axis=1), dtype=np.float64)
    out = a[:, 0].copy()
    for j in range(1, a.shape[1]):  # NumPy's pairwise sum is sequential below 8 terms
        out += a[:, j]
    return out


def passive_heat_j(
    temps_c: FloatArray, ambient_c: FloatArray, geom: TankGeometry, h_s: float
) -> tuple[FloatArray, FloatArray]:
    """Heat gained by each node over ``h_s`` from standby losses and conduction.

    Returns ``(q, loss)``: ``q``, J, shape ``(n, N)`` (losses ``UA_j (T_j - T_amb) h``
    negative; conduction between adjacent nodes sums to zero) and ``loss``, the heat lost
    to ambient per device, J, shape ``(n,)``.
    """
    # -(UA (T - T_amb)) h, in place (a fleet's (n, N) temporaries cost more than the math)
    q = np.empty(temps_c.shape)
    if temps_c.shape[1] <= _FEW_NODES:
        for j in range(temps_c.shape[1]):
            np.subtract(temps_c[:, j], ambient_c, out=q[:, j])
    else:
        np.subtract(temps_c, ambient_c[:, None], out=q)
    np.multiply(geom.ua_node_w_per_k, q, out=q)
    np.negative(q, out=q)
    q *= h_s
    loss = row_sum(q)
    np.negative(loss, out=loss)
    if temps_c.shape[1] > 1:
        flux = np.subtract(temps_c[:, :-1], temps_c[:, 1:])
        np.multiply(geom.g_between_w_per_k, flux, out=flux)
        flux *= h_s
        q[:, :-1] -= flux
        q[:, 1:] += flux
    return q, loss


def mix_inversions(temps_c: FloatArray, fractions: FloatArray, tol_k: float = 1e-2) -> FloatArray:
    """Mix temperature inversions (colder water above warmer water) in place.

    Buoyancy mixes any node that is colder than a node below it. The result is
    the volume-weighted isotonic (non-increasing from top) profile, which keeps
    the total heat exactly: ``T*_i = min_{j<=i} max_{k>=i} mean(T[j..k])``.
    Only devices with an inversion larger than ``tol_k`` are touched.

    Parameters
    ----------
    temps_c : numpy.ndarray
        Node temperatures, °C, shape ``(n, N)``; modified in place and returned.
    fractions : numpy.ndarray
        Node volume fractions, shape ``(N,)``.
    tol_k : float, default 0.01
        Inversion threshold, K (OCHRE's value). Smaller inversions (a top node
        cooled a little more by its lid) are left until they grow past it; this
        keeps the mixing off most devices in most steps.

    Returns
    -------
    numpy.ndarray
        ``temps_c``.
    """
    big_n = temps_c.shape[1]
    if big_n < 2:
        return temps_c
    viol = np.diff(temps_c, axis=1) > tol_k
    if not viol.any():
        return temps_c
    count = viol.sum(axis=1) if big_n > 2 else viol[:, 0].astype(np.int64)
    # fast path: one inverted pair (i, i+1) whose mixture fits between its neighbours
    single = np.nonzero(count == 1)[0]
    if single.size:
        ts = take_rows(temps_c, single)
        i = viol[single].argmax(axis=1)
        rows = np.arange(single.size)
        f_i, f_j = fractions[i], fractions[i + 1]
        v = (f_i * ts[rows, i] + f_j * ts[rows, i + 1]) / (f_i + f_j)
        above = np.where(i > 0, ts[rows, np.maximum(i - 1, 0)], np.inf)
        below = np.where(i + 2 < big_n, ts[rows, np.minimum(i + 2, big_n - 1)], -np.inf)
        ok = (v <= above) & (v >= below)
        temps_c[single[ok], i[ok]] = v[ok]
        temps_c[single[ok], i[ok] + 1] = v[ok]
        count[single[ok]] = 0
    inverted = np.nonzero(count)[0]
    if inverted.size == 0:
        return temps_c
    t = temps_c[inverted]
    if big_n == 2:
        mean = t @ fractions
        temps_c[inverted] = mean[:, None]
        return temps_c
    inv_den, neg, pos = _mixing_tables(fractions)
    cum_h = np.zeros((big_n + 1, t.shape[0]))  # node-major so reductions run over slabs
    np.cumsum(t.T * fractions[:, None], axis=0, out=cum_h[1:])
    # a[kk, j] = A[j, k] = mean of nodes j..k for k = N-1-kk >= j: k is reversed so the
    # running maximum over k >= i becomes a forward accumulate along axis 0
    a = cum_h[:0:-1, None, :] - cum_h[None, :-1, :]  # (kk, j, m)
    a *= inv_den
    a += neg  # -inf where k < j
    for kk in range(1, big_n):  # running max: a[kk, j] = max_{k >= i} A[j, k], i = N-1-kk
        np.maximum(a[kk - 1], a[kk], out=a[kk])
    a += pos  # +inf where j > i
    temps_c[inverted] = a.min(axis=1)[::-1].T
    return temps_c


_TABLES: dict[bytes, tuple[FloatArray, FloatArray, FloatArray]] = {}


def _mixing_tables(fractions: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Constant ``(N, N, 1)`` tables of :func:`mix_inversions`, indexed ``[kk, j]``."""
    key = fractions.tobytes()
    if key not in _TABLES:
        big_n = fractions.size
        cum_w = np.concatenate(([0.0], np.cumsum(fractions)))
        k = (big_n - 1 - np.arange(big_n))[:, None]  # k (or i) for row kk
        j = np.arange(big_n)[None, :]
        valid = k >= j
        den = np.where(valid, cum_w[np.minimum(k + 1, big_n)] - cum_w[j], 1.0)
        inv_den = np.where(valid, 1.0 / den, 0.0)[:, :, None]
        neg = np.where(valid, 0.0, -np.inf)[:, :, None]
        pos = np.where(valid, 0.0, np.inf)[:, :, None]  # j <= i, with i = N-1-kk
        _TABLES[key] = (inv_den, neg, pos)
    return _TABLES[key]

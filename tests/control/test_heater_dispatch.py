"""Heater dispatch at scale, cycle by cycle on the real tank model (issue 14 item 5).

Each cycle: the model's telemetry becomes an :class:`Observation`, the dispatcher answers
with commands, the commands are applied as CTA-2045 events and the tanks step one minute
(no draws, so every change of fleet power is caused or predicted by the dispatcher).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import numpy.typing as npt

from control_support import small_scenario
from sef.control.controllers._dispatch import FleetInfo, WaterHeaterDispatcher
from sef.control.controllers._heaters import HeaterPowerEstimator, ramp_bound_kw
from sef.control.controllers.base import WH_KEEP, WH_LOAD_UP, WH_NORMAL, WH_SHED, Observation
from sef.models.waterheater import WaterHeaterModel
from sef.models.waterheater_dr import DRMode

N = 600  # tanks; 0.5 % of 600 x 4.5 kW = 13.5 kW -> R = 13.5 kW/min, 6 switches/step
DT = 60.0


class Plant:
    """N real tanks and a dispatcher, stepped one minute per cycle."""

    def __init__(self, n: int = N, event_s: int = 1200, initial_c: float | None = None) -> None:
        sc = small_scenario(n_b=0, n_w=n)
        self.info = FleetInfo.from_scenario(sc)
        self.wh = WaterHeaterDispatcher(self.info, event_s=event_s)
        params = sc.wh_params
        if initial_c is not None:
            params = replace(params, initial_c=np.full(n, initial_c))
        self.model = WaterHeaterModel(params, n=n, dr=sc.wh_dr)
        self.k = 0
        self.power = np.zeros(n)

    def obs(self) -> Observation:
        return Observation(
            step=self.k,
            t_s=self.k * DT,
            dt_s=DT,
            net_kw=0.0,
            battery_energy_kwh=np.zeros(0),
            battery_power_kw=np.zeros(0),
            wh_power_kw=self.power.copy(),
            wh_energy_kwh=self.model.stored_energy_kwh,
            wh_mode=self.model.mode.copy(),
        )

    def cycle(self, plan_kw: float) -> tuple[Observation, npt.NDArray[np.int64], float]:
        o = self.obs()
        cmd, est = self.wh.dispatch(o, plan_kw)
        m = self.model
        for code, fn in ((WH_SHED, m.shed), (WH_LOAD_UP, m.load_up)):
            idx = np.nonzero(cmd == code)[0]
            if idx.size:
                fn(idx, self.wh.event_s)
        end = np.nonzero(cmd == WH_NORMAL)[0]
        if end.size:
            m.end_shed(end)
        self.power = m.step(DT, 0.0)
        self.k += 1
        return o, cmd, est


def assert_commands_within_bound(
    plant: Plant, o: Observation, cmd: npt.NDArray[np.int64], est: float
) -> None:
    """No command pushes the estimated fleet power beyond last power ± (R + ½ element):
    beyond it upward, no heater was started; downward, none was shed (what remains is
    natural change the estimate predicts, e.g. tanks reaching their setpoint)."""
    p_last, lim = float(o.wh_power_kw.sum()), plant.wh.max_step_kw + 2.25 + 1e-6
    fresh = (cmd == WH_SHED) & (o.wh_mode != int(DRMode.SHED))
    if est > p_last + lim:
        assert not np.any((cmd == WH_LOAD_UP) | (cmd == WH_NORMAL)), (est, p_last)
    if est < p_last - lim:
        assert not np.any(fresh), (est, p_last)


def test_ramp_bound_value() -> None:
    # 0.5 % of the rated element power per minute, at least two elements
    assert ramp_bound_kw(np.full(5000, 4.5), 60.0) == 112.5
    assert ramp_bound_kw(np.full(50, 4.5), 60.0) == 9.0
    assert ramp_bound_kw(np.full(5000, 4.5), 30.0) == 56.25


def test_load_up_is_staggered_and_the_fleet_power_ramps_within_the_bound() -> None:
    plant = Plant()
    r = plant.wh.max_step_kw
    assert r == 13.5 and plant.wh.max_switch_events == 6
    powers, starts = [], []
    for _ in range(40):  # the plan jumps from ~0 to 300 kW (67 elements) at once
        o, cmd, est = plant.cycle(300.0)
        assert_commands_within_bound(plant, o, cmd, est)
        starts.append(int(np.sum(cmd == WH_LOAD_UP)))
        powers.append(float(plant.power.sum()))
    steps = np.diff([0.0, *powers])
    # the fleet power never moves by more than the bound in one minute (+ the estimate's
    # error: tanks reaching the setpoint within the step, whole tanks for a fraction)
    assert np.all(np.abs(steps) <= r + 9.0 + 1e-6), steps
    # starts are staggered: at most the switch budget per minute, over many minutes
    assert max(starts) <= plant.wh.max_switch_events
    assert sum(1 for s in starts if s > 0) >= 10
    assert powers[-1] > 250.0  # and the plan is reached (or nearly) after 40 min


def test_sheds_never_expire_on_their_own_and_end_gradually() -> None:
    # every tank below the normal band (above the comfort guard) and shed by the EMS at
    # t = 0 with 10-min events: ending all sheds at once would start 600 elements
    plant = Plant(event_s=600, initial_c=45.9)
    plant.model.shed(None, 600)
    plant.wh.last_cmd_s[:] = 0.0
    for _ in range(15):  # no power wanted: the sheds are renewed, none runs out
        _, cmd, _ = plant.cycle(0.0)
        assert np.all(plant.model.mode == int(DRMode.SHED))
    ended_by_command = ended_alone = 0
    powers = [float(plant.power.sum())]
    for _ in range(30):  # 100 kW wanted: sheds end a few per minute, each rebounds
        before = plant.model.mode.copy()
        o, cmd, est = plant.cycle(100.0)
        assert_commands_within_bound(plant, o, cmd, est)
        left = (before == int(DRMode.SHED)) & (plant.model.mode != int(DRMode.SHED))
        ended_by_command += int(np.sum(left & (cmd == WH_NORMAL)))
        ended_alone += int(np.sum(left & (cmd == WH_KEEP)))
        powers.append(float(plant.power.sum()))
    assert ended_alone == 0 and ended_by_command >= 20
    assert np.all(np.abs(np.diff(powers)) <= plant.wh.max_step_kw + 9.0 + 1e-6), powers
    assert 80.0 <= powers[-1] <= 120.0


def test_switch_events_per_step_are_bounded() -> None:
    plant = Plant()
    budget = plant.wh.max_switch_events
    for plan in [300.0] * 20 + [0.0] * 20 + [300.0] * 10:
        o, cmd, _ = plant.cycle(plan)
        renewals = (cmd == WH_SHED) & (o.wh_mode == int(DRMode.SHED))
        guard = (cmd == WH_NORMAL) & (o.wh_energy_kwh < plant.info.w_e_guard)
        switches = (cmd != WH_KEEP) & ~renewals & ~guard
        # ends of sheds of tanks above the normal band change no power: not counted
        quiet = (cmd == WH_NORMAL) & (o.wh_energy_kwh >= plant.info.w_e_normal_on)
        assert int(np.sum(switches & ~quiet)) <= budget


def test_estimate_counts_the_rebound_and_the_stop_at_the_setpoint() -> None:
    sc = small_scenario(n_b=0, n_w=3)
    info = FleetInfo.from_scenario(sc)
    est = HeaterPowerEstimator(info)
    cold = float(info.w_e_normal_on[0]) - 1.0  # below the normal band
    full = float(info.w_e_max[0]) - 0.0375  # 1/2 min of a 4.5 kW element from full
    o = Observation(
        step=0,
        t_s=0.0,
        dt_s=60.0,
        net_kw=0.0,
        battery_energy_kwh=np.zeros(0),
        battery_power_kw=np.zeros(0),
        wh_power_kw=np.array([0.0, 4.5, 0.0]),
        wh_energy_kwh=np.array([cold, full, cold]),
        wh_mode=np.array([int(DRMode.SHED), 0, int(DRMode.SHED)]),
    )
    cmd = np.array([WH_NORMAL, WH_KEEP, WH_KEEP], dtype=np.int64)
    ending = np.array([False, False, True])  # its shed event runs out in the step
    p = est.per_heater(o, cmd, ending)
    np.testing.assert_allclose(p, [4.5, 2.25, 4.5])  # rebound, half a step, rebound
    # the fleet bias is learnt from the measured error of the last estimate
    assert abs(est.fleet_kw(p) - 11.25) < 1e-9
    o2 = Observation(**{**o.__dict__, "step": 1, "wh_power_kw": np.array([4.5, 4.5, 4.5])})
    est.learn(o2)
    assert abs(est.bias_kw - 0.3 * 2.25) < 1e-6

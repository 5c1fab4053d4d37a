"""Water-heater demand response: modes, CTA-2045 operational states, override, heartbeat."""

from __future__ import annotations

import numpy as np
import pytest

from sef.models.draws import doe_medium_draw_profile
from sef.models.waterheater import (
    DRMode,
    DRSettings,
    OperationalState,
    WaterHeaterModel,
    WaterHeaterParams,
)

N = 200


def fleet(seed: int = 5) -> tuple[WaterHeaterModel, np.ndarray]:
    rng = np.random.default_rng(seed)
    m = WaterHeaterModel(
        WaterHeaterParams(initial_c=rng.uniform(44, 52, N)),
        dr=DRSettings(),
    )
    base = doe_medium_draw_profile(60.0)
    shifts = rng.integers(0, 1440, N)
    draws = base[(np.arange(1440)[:, None] - shifts[None, :]) % 1440]
    return m, draws


def test_operational_state_codes_match_cta2045() -> None:
    names = {
        0: "IDLE_NORMAL",
        1: "RUNNING_NORMAL",
        2: "RUNNING_CURTAILED_GRID",
        3: "RUNNING_HEIGHTENED_GRID",
        4: "IDLE_GRID",
        5: "SGD_ERROR_CONDITION",
        6: "IDLE_HEIGHTENED",
        7: "CYCLING_ON",
        8: "CYCLING_OFF",
        9: "VARIABLE_FOLLOWING",
        10: "VARIABLE_NOT_FOLLOWING",
        11: "IDLE_OPTED_OUT",
        12: "RUNNING_OPTED_OUT",
    }
    assert {s.value: s.name for s in OperationalState} == names


@pytest.mark.parametrize("command", ["shed", "critical_peak", "grid_emergency"])
def test_curtailment_lowers_power(command: str) -> None:
    base, draws = fleet()
    dr, _ = fleet()
    p_base = base.simulate(60.0, draws[:240])
    getattr(dr, command)(None, 5 * 3600)
    p_dr = dr.simulate(60.0, draws[:240])
    assert p_dr.mean() < 0.8 * p_base.mean()
    assert np.all(dr.mode == DRMode[command.upper()])
    assert set(np.unique(dr.operational_state)) <= {2, 4}
    if command == "grid_emergency":
        assert p_dr.max() == 0.0


def test_critical_peak_is_deeper_than_shed() -> None:
    shed, draws = fleet()
    cpp, _ = fleet()
    shed.shed(None, 6 * 3600)
    cpp.critical_peak(None, 6 * 3600)
    p_s = shed.simulate(60.0, draws[:360])
    p_c = cpp.simulate(60.0, draws[:360])
    assert p_c.sum() < p_s.sum()


def test_event_end_time_returns_to_normal() -> None:
    m = WaterHeaterModel(WaterHeaterParams(), n=4)
    m.shed([0, 1], 600)
    m.load_up(np.array([False, False, True, False]), 1200)
    assert list(m.mode) == [DRMode.SHED, DRMode.SHED, DRMode.LOAD_UP, DRMode.NORMAL]
    for _ in range(10):
        m.step(60.0)
    assert list(m.mode) == [0, 0, DRMode.LOAD_UP, 0]
    m.step(600.0)
    assert np.all(m.mode == DRMode.NORMAL)
    m.shed(3)  # open-ended
    m.step(86400.0)
    assert m.mode[3] == DRMode.SHED
    m.end_shed()
    assert np.all(m.mode == DRMode.NORMAL)


def test_load_up_raises_stored_energy() -> None:
    p = WaterHeaterParams(initial_c=48.0, nodes=12)  # inside the normal band: idle
    normal = WaterHeaterModel(p, n=2)
    m = WaterHeaterModel(p, n=2)
    m.load_up(0, 7200)
    assert m.step(60.0)[0] == 4.5
    assert m.operational_state[0] == OperationalState.RUNNING_HEIGHTENED_GRID
    assert m.operational_state[1] == OperationalState.IDLE_NORMAL
    normal.step(60.0)
    for _ in range(59):
        m.step(60.0)
        normal.step(60.0)
    assert m.stored_energy_kwh[0] > normal.stored_energy_kwh[0] + 0.5
    assert m.stored_energy_kwh[1] == pytest.approx(normal.stored_energy_kwh[1])
    assert m.upper_sensor_c[0] >= 51.67 - 1.11
    assert m.operational_state[0] in (3, 6)


def test_load_up_offset_is_capped() -> None:
    m = WaterHeaterModel(
        WaterHeaterParams(setpoint_c=55.0, initial_c=55.0, max_setpoint_c=60.0, nodes=2),
        dr=DRSettings(load_up_offset_k=10.0),
    )
    m.load_up(None, 3 * 3600)
    for _ in range(180):
        m.step(60.0)
    assert 58.0 < m.temperatures_c[0, 0] <= 60.0 + 4.5e3 * 60 / (4183 * 170 / 3)


def test_customer_override_ends_curtailment() -> None:
    m = WaterHeaterModel(WaterHeaterParams(initial_c=30.0), n=4)
    m.grid_emergency(None, 3600)
    m.step(60.0)
    assert np.all(m.power_kw == 0)
    assert np.all(m.operational_state == OperationalState.IDLE_GRID)
    m.customer_override([1, 3], True)
    m.step(60.0)
    assert list(m.power_kw > 0) == [False, True, False, True]
    assert list(m.operational_state) == [4, 12, 4, 12]
    assert np.all(m.mode == DRMode.GRID_EMERGENCY)  # the event itself is still running
    m.customer_override([1], False)
    m.step(60.0)
    assert list(m.power_kw > 0) == [False, False, False, True]
    # override does not stop a load-up, and reports normal states outside events
    m.end_shed()
    m.step(60.0)
    assert m.operational_state[3] == OperationalState.RUNNING_NORMAL


def test_heartbeat_timeout_falls_back_to_normal() -> None:
    m = WaterHeaterModel(WaterHeaterParams(), n=3)
    m.heartbeat([0, 1])  # device 2 never hears one: its watchdog is not armed
    m.shed(None)  # open-ended
    for _ in range(10):  # heartbeats every minute keep device 0 in the event
        m.heartbeat(0)
        m.step(60.0)
    assert list(m.mode) == [DRMode.SHED, DRMode.NORMAL, DRMode.SHED]
    # device 1 fell back once 300 s passed without a heartbeat
    m2 = WaterHeaterModel(WaterHeaterParams())
    m2.heartbeat()
    m2.critical_peak(None, 7200)
    for _ in range(5):
        m2.step(60.0)
    assert m2.mode[0] == DRMode.CRITICAL_PEAK  # exactly 300 s: not yet
    m2.step(60.0)
    assert m2.mode[0] == DRMode.NORMAL
    assert m2.operational_state[0] in (0, 1)
    # status 0 (connection lost) cancels at once
    m.heartbeat(0, status=0)
    assert m.mode[0] == DRMode.NORMAL


def test_heartbeat_timeout_configurable() -> None:
    m = WaterHeaterModel(WaterHeaterParams(), dr=DRSettings(heartbeat_timeout_s=900.0))
    m.heartbeat()
    m.shed()
    m.step(840.0)
    assert m.mode[0] == DRMode.SHED
    m.step(120.0)
    assert m.mode[0] == DRMode.NORMAL


def test_grid_emergency_safety_floor() -> None:
    m = WaterHeaterModel(WaterHeaterParams(initial_c=6.0, inlet_c=6.0, ambient_c=6.0, nodes=2))
    m.grid_emergency(None, 6 * 3600)
    p = m.simulate(60.0, np.zeros(360))
    assert p[0] == 4.5 and m.lower_on.sum() == 0
    # heats the upper sensor to floor + deadband only, then stays off above the floor
    assert 10.0 + 5.56 <= m.upper_sensor_c[0] < 10.0 + 5.56 + 2.0
    assert p[-60:].max() == 0.0


def test_index_forms() -> None:
    m = WaterHeaterModel(WaterHeaterParams(), n=5)
    m.shed(np.array([True, False, True, False, False]), 60)
    m.critical_peak(4, 60)
    m.load_up(slice(1, 2), 60)
    assert list(m.mode) == [1, 2, 1, 0, 3]
    with pytest.raises(IndexError):
        m.shed(7)


def test_error_state_reported() -> None:
    m = WaterHeaterModel(WaterHeaterParams(), n=2)
    m.temperatures_c[1, 0] = np.nan
    assert list(m.operational_state) == [0, 5]

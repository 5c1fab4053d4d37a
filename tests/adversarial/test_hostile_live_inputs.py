"""A broken or hostile agent's Nameplate, meter reading or target cannot poison live control.

Any value of any key (2^64, 1e300, negative, zero, a string, a list, an empty SOC window)
gives a plate within the plausible bounds, with a non-empty SOC window: the scenario's
default stands in for what is out of range (logged once). Pure logic (the parser of the
live layer), checked with hypothesis.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

from sef.control._live_feeder import FeederWatch
from sef.control._live_fleet import PLAUSIBLE, BatteryPlate, HeaterPlate
from sef.control._live_meter import TELEMETRY_KEY, meter_sample
from sef.control.scenario import load_scenario
from sef.ems._target_board import TargetBoard

TEMPLATE = load_scenario("small")

HOSTILE = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e300, -1e300, 0, -5, 2**64, 1e-300, 10**400, -(10**400)]),
    st.text(max_size=5),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)
BATTERY_KEYS = [k for k in PLAUSIBLE if k.startswith(("Charge", "Discharge", "Capacity", "SOC"))]
HEATER_KEYS = ["Volume_L", "Element_kW", "Compressor_kW", "Setpoint_C", "Deadband_K", "Inlet_C"]


def within(key: str, value: float, scale: float = 1.0) -> bool:
    low, high = PLAUSIBLE[key]
    return low <= value * scale <= high


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({k: HOSTILE for k in BATTERY_KEYS}))
def test_any_battery_nameplate_gives_a_plausible_plate(plate: dict[str, Any]) -> None:
    read = BatteryPlate.read("bat-evil", {"DeviceType": "battery", **plate}, TEMPLATE)
    assert within("Charge_Rate_kW", read.charge_kw)
    assert within("Discharge_Rate_kW", read.discharge_kw)
    assert within("Capacity_kWh", read.capacity_kwh)
    assert 0.0 <= read.soc_min < read.soc_max <= 1.0
    assert within("Charge_Efficiency_pct", read.eta_c, 100.0)
    assert within("Discharge_Efficiency_pct", read.eta_d, 100.0)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries({k: HOSTILE for k in HEATER_KEYS}),
    st.one_of(st.sampled_from(["resistance", "heat_pump"]), HOSTILE),
)
def test_any_heater_nameplate_gives_a_plausible_plate(plate: dict[str, Any], kind: Any) -> None:
    read = HeaterPlate.read(
        "wh-evil", {"DeviceType": "water_heater", "Heater_Type": kind, **plate}, TEMPLATE
    )
    assert read.heater_type in ("resistance", "heat_pump")
    for key, value in (
        ("Volume_L", read.volume_l),
        ("Element_kW", read.element_kw),
        ("Compressor_kW", read.compressor_kw),
        ("Setpoint_C", read.setpoint_c),
        ("Deadband_K", read.deadband_k),
        ("Inlet_C", read.inlet_c),
    ):
        assert within(key, value), (key, value)


def test_a_sane_nameplate_is_taken_as_it_is() -> None:
    plate = {
        "DeviceType": "battery",
        "Charge_Rate_kW": 7.0,
        "Discharge_Rate_kW": 6.0,
        "Capacity_kWh": 20.0,
        "SOC_Min_pct": 10.0,
        "SOC_Max_pct": 95.0,
        "Charge_Efficiency_pct": 96.0,
        "Discharge_Efficiency_pct": 97.0,
    }
    read = BatteryPlate.read("bat-ok", plate, TEMPLATE)
    assert (read.charge_kw, read.discharge_kw, read.capacity_kwh) == (7.0, 6.0, 20.0)
    assert (read.soc_min, read.soc_max, read.eta_c, read.eta_d) == (0.10, 0.95, 0.96, 0.97)
    empty_window = {**plate, "SOC_Min_pct": 90.0, "SOC_Max_pct": 20.0}
    fixed = BatteryPlate.read("bat-odd", empty_window, TEMPLATE)
    params = TEMPLATE.battery_params
    assert (fixed.soc_min, fixed.soc_max) == (params.soc_min, params.soc_max)


class _Entry:
    def __init__(self, value: Any) -> None:
        self.value, self.ts, self.received = value, 1_700_000_000.0, 1_700_000_000.0


class _Record:
    def __init__(self, telemetry: dict[str, Any]) -> None:
        self.properties = {TELEMETRY_KEY: _Entry(telemetry)}


class _Registry:
    """The registry's ``get`` (pure logic: ``meter_sample`` reads one record)."""

    def __init__(self, records: dict[str, _Record]) -> None:
        self.records = records

    def get(self, agent_id: str) -> _Record | None:
        return self.records.get(agent_id)


@pytest.mark.parametrize("reading", [10**400, -(10**400), 1e300, -1e300, 2.0e6, "12", True])
def test_a_meter_reading_beyond_any_feeder_is_no_measurement(reading: Any) -> None:
    registry = _Registry({"meter-evil": _Record({"Net_Power_kW": reading})})
    assert meter_sample(registry, ["meter-evil"]) is None  # type: ignore[arg-type]


def test_a_plausible_meter_reading_is_taken() -> None:
    registry = _Registry({"m": _Record({"Net_Power_kW": -42.5})})
    assert meter_sample(registry, ["m"]) == (-42.5, 1_700_000_000.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("kw", [10**400, 1e300, -2.0e6, float("inf"), float("nan")])
def test_a_target_point_beyond_any_feeder_is_refused(kw: Any) -> None:
    board = TargetBoard()
    with pytest.raises(ValueError, match=r"finite|range"):
        board.set([(0.0, 10.0), (60.0, kw)], "op-1", 0.0)
    assert board.points == [] and board.version == 0  # nothing taken


class _Clock:
    def __init__(self, now: float) -> None:
        self.t = now

    def now(self) -> float:
        return self.t


class _LiveStub:
    """What :class:`FeederWatch` reads of a live run: a scripted meter, no batteries."""

    def __init__(self, samples: list[tuple[float, float]]) -> None:
        self.samples = samples
        self.scenario = self.current = TEMPLATE
        self.start_s = 1_700_000_000.0
        self.ems = SimpleNamespace(clock=_Clock(self.start_s + 600.0))
        self.fleet = SimpleNamespace(batteries=(), heaters=())
        self.steps_started = 10

    def meter_sample(self) -> tuple[float, float] | None:
        return self.samples.pop(0) if self.samples else None

    def log_device_power(self) -> None:
        pass  # no devices

    def window_limit_kw(self, k: int) -> float | None:
        return None  # no event window on the target board


@pytest.mark.parametrize("bad_ts", [float("nan"), float("inf"), 1e18, 1_700_000_000.0 + 10**6])
def test_a_meter_sample_time_out_of_reach_does_not_blind_the_feeder_watch(bad_ts: float) -> None:
    """A sample stamped far in the future (or not a number) is ignored: taken, every later
    sample would be 'older' and the guard and the step means would stop for good."""
    start = 1_700_000_000.0
    live = _LiveStub(
        [(5.0, start + 60.0), (50.0, bad_ts), (30.0, start + 90.0), (30.0, start + 120.0)]
    )
    watch = FeederWatch(live)  # type: ignore[arg-type]
    for _ in range(4):
        watch.once()
    assert watch.guard.actions >= 1  # the later samples, over any limit, were acted on
    means = watch.step_means_kw(TEMPLATE.steps)
    assert np.nanmax(means) == pytest.approx(30.0)  # the bad sample left no trace

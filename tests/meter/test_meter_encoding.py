"""Property-based tests of the meter's encodings: the base-load profile's segments, the CT
datagram, the energy registers, and the agent's reading of any register values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sef.agents.meter import AVERAGE_RESOLUTION_KW, MeterDataError, reading_from
from sef.emulators._meter_sources import BaseLoad, encode_ct_datagram, parse_ct_datagram
from sef.emulators.meter import MeterEmulator
from sef.protocols.sunspec.mdef import decode_point, model_def

DAY = 86400.0

profiles = st.lists(st.floats(-50, 50, allow_nan=False), min_size=1, max_size=30).flatmap(
    lambda kw: st.tuples(st.just(kw), st.sampled_from([60.0, 300.0, 900.0, 3600.0, 7200.0]))
)


@given(profile=profiles, t0=st.floats(0, 3 * DAY), span=st.floats(0, 2 * DAY))
@settings(max_examples=200, deadline=None)
def test_segments_cover_the_interval_and_hold_each_step(
    profile: tuple[list[float], float], t0: float, span: float
) -> None:
    kw, dt_s = profile
    base = BaseLoad.from_series(np.array(kw), dt_s)
    pieces = list(base.segments(t0, t0 + span))
    assert sum(d for d, _ in pieces) == pytest.approx(span, abs=1e-6)
    t = t0
    for duration, value in pieces:
        assert duration > 0
        if duration > 1e-6:  # (a float-rounding sliver at a boundary has no clear middle)
            assert value == base.kw_at(t + duration / 2)  # constant over the piece
        t += duration
    middle = t0 + span / 3
    split = base.energy_kwh(t0, middle) + base.energy_kwh(middle, t0 + span)
    assert split == pytest.approx(base.energy_kwh(t0, t0 + span), abs=1e-6)


@given(kw=st.floats(-1e3, 1e3, allow_nan=False), days=st.integers(1, 3))
def test_a_constant_profile_integrates_to_power_times_time(kw: float, days: int) -> None:
    base = BaseLoad.constant(kw)
    assert base.energy_kwh(1000.0, 1000.0 + days * DAY) == pytest.approx(kw * 24 * days)


@given(source=st.text(min_size=1, max_size=20), watts=st.floats(-1e6, 1e6, allow_nan=False))
def test_ct_datagram_round_trip(source: str, watts: float) -> None:
    got_source, got_watts = parse_ct_datagram(encode_ct_datagram(source, watts))
    assert got_source == source
    assert got_watts == pytest.approx(watts, abs=1e-3)


@given(data=st.binary(max_size=200) | st.text(max_size=100).map(str.encode))
def test_any_datagram_is_parsed_or_refused_with_a_reason(data: bytes) -> None:
    try:
        source, watts = parse_ct_datagram(data)
    except ValueError as reason:
        assert str(reason)
    else:
        assert isinstance(source, str) and math.isfinite(watts)


@given(obj=st.dictionaries(st.sampled_from(["src", "w", "x"]), st.none() | st.booleans()
                           | st.integers() | st.floats() | st.text(max_size=5)))  # fmt: skip
def test_any_json_object_is_parsed_or_refused_with_a_reason(obj: dict[str, object]) -> None:
    try:
        parse_ct_datagram(json.dumps(obj).encode())
    except ValueError as reason:
        assert str(reason)


@given(wh=st.floats(0, 1e13, allow_nan=False))
def test_energy_registers_hold_whole_wh_modulo_2_32(wh: float) -> None:
    meter = MeterEmulator(tick_s=1e9)
    meter.import_wh = meter.export_wh = wh
    meter.advance()
    p = model_def(201).point("TotWhImp")
    start = meter.image.model_address[201] - meter.image.base + p.offset
    regs = meter.image.registers[start : start + 2]
    assert decode_point(p, regs, 0) == math.floor(wh) % 2**32
    assert meter.image.get(201, "TotWhExp") == math.floor(wh) % 2**32


int16 = st.integers(-32768, 32767)
raw_values = st.fixed_dictionaries(
    {
        "W": st.none() | int16,
        "W_SF": st.none() | int16,
        "TotWhImp": st.none() | st.integers(0, 2**32 - 1),
        "TotWhExp": st.none() | st.integers(0, 2**32 - 1),
        "TotWh_SF": st.none() | int16,
        "PhV": st.none() | int16,
        "V_SF": st.none() | int16,
        "Hz": st.none() | int16,
        "Hz_SF": st.none() | int16,
    }
)


@given(first=raw_values, second=raw_values, dt_s=st.floats(0, 2000))
@settings(max_examples=300)
def test_any_register_values_give_a_finite_reading_or_a_reason(
    first: dict[str, int | None], second: dict[str, int | None], dt_s: float
) -> None:
    """Garbage (SFs out of -10..10, 0x8000 "not implemented") never raises anything but
    MeterDataError, never gives a non-finite number, and W scales exactly."""
    previous = None
    for raw, at_s in ((first, 1000.0), (second, 1000.0 + dt_s)):
        try:
            reading, _why = reading_from(raw, at_s, previous)
        except MeterDataError as reason:
            assert str(reason)
            sf = raw["W_SF"]
            assert raw["W"] is None or sf is None or not -10 <= sf <= 10
            continue
        w, sf = raw["W"], raw["W_SF"]
        assert w is not None and sf is not None
        assert reading.power_kw == pytest.approx(w * 10.0**sf / 1000)
        for value in (reading.net_kw, reading.volts, reading.hz, reading.import_wh):
            assert value is None or math.isfinite(value)
        previous = reading


@given(
    power_kw=st.floats(-100, 100, allow_nan=False),
    dt_s=st.floats(60, 900),
    start_wh=st.integers(0, 2**32 - 1),
)
def test_the_mean_from_energy_registers_is_within_one_count(
    power_kw: float, dt_s: float, start_wh: int
) -> None:
    """Counters moved by ``power_kw`` over ``dt_s`` (wrapping at 2^32) give that mean to
    within one count over the interval, and the source says so."""
    moved = abs(power_kw) * dt_s / 3.6  # Wh
    imp0, exp0 = start_wh, (start_wh * 7) % 2**32
    imp1 = (imp0 + (math.floor(moved) if power_kw > 0 else 0)) % 2**32
    exp1 = (exp0 + (math.floor(moved) if power_kw < 0 else 0)) % 2**32
    w = round(power_kw * 100)  # W at W_SF 1
    before = {"W": w, "W_SF": 1, "TotWhImp": imp0, "TotWhExp": exp0, "TotWh_SF": 0}
    after = {**before, "TotWhImp": imp1, "TotWhExp": exp1}
    first, _ = reading_from(before, 0.0, None)
    second, why = reading_from(after, dt_s, first)
    assert why is None and not first.averaged
    one_count_kw = 1 / 1000 / (dt_s / 3600)
    assert second.averaged == (one_count_kw <= AVERAGE_RESOLUTION_KW)
    if second.averaged:
        assert second.net_kw == pytest.approx(power_kw, abs=one_count_kw + 1e-9)
    else:
        assert second.net_kw == second.power_kw


def test_base_load_csv_is_step_held_and_wraps_around_midnight(tmp_path: Path) -> None:
    path = tmp_path / "base.csv"
    path.write_text("# feeder F7\ntime_s,kw\n3600,2.5\n7200,4\n")
    base = BaseLoad.from_csv(path)
    assert base.kw_at(DAY * 5 + 1800) == 4.0  # before the first row: the last row holds
    assert base.kw_at(DAY * 5 + 5000) == 2.5
    path.write_text("time_s,kw\n0,1\n3600,2.5\n")
    base = BaseLoad.from_csv(path)
    assert (base.kw_at(1800), base.kw_at(7200), base.kw_at(DAY + 10)) == (1.0, 2.5, 1.0)
    for bad in ("time_s,kw\n", "time_s,power\n0,1\n", "time_s,kw\n0,x\n", "time_s,kw\n0,1\n0,2\n"):
        path.write_text(bad)
        with pytest.raises(ValueError):
            BaseLoad.from_csv(path)

"""The demo's feeder meter gets the scenario's base load on the scenario's clock."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sef.clock import RealClock
from sef.control.scenario import load_scenario
from sef.demo._fleet import METER_ID, Fleet, fleet_identities
from sef.emulators._meter_sources import BaseLoad

DAY = 86400.0


@given(
    kw=st.lists(st.floats(0, 50, allow_nan=False), min_size=1, max_size=48),
    start_s=st.floats(0, 30 * DAY),
)
@settings(max_examples=50, deadline=None)
def test_base_load_profile_follows_the_scenario_from_its_start(
    tmp_path_factory: pytest.TempPathFactory, kw: list[float], start_s: float
) -> None:
    start_s = round(start_s, 3)  # the CSV keeps ms
    logs = tmp_path_factory.mktemp("feeder") / "logs"
    fleet = Fleet("mqtt://127.0.0.1:1", RealClock(), logs, base_kw=kw, base_dt_s=1800.0,
                  base_start_s=start_s)  # fmt: skip
    base = BaseLoad.from_csv(fleet._base_load_csv())
    for k, value in enumerate(kw):
        assert base.kw_at(start_s + k * 1800.0 + 900.0) == pytest.approx(value, abs=1e-4)


def test_default_base_load_is_the_demo_scenario_s(tmp_path: Path) -> None:
    fleet = Fleet("mqtt://127.0.0.1:1", RealClock(), tmp_path / "logs")
    base = BaseLoad.from_csv(fleet._base_load_csv())
    expected = load_scenario("small").base_kw  # the demo's for 3 + 3 devices
    got = [base.kw_at(20 * DAY + k * 60.0 + 30.0) for k in range(len(expected))]
    assert np.allclose(got, expected, atol=1e-4)
    assert (METER_ID, ("meters",)) in fleet_identities(3, 3)
    assert len(fleet_identities(3, 3)) == 7

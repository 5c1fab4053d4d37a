"""Draw profiles: the built-in DOE UEF medium pattern and CSV schedules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sef.models.draws import (
    DOE_MEDIUM_UEF_DRAWS,
    GALLON_L,
    DrawEvent,
    doe_medium_draw_profile,
    draw_events_to_steps,
    load_draw_schedule_csv,
)


def test_doe_medium_pattern_table() -> None:
    assert len(DOE_MEDIUM_UEF_DRAWS) == 12
    gallons = sum(ev.volume_l for ev in DOE_MEDIUM_UEF_DRAWS) / GALLON_L
    assert gallons == pytest.approx(55.0)
    first = DOE_MEDIUM_UEF_DRAWS[0]
    assert first.start_s == 0.0
    assert first.flow_l_per_min == pytest.approx(1.7 * GALLON_L)
    last = DOE_MEDIUM_UEF_DRAWS[-1]
    assert last.start_s == 17 * 3600 + 3 * 60
    assert last.volume_l == pytest.approx(7 * GALLON_L)


def test_doe_medium_profile_matches_ochre_file() -> None:
    d = doe_medium_draw_profile(60.0)
    assert d.shape == (1440,)
    assert d.sum() == pytest.approx(208.19764812, rel=1e-9)  # L (1-min steps, L/min)
    # values of OCHRE's "WH Medium UEF Schedule.csv" (first day)
    assert d[0] == pytest.approx(6.435200033)
    assert d[8] == pytest.approx(5.299576498)
    assert d[9] == 0.0
    assert d[30] == d[31] == pytest.approx(3.785411784)
    assert d[108] == pytest.approx(1.892705892)  # 01:48
    assert d[695] == pytest.approx(6.056658854)  # 11:35
    assert d[1027] == pytest.approx(0.757082357)  # 17:07
    assert np.count_nonzero(d) == 39


def test_profile_other_step_and_days() -> None:
    d5 = doe_medium_draw_profile(300.0, days=2)
    assert d5.shape == (576,)
    assert d5.sum() * 5 == pytest.approx(2 * 208.19764812)


def test_events_to_steps_conserves_volume() -> None:
    events = [DrawEvent(59.0, 10.0, 4.0), DrawEvent(100.0, 1.0, 0.5)]
    d = draw_events_to_steps(events, 60.0, 600.0)
    assert d.sum() == pytest.approx(11.0)
    assert d[0] == pytest.approx(4.0 / 60)
    # a draw past the end is cut
    assert draw_events_to_steps([DrawEvent(590.0, 10.0, 1.0)], 60.0, 600.0).sum() == pytest.approx(
        10.0 / 60
    )
    with pytest.raises(ValueError):
        DrawEvent(0.0, -1.0, 1.0)


def test_load_csv_hhmm_gallons(tmp_path: Path) -> None:
    f = tmp_path / "draws.csv"
    f.write_text(
        "# DOE medium, first three draws\n"
        "start, volume_gal, flow_gpm\n"
        "01:43,9,1.7\n"
        "00:00,15,1.7\n"
        "00:30,2,1.0\n"
    )
    ev = load_draw_schedule_csv(f)
    assert [e.start_s for e in ev] == [0.0, 1800.0, 6180.0]
    assert ev == list(DOE_MEDIUM_UEF_DRAWS[:3])


def test_load_csv_seconds_litres(tmp_path: Path) -> None:
    f = tmp_path / "draws.csv"
    f.write_text(
        "start_s,volume_l,flow_l_per_min\n90,12.5,5\n25:00:30,1,1\n".replace("25:00:30", "90030")
    )
    ev = load_draw_schedule_csv(f)
    assert ev[0] == DrawEvent(90.0, 12.5, 5.0)
    assert ev[1].start_s == 90030.0
    d = draw_events_to_steps(ev, 60.0, 86400.0 * 2)
    assert d.sum() == pytest.approx(13.5)


@pytest.mark.parametrize(
    "text",
    [
        "start,volume_l\n00:00,3\n",
        "start,volume_l,flow_l_per_min\n0:0:0:0,3,1\n",
        "start,volume_l,flow_l_per_min\n00:00,-3,1\n",
        "start,volume_l,flow_l_per_min\n00:00,abc,1\n",
        "",
    ],
)
def test_load_csv_errors(tmp_path: Path, text: str) -> None:
    f = tmp_path / "bad.csv"
    f.write_text(text)
    with pytest.raises(ValueError):
        load_draw_schedule_csv(f)

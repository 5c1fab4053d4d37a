"""Commodity 6 (total energy storage) is never below commodity 7 (present energy storage),
whatever the setpoint changes, draws and events (property-based, issue 13 §3)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sef.models.waterheater import WaterHeaterModel, WaterHeaterParams

_action = st.one_of(
    st.tuples(st.just("setpoint"), st.floats(20.0, 70.0)),
    st.tuples(st.just("step"), st.floats(1.0, 3600.0), st.floats(0.0, 20.0)),
    st.tuples(st.just("alu"), st.floats(0.0, 30.0), st.floats(0.0, 7200.0)),
    st.tuples(st.just("event"), st.sampled_from(["shed", "load_up", "end_shed", "grid_emergency"])),
)


@settings(max_examples=60, deadline=None)
@given(
    initial_c=st.floats(10.0, 65.0),
    nodes=st.sampled_from([1, 2, 12]),
    actions=st.lists(_action, min_size=1, max_size=12),
)
def test_total_never_below_present(
    initial_c: float, nodes: int, actions: list[tuple[object, ...]]
) -> None:
    m = WaterHeaterModel(WaterHeaterParams(initial_c=initial_c, nodes=nodes), n=1)
    for action in actions:
        kind = action[0]
        if kind == "setpoint":
            m.set_setpoint(None, float(action[1]))  # type: ignore[arg-type]
        elif kind == "step":
            m.step(float(action[1]), float(action[2]))  # type: ignore[arg-type]
        elif kind == "alu":
            m.advanced_load_up(None, float(action[2]) or None, float(action[1]))  # type: ignore[arg-type]
        else:
            getattr(m, str(action[1]))(None)
        total, present = m.total_energy_storage_wh, m.present_energy_storage_wh
        assert np.all(total >= present)
        assert np.all(m.energy_take_wh >= 0)
        assert np.all(np.isclose(m.energy_take_wh, total - present))

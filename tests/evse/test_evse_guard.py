"""The departure guard's arithmetic (sef.agents._evse_guard)."""

from __future__ import annotations

import pytest

from sef.agents._evse_guard import deliverable_kwh, departure_problem, is_forced
from sef.interface import parse_events


def ev(*cmds: tuple[str, int, int]) -> list:  # type: ignore[type-arg]
    return parse_events(list(cmds))


def test_deliverable_energy_of_sequences() -> None:
    h = 3600.0
    assert deliverable_kwh(ev(("charge", 7, 1800)), 3 * h, 11.0) == pytest.approx(3.5 + 2.5 * 11)
    assert deliverable_kwh(ev(("charge", 7, 0)), 3 * h, 11.0) == pytest.approx(21.0)
    assert deliverable_kwh(ev(("charge", 20, 0)), 1 * h, 11.0) == pytest.approx(11.0)
    assert deliverable_kwh(ev(("idle", 0, 0)), 3 * h, 11.0) == 0.0
    assert deliverable_kwh(ev(("shed", 0, 3600), ("endshed", 0, 0)), 3 * h, 11.0) == 22.0
    assert deliverable_kwh(ev(("discharge", 5, 600)), 600.0, 11.0) == 0.0
    # events past the departure do not count
    assert deliverable_kwh(ev(("idle", 0, 7200), ("charge", 7, 0)), 3600.0, 11.0) == 0.0


def test_problem_only_when_declared_and_short() -> None:
    args = {"now_s": 0.0, "departure_s": 3 * 3600.0, "max_kw": 11.0}
    assert departure_problem(ev(("idle", 0, 0)), **args, remaining_kwh=None) is None
    assert departure_problem(ev(("idle", 0, 0)), now_s=0.0, departure_s=None,
                             remaining_kwh=10.0, max_kw=11.0) is None  # fmt: skip
    assert departure_problem(ev(("idle", 0, 600)), **args, remaining_kwh=30.0) is None
    why = departure_problem(ev(("idle", 0, 3600)), **args, remaining_kwh=30.0)
    assert why is not None and "would deliver 22.00 kWh of the 30.00 kWh" in why
    assert departure_problem(ev(("idle", 0, 0)), **args, remaining_kwh=0.005) is None
    assert is_forced(ev(("charge", 1, 60), ("shed", 0, 0)))
    assert not is_forced(ev(("idle", 0, 0)))

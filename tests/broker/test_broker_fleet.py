"""``sef.broker_fleet``: the arithmetic of the production settings and their refusals."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from sef.broker import DEFAULT_BUDGET, BrokerLimits, QueueBudget
from sef.broker_fleet import FD_RESERVE, FleetSizing, agents_for_descriptors


def test_queue_holds_the_retained_fleet_plus_the_outage_budget() -> None:
    fleet = FleetSizing(agents=10_000, retained_per_agent=5, retained_bytes_per_agent=4096)
    assert fleet.queued_messages == 50_000 + DEFAULT_BUDGET.messages
    assert fleet.queued_bytes == 10_000 * 4096 + DEFAULT_BUDGET.queued_bytes
    limits = BrokerLimits.parse(fleet.config())
    assert limits.max_queued_messages == fleet.queued_messages
    assert limits.max_queued_bytes == fleet.queued_bytes
    assert fleet.shortfall(limits) is None
    # one message short of the fleet's resubscribe (in-flight included) is refused
    short = BrokerLimits(fleet.queued_messages - 1001, 0, 1000)
    assert "drops" in (fleet.shortfall(short) or "")
    # a byte limit too small for the payload is refused too
    assert fleet.shortfall(BrokerLimits(fleet.queued_messages, 1024, 1000)) is not None


def test_a_bigger_budget_grows_the_queue() -> None:
    budget = QueueBudget(rate_per_s=10_000, outage_s=120)
    fleet = FleetSizing(agents=1000, budget=budget)
    assert fleet.queued_messages == 6000 + 1_200_000


def test_persistence_lines_follow_the_data_dir(tmp_path: Path) -> None:
    assert "persistence false" in FleetSizing(agents=10).config()
    text = FleetSizing(agents=10, data_dir=tmp_path / "data").config()
    assert "persistence true" in text
    assert f"persistence_location {tmp_path}/data/" in text
    assert "autosave_on_changes false" in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"agents": 0}, "agents must be at least 1"),
        ({"max_keepalive_s": 5}, "max_keepalive"),
        ({"max_keepalive_s": 70_000}, "max_keepalive"),
        ({"data_dir": Path("/tmp/with space")}, "spaces"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FleetSizing(**kwargs)  # type: ignore[arg-type]


def test_descriptors_leave_a_reserve() -> None:
    assert agents_for_descriptors(20_000) == 20_000 - FD_RESERVE
    assert agents_for_descriptors(50) == 0
    assert agents_for_descriptors(resource.RLIM_INFINITY) > 10**9
    assert FleetSizing(agents=30_000).descriptors == 30_000 + FD_RESERVE

"""Shipped control scenarios (TOML and profile CSV files) for the simulator and live mode.

``SUITE``: the issue-14 scenario suite (``bench/scenarios.py``,
``tests/control/test_scenario_suite.py``; see ``docs/control.md``).
"""

#: Suite scenarios: a peak cap on a duck-curve feeder, 5 000 heaters + 2 000 batteries on
#: a flat target, a target infeasible from 17:00 to 20:00.
SUITE = ("duck_cap", "big_fleet", "infeasible_window")

"""Control apps: the MPC, the proportional baseline, the greedy battery-only dispatch and the
perfect-foresight optimum."""

from __future__ import annotations

from sef.control.controllers.base import (
    WH_KEEP,
    WH_LOAD_UP,
    WH_NORMAL,
    WH_SHED,
    ControlApp,
    Decision,
    Forecast,
    Observation,
)

__all__ = [
    "CONTROLLERS",
    "WH_KEEP",
    "WH_LOAD_UP",
    "WH_NORMAL",
    "WH_SHED",
    "ControlApp",
    "Decision",
    "Forecast",
    "Observation",
    "make_controller",
]

#: Names accepted by :func:`make_controller` (and ``sef simulate --controller``).
CONTROLLERS = ("mpc", "baseline", "greedy", "optimal")


def make_controller(name: str) -> ControlApp:
    """A new control app by name."""
    from sef.control.controllers.baseline import BaselineController
    from sef.control.controllers.greedy import GreedyController
    from sef.control.controllers.mpc import MPCController
    from sef.control.controllers.optimal import OptimalController

    apps: dict[str, type[ControlApp]] = {
        "mpc": MPCController,
        "baseline": BaselineController,
        "greedy": GreedyController,
        "optimal": OptimalController,
    }
    if name not in apps:
        raise ValueError(f"unknown controller {name!r} (expected one of {', '.join(CONTROLLERS)})")
    return apps[name]()

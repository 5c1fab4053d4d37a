"""Every check of the suite, in the order a run takes them.

Birth checks first (they read the birth the probe received), then the call, demo-interface
and robustness suites, and the session checks last, because they disturb the agent (a
forged stale death, a takeover of its client id, a restart). A suite module that is not
there yet (written in parallel) is left out.
"""

from __future__ import annotations

import importlib

from sef.certify._model import Check

__all__ = ["SUITES", "all_checks"]

SUITES = ("_birth", "_calls", "_demo", "_robustness", "_sessions")
"""Modules of :mod:`sef.certify`, each with ``CHECKS: list[Check]``, in run order."""


def all_checks() -> list[Check]:
    """The checks of every suite module present, in run order."""
    checks: list[Check] = []
    for name in SUITES:
        try:
            module = importlib.import_module(f"sef.certify.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"sef.certify.{name}":
                raise
            continue
        checks += module.CHECKS
    return checks

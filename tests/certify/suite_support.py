"""Helpers of the calls, demo and robustness suite tests: run checks through the real
runner against a real agent on a real Mosquitto, and the agents to run them against
(the example paho agent or a variant of it, in a thread; SEF's agents come from
``certify_support`` and ``tests/support.py``)."""

from __future__ import annotations

import contextlib
import io
import json
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from broken_agents import load_example
from rich.console import Console

from sef.certify._model import Check, CheckResult, Outcome, Report
from sef.certify._runner import CertifyOptions, run_certification

example = load_example()
ExampleAgent: Any = example.BatteryAgent
"""``examples/paho_agent.py``'s agent class: variants override one method."""


def readable(payload: bytes) -> dict[str, Any]:
    """The JSON object a payload holds (leniently parsed), else ``{}``: what a variant of
    the example agent looks at before it misbehaves."""
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return {}
    return obj if isinstance(obj, dict) else {}


async def certify(broker_url: str, agent_id: str, checks: Sequence[Check]) -> Report:
    """Run ``checks`` against ``agent_id`` through :func:`run_certification` (its lines
    discarded), level recommended."""
    console = Console(file=io.StringIO(), width=200)
    return await run_certification(CertifyOptions(broker_url, agent_id), console, checks)


def describe(report: Report) -> str:
    """One line per result: outcome, id, evidence (for assertion messages)."""
    return "\n".join(f"{r.outcome} {r.check.id}: {r.evidence}" for r in report.results)


def result(report: Report, check_id: str) -> CheckResult:
    """The result of ``check_id`` in ``report``."""
    return next(r for r in report.results if r.check.id == check_id)


def assert_all_pass(report: Report, checks: Sequence[Check]) -> None:
    """Every check ran and passed."""
    assert [r.check.id for r in report.results] == [c.id for c in checks]
    failed = [r for r in report.results if r.outcome is not Outcome.PASS]
    assert not failed, describe(report)


@contextlib.contextmanager
def thread_agent(
    agent_class: Any, broker_url: str, agent_id: str, groups: Sequence[str] = ()
) -> Iterator[Any]:
    """An ``examples/paho_agent.py`` agent (or a variant) serving in a thread until the
    block ends (then it shuts down cleanly)."""
    agent = agent_class(broker_url, agent_id, list(groups))
    thread = threading.Thread(target=agent.run, name=f"agent-{agent_id}", daemon=True)
    thread.start()
    try:
        yield agent
    finally:
        agent.stopping = True
        thread.join(10)

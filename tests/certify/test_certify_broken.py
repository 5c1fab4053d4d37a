"""``sef certify`` fails each deliberately broken agent of ``broken_agents.py`` on exactly
the check of the rule it breaks, over a real Mosquitto, restarts included (a check that
exercises the same rule on the way, listed in the agent's ``overlaps``, may fail with it;
no other may)."""

from __future__ import annotations

from pathlib import Path

import pytest
from broken_agents import BROKEN_AGENTS, certify_agent

from sef.broker import Mosquitto
from sef.certify._registry import all_checks


def test_every_broken_agent_names_checks_that_exist() -> None:
    ids = {check.id for check in all_checks()}

    for name, broken in BROKEN_AGENTS.items():
        assert broken.failing <= ids, name
    assert len({b.check_id for b in BROKEN_AGENTS.values()}) == len(BROKEN_AGENTS)


@pytest.mark.parametrize("name", sorted(BROKEN_AGENTS))
def test_broken_agent_fails_exactly_its_check(
    name: str, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    broken = BROKEN_AGENTS[name]

    run = certify_agent(name, mosquitto.url, tmp_path)

    assert broken.check_id in run.failed(), run.output
    assert run.failed() <= broken.failing, run.output  # no check of another rule fails
    assert run.exit_code == 1, run.output
    if broken.restart:
        assert run.outcomes[broken.check_id] == "FAIL"

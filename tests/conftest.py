"""Shared fixtures: a real Mosquitto per test on a free port, and agent subprocesses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sef.broker import Mosquitto
from support import AgentProcess


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto broker of this test's own, on a free port."""
    broker = Mosquitto(workdir=tmp_path / "mosquitto")
    broker.workdir.mkdir()  # type: ignore[union-attr]
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def broker_url(mosquitto: Mosquitto) -> str:
    return mosquitto.url


@pytest.fixture
def agent_processes() -> Iterator[list[AgentProcess]]:
    """A list to put started :class:`AgentProcess` objects in; all are stopped afterwards."""
    processes: list[AgentProcess] = []
    yield processes
    for process in processes:
        process.stop()

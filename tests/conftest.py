"""Shared fixtures: a real Mosquitto per test on a free port, and agent subprocesses."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sef.broker import Mosquitto
from sef.ems.store.pgserver import PostgresNotFound, PostgresServer
from support import AgentProcess, path_with_system_sbin


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto broker of this test's own, on a free port."""
    workdir = tmp_path / "mosquitto"
    broker = Mosquitto(workdir=workdir)
    workdir.mkdir()
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(autouse=True, scope="session")
def agent_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Agent processes keep their home pin (``docs/discovery.md``) in a temporary
    directory (``SEF_STATE_DIR``), not in the user's ``~/.local/state``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEF_STATE_DIR", str(tmp_path_factory.mktemp("sef-state")))
        yield


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


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server per test worker (each test gets its own database).

    As root the server runs through ``runuser``, which lives in /usr/sbin or /sbin: those
    are put on PATH (when missing) while the server starts and stops.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", path_with_system_sbin(os.environ.get("PATH", "")))
        try:
            server = PostgresServer().start()
        except PostgresNotFound as exc:
            pytest.fail(f"{exc}")
        yield server
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: SQLite in this test's temp dir, or PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ems.db'}"
    server: PostgresServer = request.getfixturevalue("pg_server")
    return server.create_database(f"t_{uuid.uuid4().hex[:12]}")

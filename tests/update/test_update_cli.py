"""``sef update init|publish|timestamp|serve|check|install`` through the real ``sef`` app
(CliRunner) and, for ``serve``, a real ``sef`` process."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sef.cli import app, update_command
from sef.update import DEFAULT_NAME, RepositoryServer

runner = CliRunner()
ENV = {"COLUMNS": "300", "NO_COLOR": "1", "TERM": "dumb"}


def _sef(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=ENV)
    return result.exit_code, result.output


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    directory = tmp_path / "repo"
    code, out = _sef("update", "init", "--repo", str(directory), "--online-expires-days", "2")
    assert code == 0, out
    assert "metadata/1.root.json" in out
    return directory


@pytest.fixture
def server(repo: Path) -> Iterator[RepositoryServer]:
    with RepositoryServer(repo) as running:
        yield running


def _publish(tmp_path: Path, repo: Path, version: str) -> tuple[int, str]:
    build = tmp_path / "build" / version / "sef-agent.tar.gz"
    build.parent.mkdir(parents=True, exist_ok=True)
    build.write_bytes(f"agent {version}".encode())
    return _sef("update", "publish", str(build), "--repo", str(repo), "--version", version)


def _agent(server: RepositoryServer, repo: Path, state: Path) -> list[str]:
    return [
        "--url",
        server.url,
        "--trusted-root",
        str(repo / "metadata" / "1.root.json"),
        "--state",
        str(state),
    ]


def test_publish_check_install_with_hook(
    tmp_path: Path, repo: Path, server: RepositoryServer
) -> None:
    agent = _agent(server, repo, tmp_path / "agent")
    code, out = _sef("update", "check", *agent)
    assert (code, out.strip()) == (0, "up to date: sef none")
    code, out = _publish(tmp_path, repo, "1.0.0")
    assert code == 0, out
    assert "published sef 1.0.0: sef/1.0.0/sef-agent.tar.gz (11 bytes" in out
    code, out = _sef("update", "check", *agent)
    assert (code, out.strip()) == (0, "update available: sef 1.0.0 (running none)")

    hook_out = tmp_path / "hook.txt"
    hook = (
        f"{sys.executable} -c \"import os; open({str(hook_out)!r}, 'w').write("
        "os.environ['SEF_UPDATE_VERSION'] + ' ' + os.environ['SEF_UPDATE_FILE'])\""
    )
    code, out = _sef("update", "install", *agent, "--then", hook)
    assert code == 0, out
    assert "installed sef 1.0.0 (was none)" in out
    installed = tmp_path / "agent" / "releases" / "1.0.0" / "sef-agent.tar.gz"
    assert installed.read_bytes() == b"agent 1.0.0"
    assert os.readlink(tmp_path / "agent" / "current") == "releases/1.0.0"
    assert hook_out.read_text() == f"1.0.0 {installed}"

    code, out = _sef("update", "install", *agent)
    assert (code, out.strip()) == (0, "up to date: sef 1.0.0")
    code, out = _sef("update", "timestamp", "--repo", str(repo))
    assert code == 0, out


def test_refusals_exit_2_and_keep_the_running_version(
    tmp_path: Path, repo: Path, server: RepositoryServer
) -> None:
    agent = _agent(server, repo, tmp_path / "agent")
    _publish(tmp_path, repo, "1.1.0")
    assert _sef("update", "install", *agent)[0] == 0
    _publish(tmp_path, repo, "1.2.0")
    (served,) = (repo / "targets" / "sef" / "1.2.0").glob("*.sef-agent.tar.gz")
    good = served.read_bytes()
    served.write_bytes(b"agent 6.6.6")
    code, out = _sef("update", "install", *agent)
    assert code == 2, out
    assert "error: update refused (tampered target): target sef/1.2.0/sef-agent.tar.gz" in out
    assert "running version 1.1.0 kept" in out
    assert os.readlink(tmp_path / "agent" / "current") == "releases/1.1.0"

    served.write_bytes(good)
    _publish(tmp_path, repo, "1.0.0")  # latest is now older than the running 1.1.0
    code, out = _sef("update", "install", *agent)
    assert code == 2, out
    assert "(software rollback)" in out and "running version 1.1.0 kept" in out
    assert os.readlink(tmp_path / "agent" / "current") == "releases/1.1.0"


def test_errors_exit_1(tmp_path: Path, repo: Path, server: RepositoryServer) -> None:
    code, out = _publish(tmp_path, repo, "1.0")
    assert code == 1 and "X.Y.Z" in out
    code, out = _sef("update", "init", "--repo", str(repo))
    assert code == 1 and "already holds" in out
    server.close()
    agent = _agent(server, repo, tmp_path / "agent")
    code, out = _sef("update", "check", *agent)
    assert code == 1, out
    assert "unavailable" in out and "running version none kept" in out
    missing_root = ["--url", server.url, "--trusted-root", str(tmp_path / "no.json")]
    code, out = _sef("update", "check", *missing_root, "--state", str(tmp_path / "a"))
    assert code == 1 and "no.json" in out


def test_cli_default_name_is_the_librarys() -> None:
    assert update_command.DEFAULT_NAME == DEFAULT_NAME


def test_serve_command_serves_the_repository(tmp_path: Path, repo: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "sef", "update", "serve", "--repo", str(repo), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **ENV, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("serving "), line
        url = line.rsplit(" ", 1)[1].strip()
        with urllib.request.urlopen(url + "metadata/timestamp.json", timeout=5) as response:
            assert response.read() == (repo / "metadata" / "timestamp.json").read_bytes()
    finally:
        process.terminate()
        process.wait(timeout=10)

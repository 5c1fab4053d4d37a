"""``pip install 'sef[agent]'`` alone runs the agents: no EMS server or control libraries.

A fresh venv (no system site-packages) gets SEF with only the ``agent`` extra, installed
the normal way (pip resolves and fetches the dependencies; its cache makes it quick after
the first time). Then ``sef bis``/``sef ucm`` start, a battery emulator and a BIS from
that venv publish telemetry on a real Mosquitto, and a command that needs the ``ems``
extra says so instead of failing with a traceback.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sef.broker import Mosquitto, free_port

ROOT = Path(__file__).resolve().parents[2]

# One pip install for the module; its own xdist worker (the install is I/O and CPU heavy).
pytestmark = [pytest.mark.xdist_group("agent-venv"), pytest.mark.timeout(900)]

NOT_IN_AGENT = (
    "fastapi",
    "uvicorn",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "httpx",
    "scipy",
    "matplotlib",
)
"""Top-level modules of the ems and control extras (and their main dependencies)."""


@pytest.fixture(scope="module")
def agent_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with ``sef[agent]`` installed from a copy of this source tree."""
    base = tmp_path_factory.mktemp("agent-extra")
    project = base / "sef"
    project.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, project / name)
    # A copy, not the tree itself: pip would leave build/ behind in the working tree.
    shutil.copytree(
        ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    venv = base / "venv"
    python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            f"{project}[agent]",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return venv


def _env(venv: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "SEF_CLOCK", "SEF_LOG_LEVEL")
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _sef(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "sef"), *args],
        capture_output=True,
        text=True,
        env=_env(venv),
        timeout=60,
    )


def test_agent_extra_leaves_out_the_ems_and_control_libraries(agent_venv: Path) -> None:
    check = (
        "import importlib.util, json; "
        f"print(json.dumps({{m: importlib.util.find_spec(m) is not None "
        f"for m in {NOT_IN_AGENT!r}}}))"
    )
    result = subprocess.run(
        [str(agent_venv / "bin" / "python"), "-c", check],
        capture_output=True,
        text=True,
        env=_env(agent_venv),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == dict.fromkeys(NOT_IN_AGENT, False)


@pytest.mark.parametrize(
    "command",
    [
        ["bis", "--help"],
        ["ucm", "--help"],
        ["emulate", "battery", "--help"],
        ["gateway", "--help"],
        ["--version"],
    ],
)
def test_agent_commands_start(agent_venv: Path, command: list[str]) -> None:
    result = _sef(agent_venv, *command)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_a_server_command_names_the_missing_extra(agent_venv: Path) -> None:
    result = _sef(agent_venv, "history", "--api", "http://127.0.0.1:9")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "pip install 'sef[ems]'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in reversed(started):
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_battery_emulator_and_bis_publish_telemetry(
    agent_venv: Path, mosquitto: Mosquitto, processes: list[subprocess.Popen[str]]
) -> None:
    messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="agent-extra-probe")
    client.on_message = lambda _client, _userdata, message: messages.put(message)
    client.connect(mosquitto.host, mosquitto.port)
    client.subscribe("sef/agents/bat-x/props/+/Telemetry", qos=1)
    client.loop_start()
    try:
        port = free_port()
        emulator = subprocess.Popen(
            [str(agent_venv / "bin" / "sef"), "emulate", "battery", "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(agent_venv),
        )
        processes.append(emulator)
        assert emulator.stdout is not None
        line = emulator.stdout.readline()
        assert "listening" in line, line + emulator.stdout.read()
        bis = subprocess.Popen(
            [
                str(agent_venv / "bin" / "sef"),
                "bis",
                "--insecure",
                "--modbus",
                f"tcp://127.0.0.1:{port}",
                "--id",
                "bat-x",
                "--broker",
                mosquitto.url,
                "--poll",
                "0.2",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(agent_venv),
        )
        processes.append(bis)
        deadline = time.monotonic() + 60
        telemetry: dict[str, Any] = {}
        while "Sys_SOC" not in telemetry:  # the battery's state of charge, read over Modbus
            try:
                message = messages.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                bis.send_signal(signal.SIGINT)
                output, _ = bis.communicate(timeout=10)
                pytest.fail(
                    f"no battery telemetry from the BIS within 60 s; last {telemetry}; "
                    f"its output:\n{output}"
                )
            telemetry = json.loads(message.payload)["value"]
        assert telemetry["Sys_SOC"][1] == pytest.approx(50.0, abs=1.0), telemetry
    finally:
        client.loop_stop()
        client.disconnect()

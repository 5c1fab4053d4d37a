"""``sef emulate inverter`` and ``sef inverter``: bad options are clear errors (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def sef(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sef", *args],
        capture_output=True,
        text=True,
        timeout=180,  # a CPU-starved CI host takes long to import sef
        env={**os.environ, "COLUMNS": "200"},
    )


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--port", "0", "--host", "0.0.0.0"], "no authentication"),
        (["--port", "0", "--ac-kw", "6", "--kva", "5"], "ac_kw <= kva"),
    ],
)
def test_emulator_refuses(args: list[str], reason: str) -> None:
    run = sef("emulate", "inverter", *args)
    assert run.returncode == 2, run.stdout + run.stderr
    assert reason in " ".join((run.stdout + run.stderr).split())


def test_emulator_refuses_a_bad_irradiance_file(tmp_path: Path) -> None:
    bad = tmp_path / "irr.csv"
    bad.write_text("time,ghi\n2026-06-21T12:00Z,-3\n")
    run = sef("emulate", "inverter", "--port", "0", "--irradiance", str(bad))
    assert run.returncode == 2
    text = " ".join((run.stdout + run.stderr).split())
    assert "irr.csv" in text and "negative" in text


def test_agent_refuses_a_bad_modbus_url_and_needs_credentials() -> None:
    run = sef("inverter", "--modbus", "udp://h:1", "--id", "pv-x", "--insecure")
    assert run.returncode == 2 and "tcp://HOST:PORT" in run.stdout + run.stderr
    run = sef("inverter", "--modbus", "tcp://127.0.0.1:1", "--id", "pv-x", "-b", "mqtt://h:1")
    assert run.returncode != 0
    assert "--insecure" in run.stdout + run.stderr  # secure by default: no plaintext silently

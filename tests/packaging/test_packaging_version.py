"""One version, in ``sef.__version__``: pyproject reads it, ``sef --version`` prints it."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

from typer.testing import CliRunner

import sef
from sef.cli import app

ROOT = Path(__file__).resolve().parents[2]


def test_sef_version_prints_the_package_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"sef {sef.__version__}"


def test_pyproject_takes_the_version_from_the_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "sef.__version__"}
    # The installed metadata (editable install) agrees: make reinstalls when it changes.
    assert importlib.metadata.version("sef") == sef.__version__

"""The project's own protocol spec is enough to pass certification: the vendor-style
agent in ``examples/paho_agent.py`` (paho-mqtt and the standard library, no ``sef``)
passes ``sef certify --insecure`` at level recommended on a real Mosquitto."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from broken_agents import EXAMPLE, WITHOUT_SEF, certify_agent

import sef.interface
from sef.broker import Mosquitto

STANDARD_DEMO_XML = Path(sef.interface.__file__).parent / "data" / "edu.pdx.powerlab.demo.xml"


def test_example_agent_passes_certification(mosquitto: Mosquitto, tmp_path: Path) -> None:
    # the vendor's own copy of the interface is compared with SEF's (--interface)
    run = certify_agent("example", mosquitto.url, tmp_path, ["--interface", str(STANDARD_DEMO_XML)])

    not_passed = {check: outcome for check, outcome in run.outcomes.items() if outcome != "PASS"}
    assert not_passed == {}, run.output
    assert run.exit_code == 0, run.output
    # every suite ran, the restart ones included
    assert {check.split(".")[0] for check in run.outcomes} == {
        "birth", "calls", "demo", "robustness", "sessions",
    }  # fmt: skip
    assert run.outcomes["sessions.restart"] == "PASS"


def imported_modules(source: str) -> set[str]:
    """The top-level names of every module ``source`` imports, anywhere in it."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add((node.module or "").split(".")[0] if node.level == 0 else ".")
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
            names.add("__import__")
    return names


def test_example_imports_only_paho_and_the_standard_library() -> None:
    imported = imported_modules(EXAMPLE.read_text())

    assert "paho" in imported
    assert imported - {"paho"} <= sys.stdlib_module_names, imported
    assert imported_modules("import sef.bus\nfrom sef import x\n") == {"sef"}  # the scan sees it


def test_example_runs_where_sef_cannot_be_imported() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_SEF, str(EXAMPLE), "--help"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert "--broker" in done.stdout and "--group" in done.stdout
    blocked = subprocess.run(
        [sys.executable, "-c", WITHOUT_SEF.replace("runpy.run_path", "import sef; runpy.run_path"),
         str(EXAMPLE), "--help"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert blocked.returncode != 0 and "ModuleNotFoundError" in blocked.stderr  # the guard works

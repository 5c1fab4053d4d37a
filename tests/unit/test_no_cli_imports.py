"""The CLI is the top layer: no other SEF module imports ``sef.cli`` (the demo and the EMS
share the agents table through ``sef.ems.render``)."""

from __future__ import annotations

import ast
from pathlib import Path

import sef

SRC = Path(sef.__file__).resolve().parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_only_the_cli_and_main_import_the_cli() -> None:
    climbing = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC)
        if relative.parts[0] == "cli" or relative == Path("__main__.py"):
            continue
        bad = sorted(n for n in _imports(path) if n == "sef.cli" or n.startswith("sef.cli."))
        if bad:
            climbing.append(f"{relative}: {', '.join(bad)}")
    assert not climbing, climbing


def test_the_ems_does_not_import_the_demo_or_control() -> None:
    for path in sorted((SRC / "ems").rglob("*.py")):
        bad = sorted(
            n for n in _imports(path) if n.split(".")[:2] in (["sef", "demo"], ["sef", "control"])
        )
        assert not bad, f"{path.relative_to(SRC)} imports {bad}"

#!/usr/bin/env python3
"""Check SEF's lower bounds: install the lowest declared versions and run a fast test subset.

Reads ``pyproject.toml``: every ``name>=X`` of the core dependencies, of the extras the
subset needs (:data:`EXTRAS`) and of the test tools it runs with (:data:`TEST_TOOLS`)
becomes the constraint ``name==X``. A fresh venv (no system site-packages) gets SEF with
those extras installed under the constraints (wheels only, as a user on this Python would
get them), then the tests in :data:`TESTS` run against it. A failure means a lower bound
in pyproject.toml is wrong: raise it to the oldest release that works.

Usage: scripts/check-min-versions.py [--keep DIR] [-- PYTEST-ARGS...]
(run from anywhere; ``make test`` runs it after the main suite). Needs Python >= 3.11.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

EXTRAS = ("ems", "control")
"""Extras whose lower bounds are checked (the subset imports the EMS store, API, controllers)."""

TEST_TOOLS = (
    "pytest",
    "pytest-asyncio",
    "pytest-xdist",
    "pytest-timeout",
    "hypothesis",
)
"""Test tools the subset runs with, also at their lower bounds (ruff, mypy... are not needed)."""

TESTS = (
    "tests/unit",
    "tests/interface",
    "tests/cta2045",
    "tests/bus",
    "tests/battery",
    "tests/bis",
    "tests/api",
    "tests/ems/test_store_retention.py",
    "tests/control/test_control_controllers.py",
    "tests/control/test_control_simulator.py::test_cli_writes_report",
    "tests/security/test_envelope.py",
    "tests/security/test_broker_tls_acl.py",
    "tests/security/test_enroll_server.py",
    "tests/security/test_renew.py",
    "tests/update",
)
"""The representative fast subset: pure units, protocols, the bus, battery + BIS end to end,
the EMS store and REST API on SQLite and PostgreSQL, the LP controllers (SciPy), the report
plots (Matplotlib), and security: PKI and signed envelopes (cryptography, joserfc), mutual
TLS with the generated broker ACL, the enrollment server (uvicorn's TLS internals) and
signed updates (tuf)."""

_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*?)\s*(;.*)?$")
_LOWER = re.compile(r">=\s*([^,\s]+)")


def _requirements(project: dict[str, object], extras: tuple[str, ...]) -> list[str]:
    """Core dependencies plus those of ``extras`` (self references like sef[ems] followed)."""
    name = str(project["name"])
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})  # type: ignore[assignment]
    out: list[str] = list(project.get("dependencies", []))  # type: ignore[call-overload]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        if extra not in optional:
            sys.exit(f"check-min-versions: no extra {extra!r} in pyproject.toml")
        for req in optional[extra]:
            match = _REQ.match(req)
            if match and match.group(1) == name:  # sef[ems,control]
                todo.extend(e.strip() for e in (match.group(2) or "[]")[1:-1].split(","))
            else:
                out.append(req)
    return out


def constraints(
    pyproject: Path, extras: tuple[str, ...] = EXTRAS, tools: tuple[str, ...] = TEST_TOOLS
) -> list[str]:
    """``name==lower-bound`` for each checked requirement; exits if one has no lower bound."""
    project = tomllib.loads(pyproject.read_text())["project"]
    test = {
        (_REQ.match(r) or sys.exit(r)).group(1).lower(): r
        for r in project["optional-dependencies"]["test"]
    }
    reqs = _requirements(project, extras) + [test[t] for t in tools]
    pins: list[str] = []
    for req in reqs:
        match = _REQ.match(req)
        lower = _LOWER.search(match.group(3)) if match else None
        if match is None or lower is None:
            sys.exit(f"check-min-versions: {req!r} has no lower bound (name>=X)")
        pins.append(f"{match.group(1)}=={lower.group(1)}")
    return pins


def copy_project(root: Path, dest: Path) -> Path:
    """Copy what a build of SEF reads into ``dest``; return it.

    pip builds a local directory in place, leaving ``build/`` behind, whose stale files
    would end up in later wheels; a copy keeps the working tree clean and the build exact.
    """
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(root / name, dest / name)
    shutil.copytree(
        root / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    return dest


def _run(cmd: list[str], **kwargs: object) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="build the venv here and keep it")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    pins = constraints(ROOT / "pyproject.toml")
    start = time.monotonic()
    tmp = None
    if args.keep:
        venv = args.keep.resolve()
        shutil.rmtree(venv, ignore_errors=True)
    else:
        tmp = tempfile.mkdtemp(prefix="sef-min-versions-")
        venv = Path(tmp) / "venv"
    try:
        # The base interpreter of whatever Python runs this script (a venv's, if in one).
        base = getattr(sys, "_base_executable", sys.executable)
        _run([base, "-m", "venv", str(venv)])
        python = str(venv / "bin" / "python")
        constraint_file = venv / "min-constraints.txt"
        constraint_file.write_text("\n".join(re.sub(r"\[[^\]]*\]", "", p) for p in pins) + "\n")
        print("check-min-versions: lower bounds\n  " + "\n  ".join(pins), flush=True)
        env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        project = copy_project(ROOT, venv / "sef-src")
        _run(
            [
                python,
                "-m",
                "pip",
                "install",
                "-q",
                "--only-binary",
                ":all:",
                "-c",
                str(constraint_file),
                f"{project}[{','.join(EXTRAS)}]",
                *(p.split("==")[0] for p in pins if p.split("==")[0] in TEST_TOOLS),
            ],
            env=env,
        )
        _run([python, "-m", "pip", "check"], env=env)
        installed = time.monotonic()
        print(f"check-min-versions: installed in {installed - start:.0f} s", flush=True)
        # pytest's rootdir conftest and pythonpath=tests apply; sef comes from the venv
        # (src/ is not on sys.path), so its package data is checked too.
        _run(
            [
                python,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-n",
                "auto",
                "--dist",
                "loadgroup",
                *TESTS,
                *args.pytest_args,
            ],
            cwd=ROOT,
            env={**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"},
        )
    except subprocess.CalledProcessError as exc:
        print(
            f"check-min-versions: FAILED ({exc.cmd[2] if len(exc.cmd) > 2 else exc.cmd}); "
            "a lower bound in pyproject.toml is too low",
            file=sys.stderr,
        )
        return 1
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"check-min-versions: OK in {time.monotonic() - start:.0f} s "
        f"(install {installed - start:.0f} s)",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

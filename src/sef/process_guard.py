"""Guards: a child server never outlives the process that started it.

A test, a bench or ``sef demo`` starts servers (Mosquitto, NATS, PostgreSQL, EMS
workers). When the starting process ends without stopping them (SIGKILL, a crash, a
pytest-xdist worker killed at its timeout), they would keep running with their ports and
temporary directories. A guard is a tiny ``/bin/sh`` process per server: it waits on a
pipe whose only writer is the starting process; when that process ends, however it ends,
the kernel closes the pipe, ``read`` returns and the guard signals the server (and, when
asked, removes the server's throwaway directory once the server has exited).

Why a guard and not ``PR_SET_PDEATHSIG``: the kernel clears that setting when a process
changes its user, as Mosquitto or PostgreSQL started as root do when they drop to their
own account; and it fires when the starting *thread* ends, not the process. The guard runs
in its own session, so a terminal's Ctrl-C does not reach it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["GUARD_SCRIPT", "start_guard", "stop_guard"]

GUARD_SCRIPT = (
    'read _ignored; kill -"$2" "$1" 2>/dev/null; [ -n "$3" ] || exit 0; '
    'while kill -0 "$1" 2>/dev/null; do sleep 0.2; done; rm -rf -- "$3"'
)
"""The guard (``/bin/sh -c``; ``$1`` the server's pid, ``$2`` the signal name, ``$3`` a
directory to remove after the server exited, or empty)."""


def start_guard(
    pid: int, *, signal: str = "TERM", remove: Path | str | None = None, name: str = "sef-guard"
) -> subprocess.Popen[bytes] | None:
    """Start the guard of process ``pid``: when this process ends without calling
    :func:`stop_guard`, ``pid`` gets ``SIG<signal>`` (e.g. ``TERM``, ``INT``) and then
    ``remove`` (a throwaway directory) is deleted. ``None`` without ``/bin/sh``."""
    if not Path("/bin/sh").exists():
        return None
    return subprocess.Popen(
        ["/bin/sh", "-c", GUARD_SCRIPT, name, str(pid), signal, str(remove or "")],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_guard(guard: subprocess.Popen[bytes] | None) -> None:
    """Stop a guard without letting it act (before stopping its server on purpose: it
    must not signal a later process given the same pid)."""
    if guard is None:
        return
    guard.kill()
    guard.wait()
    if guard.stdin is not None:
        guard.stdin.close()

"""A throwaway PostgreSQL server on a free port (for tests and benches).

Uses Debian's ``postgresql`` binaries (``/usr/lib/postgresql/*/bin``). PostgreSQL refuses
to run as root, so as root the server runs as the ``postgres`` system user.

By default the server is *relaxed* for speed (``fsync``, ``synchronous_commit`` and
``full_page_writes`` off): a throwaway server for tests and benches. The EMS store does not
rely on the server's setting: it commits every batch with ``synchronous_commit = on``
(see :mod:`sef.ems.store`), so a crash of this server loses no acknowledged batch (with
``fsync=off`` the WAL reaches the operating system, not the disk: a crash of the *machine*
could). ``PostgresServer(relaxed=False)`` runs a stock server.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from sef.process_guard import start_guard, stop_guard

__all__ = ["PostgresNotFound", "PostgresServer", "find_pg_bin"]


class PostgresNotFound(RuntimeError):
    """PostgreSQL's server binaries are not installed."""


def find_pg_bin() -> Path:
    """Directory with ``initdb`` and ``pg_ctl`` (newest installed version)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise PostgresNotFound(
        "PostgreSQL server is not installed: apt-get install postgresql "
        "(make test does it when run as root)"
    )


def _runuser() -> str:
    """Path of ``runuser``, looked up the way root's login shell would: ``PATH``, then the
    system's sbin directories (a root shell with a minimal ``PATH`` lacks them)."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    found = shutil.which("runuser", path=search)
    if found is None:
        raise PostgresNotFound("runuser not found (util-linux): needed to run PostgreSQL as root")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """initdb + pg_ctl start in a temporary directory; ``url(db)`` gives a database URL.

    Args:
        relaxed: ``fsync``, ``synchronous_commit`` and ``full_page_writes`` off (fast, not
            crash-safe by itself); ``False``: PostgreSQL's stock settings.
    """

    def __init__(self, *, relaxed: bool = True) -> None:
        self.relaxed = relaxed
        self.bin = find_pg_bin()
        self.port = _free_port()
        self._tmp = tempfile.mkdtemp(prefix="sef-pg-")
        self.guard: subprocess.Popen[bytes] | None = None
        """Stops the server and removes its directory if this process ends without
        :meth:`stop` (SIGKILL, a crash): :mod:`sef.process_guard`."""
        self.datadir = Path(self._tmp) / "data"
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self._as_user = [_runuser(), "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [*self._as_user, *args], capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stderr.strip() or result.stdout}")

    def start(self) -> PostgresServer:
        """Create the data directory if needed and start the server; return ``self``."""
        if os.geteuid() == 0:
            shutil.chown(self._tmp, "postgres")
            os.chmod(self._tmp, 0o755)
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.datadir),
            "-U",
            self.user,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        return self.resume()

    def resume(self) -> PostgresServer:
        """Start the server on its existing data directory (after :meth:`halt`)."""
        options = (
            f"-p {self.port} -k {self._tmp} -c listen_addresses=127.0.0.1 -c max_connections=200"
        )
        if self.relaxed:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-o",
            options,
            "-l",
            str(Path(self._tmp) / "log"),
            "-w",
            "start",
        )
        self._guard()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("PostgreSQL did not start")

    def _guard(self) -> None:
        """Guard the running postmaster (its pid is the first line of ``postmaster.pid``):
        a fast shutdown (SIGINT), then the throwaway directory removed."""
        stop_guard(self.guard)
        self.guard = None
        try:
            pid = int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return
        self.guard = start_guard(pid, signal="INT", remove=self._tmp, name="sef-pg-guard")

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of ``database`` on this server."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database ``name``; return its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def halt(self, mode: str = "fast") -> None:
        """Stop the server and keep its data (``pg_ctl stop -m MODE``: ``smart``, ``fast``,
        or ``immediate``, which is a crash: recovery replays the WAL at the next start)."""
        stop_guard(self.guard)
        self.guard = None
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop")

    def stop(self) -> None:
        """Stop the server (immediate shutdown) and delete its data."""
        stop_guard(self.guard)
        self.guard = None
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "stop")
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""Leader election among EMS workers sharing one PostgreSQL store.

Several EMS workers may run against one store (docs/operations.md, "Several EMS workers:
the leader"); exactly one of them runs the control side (live controller, OpenADR VEN,
retention, re-sending intents to agents that come back: :mod:`sef.ems._leader_duties`).
The others ingest, serve the API and take operator commands like the leader.

The leader is the worker holding a PostgreSQL *session advisory lock*
(``pg_try_advisory_lock(key)``) on a dedicated connection (:class:`LeaderLock`):

* a standby tries the lock every :attr:`LeaderLock.poll_s` (1 s);
* the holder checks its lock every :attr:`LeaderLock.check_s` (1 s): a query on the lock
  connection that must answer within :attr:`LeaderLock.query_timeout_s` and find the
  lock in ``pg_locks``. The moment the check fails (connection lost or terminated, lock
  gone, no answer) the holder **fences itself**: it is no longer leader, its listeners
  hear so at once (the duties are cancelled), and it rejoins as a standby only after
  :attr:`LeaderLock.rejoin_s`;
* the lock dies with the holder's database session: a killed process's socket closes and
  the server frees the lock at once; for a silent network partition both ends run TCP
  keepalives (:class:`Keepalive`: idle 5 s, interval 2 s, 3 probes, ``tcp_user_timeout``
  11 s; on the client through libpq, on the server through the session's
  ``tcp_keepalives_*`` settings), so the server frees the lock ~11 s after the holder
  went silent, while the holder fences itself within ``check_s + query_timeout_s``.

Advisory locks are per database: workers of one deployment share the store's database
and the key (:func:`leader_key`, from a name, default ``"sef-ems"``); two deployments in
one database need different keys.

A SQLite store (or none) means a single EMS: there is no election and that EMS is always
the leader (:class:`AlwaysLeader`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    import psycopg

    from sef.ems.store import Store

__all__ = [
    "DEFAULT_LEADER_KEY",
    "AlwaysLeader",
    "Keepalive",
    "LeaderLock",
    "Leadership",
    "leader_key",
    "leadership_for",
]

log = logging.getLogger("sef.ems.leader")

DEFAULT_LEADER_KEY = "sef-ems"
"""Name the default advisory-lock key is derived from (:func:`leader_key`)."""

T = TypeVar("T")

Listener = Callable[[bool], None]
"""Called with ``True`` when this worker became leader, ``False`` when it lost it."""


def leader_key(name: str) -> int:
    """The advisory-lock key (signed 64-bit) for ``name``: the integer itself when
    ``name`` is one in the int64 range, else the first 8 bytes of its SHA-256.
    ``ValueError`` for an empty name."""
    name = name.strip()
    if not name:
        raise ValueError("the leader key is empty")
    with contextlib.suppress(ValueError):
        number = int(name)
        if -(2**63) <= number < 2**63:
            return number
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@dataclass(frozen=True, slots=True)
class Keepalive:
    """TCP keepalive of the lock connection, both ends (s): after ``idle_s`` of silence,
    ``count`` probes ``interval_s`` apart; ``user_timeout_s`` bounds unacknowledged data.
    Defaults: a dead peer is noticed after 5 + 3 x 2 = 11 s."""

    idle_s: int = 5
    interval_s: int = 2
    count: int = 3
    user_timeout_s: int = 11

    def params(self) -> dict[str, str | int]:
        """Libpq connection parameters: client-side keepalives, and the server-side ones
        for this session (``options``), so the server frees the lock of a silent holder."""
        ms = self.user_timeout_s * 1000
        server = (
            f"-c tcp_keepalives_idle={self.idle_s} -c tcp_keepalives_interval={self.interval_s} "
            f"-c tcp_keepalives_count={self.count} -c tcp_user_timeout={ms}"
        )
        return {
            "keepalives": 1,
            "keepalives_idle": self.idle_s,
            "keepalives_interval": self.interval_s,
            "keepalives_count": self.count,
            "tcp_user_timeout": ms,
            "options": server,
        }


class Leadership(Protocol):
    """What the EMS and its duties need to know about leadership."""

    @property
    def is_leader(self) -> bool:
        """This worker runs the control side now."""
        ...

    @property
    def worker_id(self) -> str:
        """This worker's name (in ``/health`` and the lock holder's application name)."""
        ...

    @property
    def election(self) -> str:
        """``"postgresql"`` (advisory lock) or ``"none"`` (single EMS, always leader)."""
        ...

    @property
    def terms(self) -> int:
        """Times this worker became leader."""
        ...

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(is_leader)`` at each change (on the event loop)."""
        ...

    async def start(self) -> None:
        """Take part in the election (in the background)."""
        ...

    async def stop(self) -> None:
        """Leave the election (a holder releases the lock: a standby takes over at its
        next poll)."""
        ...


class AlwaysLeader:
    """No election: a single EMS (SQLite store, or none) is always the leader."""

    election = "none"

    def __init__(self, worker_id: str = "ems") -> None:
        self.worker_id = worker_id
        self.is_leader = True
        self.terms = 1

    def add_listener(self, listener: Listener) -> None:
        """Nothing ever changes: the listener is never called."""

    async def start(self) -> None:
        """Nothing to do."""

    async def stop(self) -> None:
        """Nothing to do."""


class LeaderLock:
    """Leader election through a PostgreSQL session advisory lock (module docstring).

    Args:
        conninfo: libpq connection string or URI of the store's database.
        key: advisory-lock key (:func:`leader_key`), or a name to derive it from.
        worker_id: this worker's name (``application_name`` of the lock connection is
            ``sef-leader:<worker_id>``).
        poll_s: how often a standby tries the lock, s.
        check_s: how often the holder checks it still holds the lock, s.
        query_timeout_s: longest wait for one answer on the lock connection (connect
            included) before giving up on it, s.
        rejoin_s: wait of a worker that lost the lock before it tries again, s.
        settle_s: wait between getting the lock and acting as leader, s (default
            ``check_s + query_timeout_s``): by then a holder whose session was ended under
            it (``pg_terminate_backend``, a server restart) has noticed and fenced itself,
            so two workers never act at once.
        keepalive: TCP keepalive settings of the lock connection.
        on_change: a first listener (:meth:`add_listener`).
    """

    election = "postgresql"

    def __init__(
        self,
        conninfo: str,
        key: int | str = DEFAULT_LEADER_KEY,
        *,
        worker_id: str = "ems",
        poll_s: float = 1.0,
        check_s: float = 1.0,
        query_timeout_s: float = 3.0,
        rejoin_s: float = 3.0,
        settle_s: float | None = None,
        keepalive: Keepalive | None = None,
        on_change: Listener | None = None,
    ) -> None:
        self.conninfo = conninfo
        self.key = key if isinstance(key, int) else leader_key(key)
        self.worker_id = worker_id
        self.poll_s = poll_s
        self.check_s = check_s
        self.query_timeout_s = query_timeout_s
        self.rejoin_s = rejoin_s
        self.settle_s = check_s + query_timeout_s if settle_s is None else settle_s
        self.keepalive = keepalive or Keepalive()
        self._listeners: list[Listener] = [] if on_change is None else [on_change]
        self.is_leader = False
        self.terms = 0
        """Times this worker became leader."""
        self.fenced = 0
        """Times it stopped being leader on a failed check (not on :meth:`stop`)."""
        self.last_reason: str | None = None
        """Why it last stopped being leader (or could not take part)."""
        self.changed_at = time.monotonic()
        """When leadership last changed (``time.monotonic``, s)."""
        self.acquired_at: float | None = None
        """When this worker last got the lock (``time.monotonic``, s; it leads from
        ``settle_s`` later)."""
        self.backend_pid: int | None = None
        """The lock connection's server process id (``pg_terminate_backend``), if any."""
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._abandoned: set[asyncio.Future[Any]] = set()  # queries cancelled on a timeout
        self._leading = asyncio.Event()
        self._following = asyncio.Event()
        self._following.set()

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(is_leader)`` at each change (on the event loop; errors logged)."""
        self._listeners.append(listener)

    async def wait(self, leader: bool = True, timeout_s: float | None = None) -> None:
        """Wait until this worker is (``leader``) or is not the leader; ``TimeoutError``
        after ``timeout_s``."""
        event = self._leading if leader else self._following
        await asyncio.wait_for(event.wait(), timeout_s)

    async def start(self) -> None:
        """Take part in the election: try the lock now and every ``poll_s`` (a database
        that does not answer is logged and tried again), in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"leader election {self.worker_id}")

    async def stop(self) -> None:
        """Leave the election: release the lock if held, close the connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        conn = self._conn
        if conn is not None and self.is_leader:
            with contextlib.suppress(Exception):
                await self._query(conn, "SELECT pg_advisory_unlock(%s)", self.key)
        self._set(False, "stopped")
        await self._close()

    # -- the loop -----------------------------------------------------------------
    async def _run(self) -> None:
        first = True
        while True:
            was_leader = self.is_leader
            try:
                if self.is_leader:
                    await asyncio.sleep(self.check_s)
                    if not await self._holds():
                        await self._drop("the lock is gone")
                else:
                    if not first:
                        await asyncio.sleep(self.poll_s)
                    first = False
                    await self._attempt()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # lost connection, no answer: fence, start over
                await self._drop(f"{type(exc).__name__}: {exc}".strip().rstrip(":"))
            if was_leader and not self.is_leader:
                await asyncio.sleep(self.rejoin_s)

    async def _attempt(self) -> None:
        """A standby's try: connect if needed, ``pg_try_advisory_lock``."""
        if self._conn is None:
            self._conn = await self._bounded(self._connect())
        if await self._query(self._conn, "SELECT pg_try_advisory_lock(%s)", self.key):
            self.acquired_at = time.monotonic()
            await asyncio.sleep(self.settle_s)  # a fenced holder's last moments (settle_s)
            if not await self._holds():
                raise ConnectionError("the lock was lost while settling")
            self._set(True, None)

    async def _holds(self) -> bool:
        """The holder's check: the lock connection answers and holds the lock."""
        if self._conn is None:
            return False
        high, low = (self.key >> 32) & 0xFFFFFFFF, self.key & 0xFFFFFFFF
        return bool(
            await self._query(
                self._conn,
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND "
                "pid = pg_backend_pid() AND granted AND objsubid = 1 AND "
                "classid = %s::bigint::oid AND objid = %s::bigint::oid)",
                high,
                low,
            )
        )

    async def _connect(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        import psycopg
        from psycopg.conninfo import make_conninfo

        conninfo = make_conninfo(
            self.conninfo,
            connect_timeout=max(1, round(self.query_timeout_s)),
            application_name=f"sef-leader:{self.worker_id}"[:63],
            **self.keepalive.params(),
        )
        conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
        self.backend_pid = conn.info.backend_pid
        return conn

    async def _query(
        self, conn: psycopg.AsyncConnection[tuple[object, ...]], sql: str, *args: int
    ) -> object:
        async def run() -> object:
            cursor = await conn.execute(sql, args)
            row = await cursor.fetchone()
            return None if row is None else row[0]

        return await self._bounded(run())

    async def _bounded(self, work: Coroutine[Any, Any, T]) -> T:
        """``work``'s result, or ``TimeoutError`` after ``query_timeout_s`` *without*
        waiting for its cancellation (psycopg waits seconds for a server that does not
        answer to cancel a query: the fence must not wait for that)."""
        task = asyncio.ensure_future(work)
        done, _ = await asyncio.wait({task}, timeout=self.query_timeout_s)
        if not done:
            task.cancel()
            self._abandoned.add(task)
            task.add_done_callback(self._forget)
            raise TimeoutError(f"no answer from the database within {self.query_timeout_s:g} s")
        return task.result()

    def _forget(self, task: asyncio.Future[Any]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: its connection is being dropped anyway

    async def _drop(self, reason: str) -> None:
        """Fence: stop being leader now (listeners told), then close the connection."""
        if self.is_leader:
            self.fenced += 1
            log.warning("worker %s: no longer the leader: %s", self.worker_id, reason)
        elif reason != self.last_reason:  # a standby logs each new trouble once
            log.warning("worker %s: leader election: %s", self.worker_id, reason)
        self._set(False, reason)
        self.last_reason = reason
        await self._close()

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        self.backend_pid = None
        if conn is not None:
            with contextlib.suppress(Exception):
                await self._bounded(conn.close())

    def _set(self, leader: bool, reason: str | None) -> None:
        if leader == self.is_leader:
            return
        self.is_leader = leader
        self.changed_at = time.monotonic()
        if leader:
            self.terms += 1
            self._following.clear()
            self._leading.set()
            log.info("worker %s: leader (advisory lock %d)", self.worker_id, self.key)
        else:
            self.last_reason = reason
            self._leading.clear()
            self._following.set()
        for listener in list(self._listeners):
            try:
                listener(leader)
            except Exception:
                log.exception("leadership listener failed")


def leadership_for(
    store: Store | None, worker_id: str, key: int | str = DEFAULT_LEADER_KEY
) -> Leadership:
    """A :class:`LeaderLock` on ``store``'s database when it is PostgreSQL, else
    :class:`AlwaysLeader` (SQLite or no store: a single EMS, no election)."""
    if store is None or store.dialect != "postgresql":
        return AlwaysLeader(worker_id)
    url = store.engine.url.set(drivername="postgresql")
    return LeaderLock(url.render_as_string(hide_password=False), key, worker_id=worker_id)

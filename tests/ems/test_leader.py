"""Leader election among EMS workers (issue 16 items 5 and 6): :class:`LeaderLock` on a
real PostgreSQL (the ``pg_server`` fixture, one database per test).

Exactly one of two holders leads; a SIGKILLed holder process hands the lock over; a holder
whose session is terminated (``pg_terminate_backend``) or whose server process stops
answering (SIGSTOP) fences itself, and two holders never lead at the same moment."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable

import psycopg
import pytest

from sef.ems._leader import AlwaysLeader, Keepalive, LeaderLock, leader_key, leadership_for
from sef.ems.store import Store
from sef.ems.store.pgserver import PostgresServer

HOLDER = """
import asyncio, sys, time
from sef.ems._leader import LeaderLock

async def main() -> None:
    lock = LeaderLock(sys.argv[1], sys.argv[2], worker_id="child")
    lock.add_listener(lambda leader: print("LEADER" if leader else "FENCED", flush=True))
    await lock.start()
    await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.fixture
def db(pg_server: PostgresServer) -> str:
    """A fresh database of this test's own (advisory locks are per database)."""
    return pg_server.create_database(f"t_{uuid.uuid4().hex[:12]}")


class Timeline:
    """Leadership changes of several holders, on one monotonic clock."""

    def __init__(self) -> None:
        self.changes: list[tuple[float, str, bool]] = []

    def listener(self, name: str) -> Callable[[bool], None]:
        return lambda leader: self.changes.append((time.monotonic(), name, leader))

    def max_leaders(self) -> int:
        """Most holders leading at once over the timeline."""
        leading: set[str] = set()
        most = 0
        for _, name, leader in sorted(self.changes):
            (leading.add if leader else leading.discard)(name)
            most = max(most, len(leading))
        return most


@pytest.fixture
async def pair(db: str) -> AsyncIterator[tuple[LeaderLock, LeaderLock, Timeline]]:
    """Two holders of one key, started; a timeline of their changes."""
    timeline = Timeline()
    a = LeaderLock(db, "pair", worker_id="a", on_change=timeline.listener("a"))
    b = LeaderLock(db, "pair", worker_id="b", on_change=timeline.listener("b"))
    await a.start()
    await b.start()
    yield a, b, timeline
    await a.stop()
    await b.stop()


async def first_leader(*locks: LeaderLock, timeout_s: float = 30.0) -> LeaderLock:
    waits = {asyncio.ensure_future(lock.wait(True)): lock for lock in locks}
    done, pending = await asyncio.wait(waits, timeout=timeout_s, return_when="FIRST_COMPLETED")
    for future in pending:
        future.cancel()
    assert done, "no holder became leader"
    return waits[done.pop()]


def test_leader_key() -> None:
    assert leader_key("42") == 42
    assert leader_key(str(-(2**63))) == -(2**63)
    assert leader_key("sef-ems") == leader_key(" sef-ems ")
    assert leader_key("sef-ems") != leader_key("sef-ems-2")
    assert -(2**63) <= leader_key(str(2**63)) < 2**63  # out of range: hashed
    with pytest.raises(ValueError, match="empty"):
        leader_key(" ")


def test_keepalive_parameters() -> None:
    params = Keepalive().params()
    assert params["keepalives_idle"] == 5
    assert params["keepalives_interval"] == 2
    assert params["keepalives_count"] == 3
    assert params["tcp_user_timeout"] == 11_000
    assert "-c tcp_keepalives_idle=5" in str(params["options"])


async def test_no_election_without_postgresql(tmp_path: object) -> None:
    """A SQLite store, or none: a single EMS, always the leader."""
    store = Store.open(f"sqlite:///{tmp_path}/ems.db")
    try:
        for leadership in (leadership_for(store, "w"), leadership_for(None, "w")):
            assert isinstance(leadership, AlwaysLeader)
            await leadership.start()
            assert leadership.is_leader and leadership.election == "none"
            await leadership.stop()
            assert leadership.is_leader
    finally:
        store.close()


async def test_exactly_one_leader(pair: tuple[LeaderLock, LeaderLock, Timeline], db: str) -> None:
    a, b, timeline = pair
    leader = await first_leader(a, b)
    other = b if leader is a else a
    for _ in range(30):  # 3 s of both checking and polling
        await asyncio.sleep(0.1)
        assert leader.is_leader and not other.is_leader
    assert timeline.max_leaders() == 1
    # the lock connection runs the server-side keepalives too (a partitioned holder's
    # session ends and frees the lock)
    assert leader._conn is not None
    cursor = await leader._conn.execute("SHOW tcp_keepalives_idle")
    assert await cursor.fetchone() == ("5",)
    # a different key is a different election
    third = LeaderLock(db, "another deployment", worker_id="c")
    await third.start()
    try:
        await third.wait(True, 30.0)
    finally:
        await third.stop()
    # a clean stop hands over at the standby's next poll
    await leader.stop()
    await other.wait(True, 30.0)
    assert timeline.max_leaders() == 1


async def test_terminated_session_fences_the_leader(
    pair: tuple[LeaderLock, LeaderLock, Timeline], db: str
) -> None:
    a, b, timeline = pair
    leader = await first_leader(a, b)
    other = b if leader is a else a
    assert leader.backend_pid is not None
    killed = time.monotonic()
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (leader.backend_pid,))
    await leader.wait(False, 20.0)
    fenced = time.monotonic()
    await other.wait(True, 30.0)
    took_over = time.monotonic()
    print(
        f"terminated: fenced after {fenced - killed:.2f} s, standby leads after "
        f"{took_over - killed:.2f} s"
    )
    assert leader.fenced == 1 and leader.last_reason is not None
    assert timeline.max_leaders() == 1, timeline.changes  # never two at once
    # the fenced worker is a standby now: it does not take the lock back
    await asyncio.sleep(leader.rejoin_s + 2 * leader.poll_s)
    assert other.is_leader and not leader.is_leader


async def test_silent_server_process_fences_the_leader(
    pair: tuple[LeaderLock, LeaderLock, Timeline],
) -> None:
    """The leader's server process stops answering (SIGSTOP, as in a partition): the
    holder's check times out and it fences itself; the lock is still held by that session,
    so nobody leads until the session ends (here: SIGCONT, and the closed socket)."""
    a, b, timeline = pair
    leader = await first_leader(a, b)
    other = b if leader is a else a
    pid = leader.backend_pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        await leader.wait(False, 20.0)
        print(f"silent server process: fenced after {time.monotonic() - stopped:.2f} s")
        assert "Timeout" in str(leader.last_reason)
        assert not other.is_leader
    finally:
        os.kill(pid, signal.SIGCONT)
    await first_leader(a, b)
    assert timeline.max_leaders() == 1, timeline.changes


async def test_sigkill_of_the_leader_process_hands_over(db: str) -> None:
    """The holder is a process of its own; SIGKILL ends its session with its socket."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, db, "killed"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    standby = LeaderLock(db, "killed", worker_id="standby")
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 60.0)
        assert line.strip() == "LEADER", (line, child.poll())
        await standby.start()
        await asyncio.sleep(2.0)
        assert not standby.is_leader
        killed = time.monotonic()
        child.send_signal(signal.SIGKILL)
        await standby.wait(True, 30.0)
        print(f"SIGKILL of the leader: standby leads after {time.monotonic() - killed:.2f} s")
        assert standby.acquired_at is not None and standby.acquired_at > killed
    finally:
        child.kill()
        child.wait()
        await standby.stop()

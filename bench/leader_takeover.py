"""How long the EMS's control side takes to move to another worker (issue 16 item 6).

A throwaway PostgreSQL; a :class:`~sef.ems._leader.LeaderLock` holder in a process of its
own and a standby in this one (default settings: poll 1 s, check 1 s, query timeout 3 s,
settle 4 s). Per run, one of:

* ``kill``: SIGKILL of the holder process; *lock* = until the standby holds the advisory
  lock (the baseline: PostgreSQL frees it with the socket), *lead* = until it leads
  (lock + settle);
* ``terminate``: ``pg_terminate_backend`` of the holder's session; *fence* = until the
  holder fenced itself, *lead* = until the standby leads;
* ``silent``: SIGSTOP of the holder's server process (a partition as the holder sees it:
  no answer); *fence* = until the holder fenced itself (its check times out).

Prints each run, the medians and lead/lock (the settle's cost). Note the load (``uptime``).

    .venv/bin/python bench/leader_takeover.py --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid

import psycopg

from sef.ems._leader import LeaderLock
from sef.ems.store.pgserver import PostgresServer

HOLDER = """
import asyncio, sys
from sef.ems._leader import LeaderLock

async def main() -> None:
    lock = LeaderLock(sys.argv[1], "bench", worker_id="holder")
    lock.add_listener(lambda leader: print("LEADER" if leader else "FENCED", flush=True))
    await lock.start()
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def kill_run(db: str) -> tuple[float, float]:
    """SIGKILL of the holder process: (lock, lead) s."""
    child = subprocess.Popen([sys.executable, "-c", HOLDER, db], stdout=subprocess.PIPE, text=True)
    standby = LeaderLock(db, "bench", worker_id="standby")
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 60.0)
        assert line.startswith("LEADER"), line
        await standby.start()
        await asyncio.sleep(1.5)  # a standby polling
        killed = time.monotonic()
        child.send_signal(signal.SIGKILL)
        await standby.wait(True, 60.0)
        assert standby.acquired_at is not None
        return standby.acquired_at - killed, time.monotonic() - killed
    finally:
        child.kill()
        child.wait()
        await standby.stop()


async def terminate_run(db: str) -> tuple[float, float]:
    """``pg_terminate_backend`` of the holder (both in this process): (fence, lead) s."""
    holder = LeaderLock(db, "bench", worker_id="holder")
    standby = LeaderLock(db, "bench", worker_id="standby")
    try:
        await holder.start()
        await holder.wait(True, 60.0)
        await standby.start()
        await asyncio.sleep(1.5)
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as admin:
            killed = time.monotonic()
            await admin.execute("SELECT pg_terminate_backend(%s)", (holder.backend_pid,))
        await holder.wait(False, 60.0)
        fenced = time.monotonic() - killed
        await standby.wait(True, 60.0)
        return fenced, time.monotonic() - killed
    finally:
        await holder.stop()
        await standby.stop()


async def silent_run(db: str) -> float:
    """SIGSTOP of the holder's server process: fence s."""
    holder = LeaderLock(db, "bench", worker_id="holder")
    try:
        await holder.start()
        await holder.wait(True, 60.0)
        pid = holder.backend_pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            stopped = time.monotonic()
            await holder.wait(False, 60.0)
            return time.monotonic() - stopped
        finally:
            os.kill(pid, signal.SIGCONT)
    finally:
        await holder.stop()


async def main(runs: int) -> None:
    with PostgresServer() as server:
        kills, terms, silents = [], [], []
        for k in range(runs):
            db = server.create_database(f"b_{uuid.uuid4().hex[:10]}")
            kills.append(await kill_run(db))
            terms.append(await terminate_run(db))
            silents.append(await silent_run(db))
            print(
                f"run {k + 1}: kill lock {kills[-1][0]:.3f} s lead {kills[-1][1]:.2f} s | "
                f"terminate fence {terms[-1][0]:.2f} s lead {terms[-1][1]:.2f} s | "
                f"silent fence {silents[-1]:.2f} s",
                flush=True,
            )
    lock = statistics.median(k[0] for k in kills)
    lead = statistics.median(k[1] for k in kills)
    print(f"median of {runs}: SIGKILL -> lock {lock:.3f} s (baseline), lead {lead:.2f} s")
    print(
        f"median of {runs}: terminate -> fence {statistics.median(t[0] for t in terms):.2f} s,"
        f" lead {statistics.median(t[1] for t in terms):.2f} s"
    )
    print(f"median of {runs}: silent server -> fence {statistics.median(silents):.2f} s")
    print(f"lead/lock after SIGKILL: {lead / max(lock, 1e-6):.0f}x (the settle's cost)")
    print("load:", os.getloadavg())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    asyncio.run(main(parser.parse_args().runs))

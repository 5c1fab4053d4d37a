"""Defects 18 and 19 of issue 11: a PostgreSQL outage during ingest, with the project's own
server settings (``synchronous_commit=off``, ``fsync=off``) and with a stock server.

A test client publishes 10 000 sequence-numbered telemetry messages at QoS 1 into a real
Mosquitto; a real EMS with a PostgreSQL store (a server of this test's own, since the test
stops it) consumes them and serves its API. After 3 000 messages PostgreSQL is stopped
(``pg_ctl stop -m fast``), or crashed (``-m immediate``), for 10 s while publishing goes
on; then it is started again. Afterwards every message must be stored exactly once: a
message the EMS acknowledged before its batch was durable would be missing after the crash
(the broker does not send an acknowledged message again). Before the fix the crash lost
messages acknowledged on a ``synchronous_commit=off`` commit, and ``/health`` stayed ok
through the outage. Now ``/health`` must answer 503 ``degraded`` during the outage and ok
again after, and the EMS logs ``store recovered after N s, M rows written``.

The broker's queue for the EMS holds the backlog: ``max_queued_messages 200000`` and
``max_queued_bytes 0`` (no byte limit) in this test's Mosquitto; the EMS acknowledges
nothing while its store is down, so at most ``max_inflight_messages`` (1000) messages are
in flight to it and the rest wait in its queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from store_stack import birth, publisher, start_ems, stored_seqs, telemetry

from sef.broker import Mosquitto
from sef.ems._recorder import Recorder
from sef.ems.store import Store
from sef.ems.store.pgserver import PostgresServer
from support import path_with_system_sbin, wait_for

AGENTS = 10
PER_AGENT = 1000
TOTAL = AGENTS * PER_AGENT
OUTAGE_AT = 3000
"""The message after which PostgreSQL goes down."""
OUTAGE_S = 10.0
BATCH = 250
"""Messages published between two pauses of 50 ms: about 5 000 messages/s."""


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto whose queue for the EMS holds far more than the test's backlog."""
    mosquitto = Mosquitto(
        workdir=tmp_path / "mosquitto",
        extra_config="max_queued_messages 200000\nmax_queued_bytes 0\n",
    )
    mosquitto.workdir.mkdir()  # type: ignore[union-attr]
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


@pytest.fixture(params=[True, False], ids=["project-settings", "stock-server"])
def server(request: pytest.FixtureRequest) -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own: relaxed as the project runs it (fsync and
    synchronous_commit off), or stock."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", path_with_system_sbin(os.environ.get("PATH", "")))
        pg = PostgresServer(relaxed=request.param).start()
        yield pg
        pg.stop()


@pytest.mark.xdist_group("pg-outage")
async def test_postgresql_stopped_and_crashed_during_ingest_loses_nothing(
    broker: Mosquitto,
    server: PostgresServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="sef.ems.recorder")
    store = Store.open(server.create_database("outage"))
    stack = await start_ems(broker.url, store)
    client = await publisher(broker.url, "outage-source")
    health: dict[str, list[tuple[int, str]]] = {}
    try:
        for mode in ("fast", "immediate"):
            names = [f"{mode}-{a}" for a in range(AGENTS)]
            for name in names:
                birth(client, name)
            await asyncio.sleep(0.3)
            seen: list[tuple[int, str]] = []
            health[mode] = seen
            down_at = 0.0
            polling = asyncio.create_task(_poll_health(stack.http, seen))
            base = time.time() - PER_AGENT
            for i in range(TOTAL):
                agent, seq = i % AGENTS, 1 + i // AGENTS
                telemetry(client, names[agent], seq, base + seq)
                if i % BATCH == BATCH - 1:
                    await asyncio.sleep(0.05)
                if i == OUTAGE_AT:
                    await asyncio.to_thread(server.halt, mode)
                    down_at = time.monotonic()
            await asyncio.sleep(max(0.0, down_at + OUTAGE_S - time.monotonic()))
            await asyncio.to_thread(server.resume)

            def all_stored(names: list[str] = names) -> bool:
                return sum(store.count_telemetry(name) for name in names) >= TOTAL

            with contextlib.suppress(AssertionError):  # counted below
                await wait_for(all_stored, 30.0, step_s=0.25)
            await asyncio.sleep(0.5)  # anything extra (a duplicate) would land by now
            polling.cancel()
            expected = list(range(1, PER_AGENT + 1))
            rows = {name: stored_seqs(store, name) for name in names}
            lost = sum(len(set(expected) - set(seqs)) for seqs in rows.values())
            twice = sum(len(seqs) - len(set(seqs)) for seqs in rows.values())
            assert (lost, twice) == (0, 0), (
                f"{mode}: {lost} of {TOTAL} messages lost, {twice} stored twice"
            )
            assert all(seqs == expected for seqs in rows.values())
            recorder = stack.ems.recorder
            assert recorder is not None
            await wait_for(functools.partial(_store_ok, recorder), 5.0)
            final = await stack.http.get("/health")
            assert final.status_code == 200 and final.json()["status"] == "ok", final.text
    finally:
        await stack.stop()
        await client.stop()
        store.close()
    for mode, seen in health.items():
        degraded = [reason for code, reason in seen if code == 503]
        assert degraded, f"{mode}: /health never said degraded during the outage: {seen[:5]}"
        assert all("store" in reason for reason in degraded), degraded
    recovered = [
        r.getMessage() for r in caplog.records if "store recovered after" in r.getMessage()
    ]
    assert len(recovered) >= 2, recovered
    assert all("rows written" in line for line in recovered)


def _store_ok(recorder: Recorder) -> bool:
    return recorder.health().ok


async def _poll_health(http: object, seen: list[tuple[int, str]]) -> None:
    """Record ``/health`` every 0.2 s: (HTTP status, reason)."""
    import httpx

    assert isinstance(http, httpx.AsyncClient)
    while True:
        try:
            answer = await http.get("/health", timeout=2.0)
            seen.append((answer.status_code, answer.json().get("reason") or ""))
        except httpx.HTTPError as exc:
            seen.append((0, repr(exc)))
        await asyncio.sleep(0.2)

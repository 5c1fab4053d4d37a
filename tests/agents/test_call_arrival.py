"""The call server's arrival hook (``CallServer(on_arrival=...)``): device reads start
before a call is checked, the checks then run on the next loop turn, and calls still run
in the order they arrived.

Pure logic on a real event loop: the calls carry no ``reply_to``, so the bus client is
never connected or used.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from sef.agents._calls import CallServer
from sef.bus import BusClient, Call, Message, Topics
from sef.clock import RealClock
from sef.interface import AGENT_INTERFACE, builtin_interface

AGENT = "arrival-1"


def make_server(on_arrival: object, executed: list[str]) -> tuple[CallServer, Topics]:
    topics = Topics()
    clock = RealClock()

    def ping() -> float:
        executed.append("Ping")
        return clock.now()

    def rebirth() -> None:
        executed.append("Rebirth")

    server = CallServer(
        AGENT,
        BusClient("mqtt://127.0.0.1:1", client_id="never-connected"),
        topics,
        clock,
        {AGENT_INTERFACE: builtin_interface(AGENT_INTERFACE)},
        {(AGENT_INTERFACE, "Ping"): ping, (AGENT_INTERFACE, "Rebirth"): rebirth},
        on_arrival=on_arrival,  # type: ignore[arg-type]
    )
    return server, topics


def message(topics: Topics, method: str, call_id: str) -> Message:
    now = RealClock().now()
    call = Call(call_id, [], ts=now, exp=now + 60.0)
    return Message(topics.call(AGENT, AGENT_INTERFACE, method), call.to_payload())


async def run_until(executed: list[str], n: int) -> None:
    for _ in range(200):
        if len(executed) >= n:
            return
        await asyncio.sleep(0.005)


async def test_a_started_read_defers_the_check_to_the_next_loop_turn() -> None:
    arrivals: list[tuple[str, str]] = []
    executed: list[str] = []

    def on_arrival(interface: str, method: str) -> bool:
        arrivals.append((interface, method))
        return True

    server, topics = make_server(on_arrival, executed)
    server.receive(AGENT_INTERFACE, "Ping", message(topics, "Ping", "c1"))
    assert arrivals == [(AGENT_INTERFACE, "Ping")]  # before anything was checked
    assert server._queue.qsize() == 0  # the check has not run yet
    await asyncio.sleep(0)
    assert server._queue.qsize() == 1
    worker = asyncio.create_task(server.serve())
    try:
        await run_until(executed, 1)
    finally:
        worker.cancel()
    assert executed == ["Ping"]
    assert server.rejected == 0


async def test_calls_behind_a_deferred_check_keep_their_arrival_order() -> None:
    executed: list[str] = []
    started = iter([True, False, False])  # only the first arrival starts a read

    server, topics = make_server(lambda interface, method: next(started), executed)
    server.receive(AGENT_INTERFACE, "Rebirth", message(topics, "Rebirth", "c1"))
    server.receive(AGENT_INTERFACE, "Ping", message(topics, "Ping", "c2"))
    server.receive(AGENT_INTERFACE, "Rebirth", message(topics, "Rebirth", "c3"))
    worker = asyncio.create_task(server.serve())
    try:
        await run_until(executed, 3)
    finally:
        worker.cancel()
    # without the ordering rule Ping (not deferred) would overtake the first Rebirth
    assert executed == ["Rebirth", "Ping", "Rebirth"]


async def test_no_hook_checks_at_once() -> None:
    executed: list[str] = []
    server, topics = make_server(None, executed)
    server.receive(AGENT_INTERFACE, "Ping", message(topics, "Ping", "c1"))
    assert server._queue.qsize() == 1


async def test_a_failing_hook_is_logged_and_the_call_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    executed: list[str] = []

    def on_arrival(interface: str, method: str) -> bool:
        raise RuntimeError("adapter bug")

    server, topics = make_server(on_arrival, executed)
    with caplog.at_level(logging.ERROR, logger="sef.agent"):
        server.receive(AGENT_INTERFACE, "Ping", message(topics, "Ping", "c1"))
    assert server._queue.qsize() == 1
    assert any("arrival hook" in r.getMessage() for r in caplog.records)


async def test_a_refused_call_is_refused_after_a_deferred_check() -> None:
    executed: list[str] = []
    server, topics = make_server(lambda interface, method: True, executed)
    server.receive(
        AGENT_INTERFACE, "Ping", Message(topics.call(AGENT, AGENT_INTERFACE, "Ping"), b"{")
    )
    assert server.rejected == 0
    await asyncio.sleep(0)
    assert server.rejected == 1
    assert server._queue.qsize() == 0

"""Issue 11, defect 9: streams, concurrent requests, query parameters and JSON bodies are
bounded. Real Mosquitto, an EMS with agents and a store, uvicorn on a free port; requests
over real sockets (httpx, or raw sockets to hold connections open)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from api_stack import Stack, start_stack, stop_stack
from support import wait_for

STREAMS = 100
"""The default cap of open /events streams."""
REQUESTS = 256
"""The default cap of requests handled at once."""
CLIENT_REQUESTS = 64
"""The default cap of requests handled at once from one client address."""


def bearer(stack: Stack) -> bytes:
    """The ``Authorization`` header line of the stack's admin token (the API
    authenticates before it counts a request)."""
    return b"Authorization: Bearer " + stack.tokens["admin"].encode() + b"\r\n"


def source(number: int, per_address: int = 50) -> tuple[str, int]:
    """A local address for the ``number``-th connection: ``per_address`` per loopback
    address from 127.0.0.2 on (the API caps requests per client address)."""
    return (f"127.0.0.{2 + number // per_address}", 0)


@pytest.fixture
async def stack(broker_url: str, db_url: str) -> AsyncIterator[Stack]:
    """The API stack with a store; once on SQLite and once on PostgreSQL."""
    running = await start_stack(broker_url, db_url)
    yield running
    await stop_stack(running)


@pytest.fixture
async def sqlite_stack(broker_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    """The API stack on SQLite only (for the tests of connection limits)."""
    running = await start_stack(broker_url, f"sqlite:///{tmp_path / 'ems.db'}")
    yield running
    await stop_stack(running)


async def open_stream(
    stack: Stack, local: tuple[str, int] | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """Open ``GET /events`` on a raw connection; return it with the answer's first bytes
    (through the ``hello`` event, or the whole error answer)."""
    reader, writer = await asyncio.open_connection(
        stack.server.host, stack.server.port, local_addr=local
    )
    writer.write(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n" + bearer(stack) + b"\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    if head.startswith(b"HTTP/1.1 200"):
        rest = await asyncio.wait_for(reader.readuntil(b"event: hello"), 10)
    else:
        rest = await asyncio.wait_for(reader.read(4096), 10)
    return reader, writer, head + rest


def _json_body(answer: bytes) -> dict[str, object]:
    body = answer.partition(b"\r\n\r\n")[2]
    parsed: dict[str, object] = json.loads(body)
    return parsed


async def test_event_streams_are_capped(sqlite_stack: Stack) -> None:
    streams = [await open_stream(sqlite_stack, source(n)) for n in range(STREAMS)]
    try:
        *_, refused = await open_stream(sqlite_stack, source(STREAMS + 50))
        assert refused.startswith(b"HTTP/1.1 503"), refused[:200]
        assert b"retry-after: 1" in refused.lower()
        error = _json_body(refused)
        assert error["error"] == f"too many open event streams (limit {STREAMS}); retry later"
        assert sqlite_stack.server.hub.subscribers == STREAMS
        # the rest of the API keeps answering
        assert (await sqlite_stack.http.get("/health")).status_code == 200
        # a closed stream frees its place
        _, writer, _ = streams.pop()
        writer.close()

        async def reopened() -> bytes:
            while True:
                reader, writer, answer = await open_stream(sqlite_stack, source(0))
                if answer.startswith(b"HTTP/1.1 200"):
                    streams.append((reader, writer, answer))
                    return answer
                writer.close()
                await asyncio.sleep(0.05)

        await asyncio.wait_for(reopened(), 5.0)
    finally:
        for _, writer, _ in streams:
            writer.close()
    await wait_for(lambda: sqlite_stack.server.hub.subscribers == 0, 5.0)


async def test_concurrent_requests_are_capped(sqlite_stack: Stack) -> None:
    """Requests whose body never comes hold their place until they give up; beyond the
    cap the API answers 503 at once, and serves again when they are gone."""
    held: list[asyncio.StreamWriter] = []
    try:
        for number in range(REQUESTS):
            _, writer = await asyncio.open_connection(
                sqlite_stack.server.host, sqlite_stack.server.port, local_addr=source(number)
            )
            writer.write(
                b"POST /agents/bat-1/commands HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                + bearer(sqlite_stack)
                + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
            )
            held.append(writer)
        await asyncio.sleep(0.3)  # every held request reached the app
        start = time.monotonic()
        busy = await sqlite_stack.http.get("/health")
        assert time.monotonic() - start < 1.0
        assert busy.status_code == 503, busy.text
        assert busy.headers["retry-after"] == "1"
        assert busy.json()["error"] == f"too many requests at once (limit {REQUESTS}); retry later"
    finally:
        for writer in held:
            writer.close()

    async def healthy() -> None:
        while (await sqlite_stack.http.get("/health")).status_code != 200:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(healthy(), 5.0)
    assert sqlite_stack.agents["bat-1"].executed == []


async def hold_requests(stack: Stack, count: int, local: str) -> list[asyncio.StreamWriter]:
    """``count`` connections from ``local`` whose request body never comes."""
    held = []
    for _ in range(count):
        _, writer = await asyncio.open_connection(
            stack.server.host, stack.server.port, local_addr=(local, 0)
        )
        writer.write(
            b"POST /agents/bat-1/commands HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + bearer(stack)
            + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        held.append(writer)
    await asyncio.sleep(0.3)  # every held request reached the app
    return held


async def test_one_client_cannot_take_every_place(sqlite_stack: Stack) -> None:
    """Beyond 64 requests at once from one address that address gets 503; another
    client's command still goes through."""
    held = await hold_requests(sqlite_stack, CLIENT_REQUESTS, "127.0.0.2")
    try:
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(base_url=sqlite_stack.url, transport=transport) as same:
            busy = await same.get("/health")
        assert busy.status_code == 503, busy.text
        assert busy.json()["error"] == (
            f"too many requests at once from 127.0.0.2 (limit {CLIENT_REQUESTS}); retry later"
        )
        fine = await sqlite_stack.http.post(
            "/agents/bat-1/commands", json={"cmds": [["idle", 0, 0]]}
        )
        assert fine.status_code == 200 and fine.json()["status"] == "ok", fine.text
    finally:
        for writer in held:
            writer.close()


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"every": "5e-324"}, "every"),
        ({"every": "0"}, "every"),
        ({"every": "inf"}, "every"),
        ({"every": "nan"}, "every"),
        ({"every": "1e300"}, "every"),
        ({"since": "9" * 400 + "w"}, "since"),
        ({"since": "1e300"}, "since"),
        ({"since": "-inf"}, "since"),
        ({"until": "nan"}, "until"),
        ({"until": "99999-01-01"}, "until"),
        ({"limit": "1e400"}, "limit"),
        ({"limit": "9" * 30}, "limit"),
    ],
)
async def test_query_parameters_are_finite_and_bounded(
    stack: Stack, params: dict[str, str], names: str
) -> None:
    async def stored() -> None:  # rows to downsample (every=5e-324 overflowed on them)
        while (await stack.http.get("/agents/bat-1/telemetry")).json()["count"] == 0:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(stored(), 5.0)
    answer = await stack.http.get("/agents/bat-1/telemetry", params=params)
    if names == "until" and params["until"].startswith("99999"):
        assert answer.status_code == 400, answer.text  # does not parse as a time
    else:
        assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error.startswith(names) and len(answer.content) < 600, answer.text


async def test_times_out_of_range_in_the_command_log_and_control_characters(
    stack: Stack,
) -> None:
    far = await stack.http.get("/commands", params={"since": "9" * 400 + "w"})
    assert far.status_code == 422 and "not a finite time" in far.json()["error"], far.text
    old = await stack.http.get("/commands", params={"since": "1e12"})
    assert old.status_code == 422 and "out of range" in old.json()["error"], old.text
    for path, params in (
        ("/agents/bat-1/telemetry", {"key": "Tele\x00metry"}),
        ("/commands", {"target": "bat-1\x00"}),
        ("/agents", {"group": "\x00"}),
    ):
        answer = await stack.http.get(path, params=params)
        assert answer.status_code == 400, (path, answer.text)
        assert "control character" in answer.json()["error"]
    ok = await stack.http.get("/agents/bat-1/telemetry", params={"every": 900, "since": "1w"})
    assert ok.status_code == 200 and ok.json()["every_s"] == 900


async def test_duplicate_keys_and_non_json_numbers_are_refused(sqlite_stack: Stack) -> None:
    http = sqlite_stack.http
    for body in (
        b'{"cmds": "junk", "cmds": [["idle", 0, 0]]}',
        b'{"cmds": [["idle", 0, 0]], "reply": true, "reply": false}',
        b'{"cmds": [["charge", 4, 60]], "timeout_s": NaN}',
        b'{"cmds": [["charge", 4, 60]], "timeout_s": Infinity}',
        b'{"cmds": [["charge", 4, 60]], "timeout_s": 1e400}',
        b'{"cmds": [["charge", 4, 60]], "timeout_s": 1' + b"0" * 5000 + b"}",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"cmds": [["charge", 4, 60]]}\xff',
        ("{" + ",".join(f'"k{i}": 0' for i in range(300)) + "}").encode(),
        b'{"cmds": [' + b'["idle", 0, 1],' * 20_000 + b'["idle", 0, 0]]}',
    ):
        answer = await http.post(
            "/agents/bat-1/commands", content=body, headers={"content-type": "application/json"}
        )
        assert answer.status_code == 400, (body[:60], answer.text)
        error = answer.json()["error"]
        assert error.startswith("body is not valid JSON: "), error
        assert len(answer.content) < 400, answer.text
    assert sqlite_stack.agents["bat-1"].executed == []
    duplicate = await http.post(
        "/agents/bat-1/commands",
        content=b'{"cmds": "junk", "cmds": [["idle", 0, 0]]}',
        headers={"content-type": "application/json"},
    )
    assert "duplicate key 'cmds'" in duplicate.json()["error"]
    metrics = (await http.get("/metrics")).text
    assert 'sef_commands_total{status="rejected"} 11.0' in metrics
    # the same command without the duplicate goes through
    fine = await http.post("/agents/bat-1/commands", json={"cmds": [["idle", 0, 0]]})
    assert fine.status_code == 200 and fine.json()["status"] == "ok", fine.text
    with contextlib.suppress(httpx.HTTPError):
        await http.aclose()

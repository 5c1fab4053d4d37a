"""A silently cut uplink (the link swallows every byte, no FIN, no RST: a dead router or
a pulled cable far away) is noticed by ``sef gateway`` after its ``--keepalive``.

The MQTT client pings after ``keepalive`` s without traffic and gives up when no answer
came ``keepalive`` s later, so the cut is noticed between 1x and 2x the keepalive after
the last exchange (``docs/operations.md``, "Gateway").
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections.abc import Iterator

import pytest

from proc_support import Retained, SefProcess
from sef.broker import Mosquitto, free_port


class SilentLink:
    """A TCP relay to ``target_port`` that :meth:`silence` turns into a black hole: its
    connections stay open but every byte, either way, is dropped (new ones too)."""

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.target_port = target_port
        self.port = free_port(host)
        self.silent = False
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, self.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        for relay in self._relays:
            relay.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)

    def silence(self) -> None:
        self.silent = True

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.close()
            return
        this = asyncio.current_task()
        assert this is not None
        self._relays.add(this)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    if not self.silent:
                        dst.write(data)
                        await dst.drain()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.fixture
def procs() -> Iterator[list[SefProcess]]:
    started: list[SefProcess] = []
    yield started
    for proc in started:
        proc.kill()


async def time_to_notice(mosquitto: Mosquitto, procs: list[SefProcess], keepalive_s: int) -> float:
    """Seconds from silencing the uplink to the gateway's "uplink ... lost" warning."""
    link = SilentLink(mosquitto.port)
    await link.start()
    home = f"home-{uuid.uuid4().hex[:6]}"
    status = f"sef/gateways/{home}/status"
    watch = Retained(mosquitto.port, status)
    try:
        gateway = SefProcess(
            "gateway",
            "--insecure",
            "--uplink",
            f"mqtt://127.0.0.1:{link.port}",
            "--listen",
            "127.0.0.1:0",
            "--id",
            home,
            "--no-advertise",
            "--keepalive",
            str(keepalive_s),
        )
        procs.append(gateway)
        await asyncio.to_thread(gateway.wait_line, r"listening on")
        deadline = time.monotonic() + 10.0
        while watch.last.get(status) != b"1":  # the uplink is up (the relay said so above)
            assert time.monotonic() < deadline, f"uplink never up: {gateway.output()}"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # let the start-up traffic settle
        link.silence()
        silenced = time.monotonic()
        await asyncio.to_thread(
            gateway.wait_line, r"uplink to \S+ lost", timeout_s=3.0 * keepalive_s + 5
        )
        noticed_s = time.monotonic() - silenced
        asked = time.monotonic()
        code = await asyncio.to_thread(gateway.signal_and_wait, signal.SIGTERM, 10.0)
        print(f"stopped {time.monotonic() - asked:.2f} s after SIGTERM")
        assert code == 0, gateway.output()
        return noticed_s
    finally:
        watch.close()
        await link.close()


async def test_silent_cut_noticed_within_twice_the_keepalive(
    mosquitto: Mosquitto, procs: list[SefProcess]
) -> None:
    noticed_s = await time_to_notice(mosquitto, procs, 2)
    print(f"--keepalive 2: silent uplink cut noticed after {noticed_s:.2f} s")
    assert 1.0 <= noticed_s <= 2 * 2 + 1.0, noticed_s

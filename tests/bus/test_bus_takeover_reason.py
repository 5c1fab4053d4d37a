"""The bus client reads the reason code of an MQTT 5 DISCONNECT from the broker (issue 11,
defect 17): "session taken over" (0x8E) reaches the ``on_lost`` hook, and while the hook
says a takeover goes on the reconnection backoff keeps growing.

Mosquitto 2.0.11 (the tests' broker) closes a taken-over connection without sending the
DISCONNECT, so a few lines of fake MQTT 5 broker stand in for one that sends it.
"""

from __future__ import annotations

import asyncio

from sef.bus import SESSION_TAKEN_OVER, BusClient, ConnectionLost
from support import wait_for

CONNACK_V5 = bytes([0x20, 3, 0, 0, 0])  # session present 0, success, no properties
DISCONNECT_TAKEN_OVER = bytes([0xE0, 2, SESSION_TAKEN_OVER, 0])


class TakeoverBroker:
    """Accepts every MQTT 5 CONNECT and, ``after_s`` later, sends DISCONNECT 0x8E (or just
    closes the socket, as Mosquitto 2.0.11 does, when ``send_reason`` is false)."""

    def __init__(self, *, send_reason: bool = True, after_s: float = 0.05) -> None:
        self.send_reason = send_reason
        self.after_s = after_s
        self.connects: list[float] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readexactly(1)  # CONNECT
            length, shift = 0, 0
            while True:
                byte = (await reader.readexactly(1))[0]
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            await reader.readexactly(length)
            self.connects.append(asyncio.get_running_loop().time())
            writer.write(CONNACK_V5)
            await writer.drain()
            await asyncio.sleep(self.after_s)
            if self.send_reason:
                writer.write(DISCONNECT_TAKEN_OVER)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_disconnect_reason_session_taken_over_reaches_on_lost() -> None:
    broker = TakeoverBroker()
    port = await broker.start()
    lost: list[ConnectionLost] = []

    def on_lost(info: ConnectionLost) -> bool:
        lost.append(info)
        return True  # a takeover goes on: keep backing off

    client = BusClient(f"mqtt://127.0.0.1:{port}?version=5", "ems", on_lost=on_lost)
    try:
        await client.start()
        await wait_for(lambda: len(lost) >= 4, 10.0)
    finally:
        await client.stop()
        await broker.stop()
    assert all(info.taken_over and info.reason_code == 0x8E for info in lost)
    assert all(info.lasted_s < 1.0 for info in lost)
    gaps = [b - a for a, b in zip(broker.connects, broker.connects[1:], strict=False)]
    assert gaps[2] > gaps[0] * 1.5, gaps  # the backoff grows: 0.1, 0.2, 0.4 s ...


async def test_a_closed_socket_has_no_reason_code() -> None:
    broker = TakeoverBroker(send_reason=False)
    port = await broker.start()
    lost: list[ConnectionLost] = []
    client = BusClient(
        f"mqtt://127.0.0.1:{port}?version=5", "ems", on_lost=lambda info: lost.append(info)
    )
    try:
        await client.start()
        await wait_for(lambda: len(lost) >= 2, 10.0)
    finally:
        await client.stop()
        await broker.stop()
    assert all(info.reason_code is None and not info.taken_over for info in lost)

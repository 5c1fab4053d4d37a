"""A flood of refused commands costs the battery a bounded number of register reads and
no write.

The BIS starts the scale-factor read a command needs before the command is checked
(``DeviceAdapter.prepare``), so a call that is then refused still caused a read. 500
unreadable ``EnergyMethod`` calls in a burst (what a compromised broker, or any client
of an ``--insecure`` one, can send) must not become 500 Modbus requests: a prefetch
nobody used blocks the next one for ``PREFETCH_FRESH_S``. Real parts: Mosquitto, the
BIS, the battery emulator over Modbus TCP.
"""

from __future__ import annotations

import asyncio

from sef.agents import bis as bis_module
from sef.agents.bis import BISAgent
from sef.bus import BusClient, Topics
from sef.emulators.battery import BatteryEmulator
from sef.interface import DEMO_INTERFACE
from support import wait_for

FLOOD = 500


async def test_a_flood_of_refused_commands_reads_little_and_writes_nothing(
    broker_url: str,
) -> None:
    emulator = BatteryEmulator(port=0, soc=0.5)
    _, modbus_port = await emulator.start()
    bis = BISAgent(
        "bis-flood",
        broker_url,
        modbus_host="127.0.0.1",
        modbus_port=modbus_port,
        poll_s=60.0,  # one poll at start, none during the flood
        keepalive_s=2,
    )
    attacker = BusClient(broker_url, "flooder")
    requests: list[str] = []
    try:
        await bis.start()
        await wait_for(lambda: bis.status.healthy, 5.0)
        await attacker.start()
        client = bis.device.modbus
        read, write = client.read_registers, client.write_registers

        async def counted_read(address: int, count: int) -> list[int]:
            requests.append("read")
            return await read(address, count)

        async def counted_write(address: int, values: list[int]) -> None:
            requests.append("write")
            await write(address, values)

        client.read_registers = counted_read  # type: ignore[method-assign]
        client.write_registers = counted_write  # type: ignore[method-assign]
        rejected = bis.calls_rejected
        topic = Topics().call("bis-flood", DEMO_INTERFACE, "EnergyMethod")
        started = asyncio.get_running_loop().time()
        for i in range(FLOOD):
            attacker.publish(topic, b'{"v": 1, "id": "x' + str(i).encode() + b'", "args": [')
        await wait_for(lambda: bis.calls_rejected - rejected == FLOOD, 10.0)
        elapsed = asyncio.get_running_loop().time() - started
        await asyncio.sleep(0.1)  # let a last prefetch finish
        assert "write" not in requests
        # at most one read per PREFETCH_FRESH_S while the flood lasts (plus the first)
        bound = 1 + int(elapsed / bis_module.PREFETCH_FRESH_S) + 1
        assert 1 <= requests.count("read") <= bound, (requests.count("read"), elapsed)
    finally:
        await attacker.stop()
        await bis.stop()
        await emulator.stop()

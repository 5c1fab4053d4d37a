"""The BIS's ``prepare()``: the power window's scale factor is read while a command is
being checked, and the write that follows uses it instead of reading it again.

Real parts: the battery emulator's Modbus TCP server and the adapter's SunSpec client;
the adapter's Modbus requests are counted at its client, the registers read back with a
second client.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sef.agents import bis as bis_module
from sef.agents.bis import SunSpecBattery
from sef.emulators.battery import BatteryEmulator
from sef.interface import IDLE_EVENT, Command, EnergyEvent
from sef.protocols.sunspec import SunSpecClient, SunSpecError


class Host:
    """The smallest DeviceHost: a real clock, no agent."""

    def __init__(self) -> None:
        from sef.clock import RealClock

        self.clock = RealClock()
        self.agent_id = "bis-prefetch"
        self.current_event = IDLE_EVENT

    def changed(self) -> None:
        pass

    def device_lost(self, exc: BaseException) -> None:
        pass


class Counted:
    """The adapter's register reads and writes, as (kind, address, count)."""

    def __init__(self, client: SunSpecClient) -> None:
        self.requests: list[tuple[str, int, int]] = []
        read, write = client.read_registers, client.write_registers

        async def counted_read(address: int, count: int) -> list[int]:
            self.requests.append(("read", address, count))
            return await read(address, count)

        async def counted_write(address: int, values: list[int]) -> None:
            self.requests.append(("write", address, len(values)))
            await write(address, values)

        client.read_registers = counted_read  # type: ignore[method-assign]
        client.write_registers = counted_write  # type: ignore[method-assign]

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.requests]


@pytest.fixture
async def battery() -> AsyncIterator[tuple[SunSpecBattery, BatteryEmulator, SunSpecClient]]:
    emulator = BatteryEmulator(port=0, soc=0.5)
    _, port = await emulator.start()
    adapter = SunSpecBattery("127.0.0.1", port, timeout_s=1.0)
    adapter.attach(Host())  # type: ignore[arg-type]
    await adapter.connect()
    other = SunSpecClient("127.0.0.1", port)
    await other.connect()
    await other.scan()
    try:
        yield adapter, emulator, other
    finally:
        other.close()
        await adapter.close()
        await emulator.stop()


CHARGE = EnergyEvent(Command.CHARGE, 4, 3600)


async def controls(client: SunSpecClient) -> dict[str, Any]:
    return await client.read_points(124, ["InWRte", "OutWRte", "StorCtl_Mod"])


async def test_a_prefetched_scale_factor_saves_the_write_its_read(
    battery: tuple[SunSpecBattery, BatteryEmulator, SunSpecClient],
) -> None:
    adapter, _, other = battery
    counted = Counted(adapter.modbus)
    await adapter.apply(CHARGE, 3600.0)  # no prepare: the write reads its SF first
    assert counted.kinds() == ["read", "write", "write"]  # SF, window, StorCtl_Mod
    assert await controls(other) == {"InWRte": 50.0, "OutWRte": -50.0, "StorCtl_Mod": 3}

    counted.requests.clear()
    assert adapter.prepare() is True
    assert adapter.prepare() is False  # one read per command: the first is still fresh
    await asyncio.sleep(0.1)  # the read is done while "the envelope is verified"
    assert counted.kinds() == ["read"]
    counted.requests.clear()
    await adapter.apply(EnergyEvent(Command.DISCHARGE, 2, 3600), 3600.0)
    assert counted.kinds() == ["write", "write"]  # no read of its own
    assert await controls(other) == {"InWRte": -25.0, "OutWRte": 25.0, "StorCtl_Mod": 3}


async def test_a_stale_prefetch_is_not_used(
    battery: tuple[SunSpecBattery, BatteryEmulator, SunSpecClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    adapter, _, other = battery
    monkeypatch.setattr(bis_module, "PREFETCH_FRESH_S", 0.05)
    assert adapter.prepare() is True
    await asyncio.sleep(0.2)
    counted = Counted(adapter.modbus)
    await adapter.apply(CHARGE, 3600.0)
    assert counted.kinds()[0] == "read"  # read again: too old to trust
    assert await controls(other) == {"InWRte": 50.0, "OutWRte": -50.0, "StorCtl_Mod": 3}


async def test_no_prefetch_on_a_closed_link(
    battery: tuple[SunSpecBattery, BatteryEmulator, SunSpecClient],
) -> None:
    adapter, _, _ = battery
    await adapter.close()
    assert adapter.prepare() is False


async def test_a_failed_prefetch_leaves_the_write_to_report_the_fault(
    battery: tuple[SunSpecBattery, BatteryEmulator, SunSpecClient],
) -> None:
    adapter, emulator, _ = battery
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    try:
        await emulator.stop()  # the device goes away while a command is checked
        assert adapter.prepare() is True
        with pytest.raises(SunSpecError):
            await adapter.apply(CHARGE, 3600.0)
        await asyncio.sleep(0.05)
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert not [c for c in unhandled if "never retrieved" in str(c.get("message", ""))]


async def test_a_prefetch_nobody_uses_is_retrieved(
    battery: tuple[SunSpecBattery, BatteryEmulator, SunSpecClient],
) -> None:
    """A refused command leaves a prefetch behind; if it failed, asyncio must not report
    an exception that was never retrieved."""
    adapter, emulator, _ = battery
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    try:
        await emulator.stop()
        assert adapter.prepare() is True
        await asyncio.sleep(1.5)  # the read times out (1 s) or fails at once
        adapter._prefetch = None  # e.g. the refused command is forgotten
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert not [c for c in unhandled if "never retrieved" in str(c.get("message", ""))]

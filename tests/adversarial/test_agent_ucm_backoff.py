"""Defect 11: ``sef ucm`` spun at 100 % CPU when its serial port failed (the reconnection
backoff never waited) and, on a scaled clock, flooded ~60 telemetry messages/s.

Now the device template backs off (0.5 s doubling to ``max_backoff_s``) and publishes
telemetry once per failed attempt at most. Real Mosquitto; the port does not exist.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sef.agents.ucm import UCMAgent
from sef.clock import ScaledClock
from support import wait_for


async def test_dead_serial_port_backs_off_and_rate_limits_telemetry(broker_url: str) -> None:
    ucm = UCMAgent(
        "wh-dead",
        broker_url,
        serial_port="/dev/sef-no-such-port",
        max_backoff_s=1.0,
        clock=ScaledClock(speed=720.0),
        keepalive_s=2,
    )
    attempts: list[float] = []
    published: list[float] = []
    connect = ucm.device.connect
    set_property = ucm.set_property

    async def counting_connect() -> None:
        attempts.append(time.monotonic())
        await connect()

    def counting_set_property(interface: str, name: str, value: Any) -> bool:
        changed = set_property(interface, name, value)
        if changed and name == "Telemetry":
            published.append(time.monotonic())
        return changed

    ucm.device.connect = counting_connect  # type: ignore[method-assign]
    ucm.set_property = counting_set_property  # type: ignore[method-assign]
    await ucm.start()
    try:
        await wait_for(lambda: len(attempts) >= 1, 2.0)
        cpu, start = time.process_time(), time.monotonic()
        await asyncio.sleep(3.0)
        cpu_share = (time.process_time() - cpu) / (time.monotonic() - start)
    finally:
        await ucm.stop()
    window = [t for t in attempts if t >= start]
    # 0.5 s, then 1 s (max): about 3-4 attempts in 3 s, never a busy loop
    assert 2 <= len(window) <= 6, len(window)
    assert len([t for t in published if t >= start]) <= len(window) + 1
    assert cpu_share < 0.3, f"{cpu_share:.0%} of a core while the port is dead"
    assert "FileNotFoundError" in ucm.status.fault or "could not open" in ucm.status.fault

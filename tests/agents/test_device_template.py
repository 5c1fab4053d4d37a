"""The device-session template: a ~50-line adapter gets polling, faults, backoff, readback,
re-apply after reconnection and telemetry from :class:`sef.agents.DERAgent`.

The "device" is a box of registers in this process; the agent and its broker are real.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest

from sef.agents import DERAgent, DeviceAdapter, DeviceStatus, Outcome
from sef.bus import ErrorName
from sef.interface import DEMO_INTERFACE, Command, EnergyEvent, Variant
from support import wait_for

POLL_S = 0.05


class Box:
    """What a physical device holds: a power register that anyone may write."""

    def __init__(self) -> None:
        self.online = True
        self.power_kw = 0.0
        self.reads = 0
        self.read_error: Exception | None = None


class BoxDevice(DeviceAdapter):
    """The adapter under test: everything a new device family has to write."""

    comm_errors: ClassVar[tuple[type[BaseException], ...]] = (ConnectionError,)

    def __init__(self, box: Box) -> None:
        self.box = box
        self.connects = self.attempts = 0
        self.seen_kw: float | None = None
        self.written_kw: float | None = None
        self.left_s: float | None = None

    def _check(self) -> None:
        if not self.box.online:
            raise ConnectionError("device does not answer")

    async def connect(self) -> None:
        self.attempts += 1
        self._check()
        self.connects += 1

    async def read(self) -> None:
        self._check()
        if self.box.read_error is not None:
            raise self.box.read_error
        self.box.reads += 1
        self.seen_kw = self.box.power_kw

    async def apply(self, event: EnergyEvent, left_s: float | None) -> None:
        self._check()
        sign = {Command.CHARGE: 1.0, Command.DISCHARGE: -1.0}.get(event.cmd, 0.0)
        self.box.power_kw = self.written_kw = sign * event.rate_kw
        self.left_s = left_s

    async def close(self) -> None:
        self.written_kw = None

    def readback(self) -> str | None:
        if self.written_kw is None or self.seen_kw == self.written_kw:
            return None
        return f"power {self.seen_kw} kW (wrote {self.written_kw} kW)"

    def telemetry(self, status: DeviceStatus) -> dict[str, Variant]:
        values = {
            "Power_kW": Variant("d", self.seen_kw or 0.0),
            "Online": Variant("b", status.healthy),
        }
        if status.fault:
            values["Fault"] = Variant("s", status.fault)
        return values


@contextlib.asynccontextmanager
async def running(broker_url: str) -> AsyncIterator[tuple[DERAgent[BoxDevice], Box]]:
    box = Box()
    agent = DERAgent(
        "box-1", broker_url, BoxDevice(box), poll_s=POLL_S, backoff_s=(0.05, 0.2), keepalive_s=2
    )
    await agent.start()
    try:
        yield agent, box
    finally:
        await agent.stop()


def telemetry(agent: DERAgent[Any]) -> dict[str, Any]:
    value = agent.get_property(DEMO_INTERFACE, "Telemetry")
    return {key: variant.value for key, variant in value.items()}


async def test_polls_and_publishes_telemetry_with_the_event(broker_url: str) -> None:
    async with running(broker_url) as (agent, box):
        await wait_for(lambda: box.reads >= 5, 2.0)
        started, reads = time.monotonic(), box.reads
        await wait_for(lambda: box.reads >= reads + 10, 3.0)
        per_read = (time.monotonic() - started) / (box.reads - reads)
        assert 0.5 * POLL_S < per_read < 4 * POLL_S
        await agent.energy_method([("charge", 3, 600)])
        assert box.power_kw == 3.0  # applied at once, not at the next poll
        assert agent.device.left_s == pytest.approx(600, abs=1)
        await wait_for(lambda: telemetry(agent)["Power_kW"] == 3.0, 1.0)
        values = telemetry(agent)
        assert values["Event"] == "charge" and values["Event_Rate_kW"] == 3
        assert values["Online"] is True and values["Control_Mismatch"] is False
        assert abs(values["TimeStamp"] - time.time()) < 2


async def test_fault_backs_off_and_reapplies_the_running_event(
    broker_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(broker_url) as (agent, box):
        await wait_for(lambda: agent.status.healthy, 2.0)
        box.online = False
        with caplog.at_level(logging.WARNING, logger="sef.agent"):
            await wait_for(
                lambda: (
                    telemetry(agent)
                    .get("Fault", "")
                    .startswith("ConnectionError: device does not answer")
                ),
                2 * POLL_S + 0.5,
            )
            connects_before = agent.device.connects
            await agent.energy_method([("discharge", 5, 0)])  # while the device is away
            reads, attempts = box.reads, agent.device.attempts
            await asyncio.sleep(1.0)
        assert box.reads == reads and box.power_kw == 0.0  # nothing got through
        # backoff 0.05 s doubling to 0.2 s: about 6 attempts in 1 s, never a busy loop
        assert 3 <= agent.device.attempts - attempts <= 10
        faults = [r for r in caplog.records if "device fault" in r.getMessage()]
        assert len(faults) == 1  # one line per distinct fault, not one per retry
        assert telemetry(agent)["Online"] is False and telemetry(agent)["Event"] == "discharge"
        box.online = True
        await wait_for(lambda: box.power_kw == -5.0, 0.2 + 1.0)  # longest backoff + margin
        assert agent.device.connects == connects_before + 1
        assert agent.device.left_s is None  # open-ended
        await wait_for(lambda: telemetry(agent)["Online"] is True, 1.0)
        assert "Fault" not in telemetry(agent)


async def test_readback_mismatch_is_reasserted_and_reported(
    broker_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(broker_url) as (agent, box):
        await agent.energy_method([("charge", 4, 3600)])
        await wait_for(lambda: agent.status.healthy and box.power_kw == 4.0, 2.0)
        published: list[bool] = []
        with caplog.at_level(logging.WARNING, logger="sef.agent"):
            box.power_kw = -8.0  # another client took over the device
            await wait_for(lambda: agent.mismatches >= 1, 2 * POLL_S + 0.5)
            published.append(telemetry(agent)["Control_Mismatch"])
            await wait_for(lambda: box.power_kw == 4.0, 1.0)
            await wait_for(lambda: telemetry(agent)["Control_Mismatch"] is False, 1.0)
        assert published == [True]
        assert any("power -8.0 kW (wrote 4.0 kW)" in r.getMessage() for r in caplog.records)
        assert agent.mismatches == 1


async def test_unexpected_error_is_logged_and_polling_goes_on(
    broker_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(broker_url) as (agent, box):
        await wait_for(lambda: agent.status.healthy, 2.0)
        with caplog.at_level(logging.ERROR, logger="sef.agent"):
            box.read_error = ValueError("register 7 holds garbage")
            await wait_for(lambda: "ValueError" in telemetry(agent).get("Fault", ""), 1.0)
        assert any(r.exc_info for r in caplog.records if "unexpected" in r.getMessage())
        box.read_error = None
        await wait_for(lambda: telemetry(agent)["Online"] is True, 1.0)


async def test_reply_outcome_says_applied_or_why_not(broker_url: str) -> None:
    async with running(broker_url) as (agent, box):
        await wait_for(lambda: agent.status.healthy, 2.0)
        applied = await agent.energy_method([("charge", 1, 60)])
        assert applied == Outcome(applied=True)
        box.online = False
        await wait_for(lambda: bool(agent.status.fault), 2 * POLL_S + 0.5)
        refused = await agent.energy_method([("discharge", 2, 60)])
        assert refused.applied is False
        assert refused.fault == ErrorName.DEVICE_UNREACHABLE
        assert refused.fault_message == "ConnectionError: device does not answer"


async def test_stop_ends_the_loop_when_the_device_library_turns_the_cancel_into_an_error(
    broker_url: str,
) -> None:
    """A device library (pymodbus) raising an I/O error for a cancelled request: stop wins."""

    class SwallowingDevice(BoxDevice):
        async def read(self) -> None:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                raise ConnectionError("request cancelled") from None
            await super().read()

    agent = DERAgent("box-s", broker_url, SwallowingDevice(Box()), poll_s=0.0, keepalive_s=2)
    await agent.start()
    await wait_for(lambda: agent.status.healthy, 2.0)
    await asyncio.wait_for(agent.stop(), 5.0)

"""UCM link faults: the SGD emulator process is killed and comes back (real CTA-2045 timing)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

from sef.agents.ucm import UCMAgent
from sef.broker import free_port
from sef.clock import ScaledClock
from sef.interface import DEMO_INTERFACE
from sef.protocols import cta2045 as cta
from support import wait_for
from ucm_helpers import EmulatorProcess

CURTAILED = (cta.OperationalState.RUNNING_CURTAILED, cta.OperationalState.IDLE_CURTAILED)


def link_state(ucm: UCMAgent) -> str:
    return str(ucm.get_property(DEMO_INTERFACE, "Telemetry")["Link"].value)


async def test_pty_emulator_killed_then_replaced(broker_url: str) -> None:
    clock = ScaledClock(speed=60)
    emulator = EmulatorProcess("--pty", clock=clock.spec())
    ucm = UCMAgent("wh-pty", broker_url, serial_port=emulator.where, poll_s=0.5, clock=clock)
    second: EmulatorProcess | None = None
    try:
        await ucm.start()
        await wait_for(lambda: link_state(ucm) == "up", 8.0)
        assert ucm.device.device_info is not None and ucm.device.device_info.model == "SEF-EWH-50"
        await ucm.energy_method([("shed", 0, 7200)])
        await wait_for(lambda: ucm.device.op_state in CURTAILED, 3.0)
        killed = emulator.kill()
        await wait_for(lambda: link_state(ucm) == "down", 3.0)
        detected = time.monotonic() - killed
        fault = ucm.get_property(DEMO_INTERFACE, "Telemetry")["Link_Fault"].value
        print(f"pty: link loss reported {detected:.3f} s after SIGKILL ({fault})")
        assert detected < 3.0
        await asyncio.sleep(1.0)  # the UCM keeps running and retrying
        assert ucm.bus.connected and link_state(ucm) == "down"
        second = EmulatorProcess("--pty", clock=clock.spec())  # a new pty: a new path
        ucm.retarget(serial_port=second.where)
        took = await wait_for(lambda: link_state(ucm) == "up", 8.0)
        await wait_for(lambda: ucm.device.op_state in CURTAILED, 3.0)  # the shed was re-sent
        resent = ucm.device.last_message
        print(f"pty: link up {took:.2f} s after retarget, shed re-sent: {resent}")
        assert isinstance(resent, cta.Shed)
        second.process.send_signal(signal.SIGUSR1)  # the customer presses "override"
        await wait_for(
            lambda: (
                ucm.get_property(DEMO_INTERFACE, "Telemetry")["Override"].value is True
                and ucm.device.op_state in (11, 12)
            ),
            3.0,
        )
    finally:
        await ucm.stop()
        emulator.stop()
        if second is not None:
            second.stop()


async def test_tcp_emulator_killed_and_restarted(broker_url: str) -> None:
    clock = ScaledClock(speed=60)
    port = free_port()
    emulator = EmulatorProcess("--tcp", str(port), clock=clock.spec())
    ucm = UCMAgent(
        "wh-tcp", broker_url, tcp=("127.0.0.1", port), poll_s=0.5, clock=clock, max_backoff_s=1.0
    )
    try:
        await ucm.start()
        await wait_for(lambda: link_state(ucm) == "up", 8.0)
        await ucm.energy_method([("charge", 4, 3600), ("shed", 0, 7200)])
        await wait_for(lambda: isinstance(ucm.device.last_message, cta.LoadUp), 3.0)
        killed = emulator.kill()
        await wait_for(lambda: link_state(ucm) == "down", 3.0)
        detected = time.monotonic() - killed
        print(f"tcp: link loss reported {detected:.3f} s after SIGKILL")
        assert detected < 3.0
        await asyncio.sleep(1.5)
        assert ucm.bus.connected and link_state(ucm) == "down"
        emulator = EmulatorProcess("--tcp", str(port), clock=clock.spec())
        restarted = time.monotonic()
        await wait_for(lambda: link_state(ucm) == "up", 5.0)
        print(f"tcp: link up {time.monotonic() - restarted:.2f} s after the restart")
        # the running event (Load Up, ~55 min left) is re-sent with its remaining time
        await wait_for(lambda: ucm.device.op_state in (3, 6), 3.0)
        resent = ucm.device.last_message
        assert isinstance(resent, cta.LoadUp)
        assert 2800 < resent.duration_s <= 3698, resent
        telemetry = ucm.get_property(DEMO_INTERFACE, "Telemetry")
        assert "Link_Fault" not in telemetry and telemetry["Event"].value == "charge"
    finally:
        await ucm.stop()
        emulator.stop()


async def test_silent_sgd_is_link_loss_within_3_s(broker_url: str) -> None:
    """SIGSTOP keeps the pty open but silent, like an unplugged module on a real serial line."""
    clock = ScaledClock(speed=60)
    emulator = EmulatorProcess("--pty", clock=clock.spec())
    ucm = UCMAgent("wh-stop", broker_url, serial_port=emulator.where, poll_s=1.0, clock=clock)
    try:
        await ucm.start()
        await wait_for(lambda: link_state(ucm) == "up", 8.0)
        await asyncio.sleep(0.3)
        emulator.process.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        await wait_for(lambda: link_state(ucm) == "down", 3.0)
        detected = time.monotonic() - stopped
        print(f"silent pty: link loss reported {detected:.2f} s after SIGSTOP")
        assert detected < 3.0
        emulator.process.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        await wait_for(lambda: link_state(ucm) == "up", 8.0)
        print(f"silent pty: link up {time.monotonic() - resumed:.2f} s after SIGCONT")
    finally:
        with contextlib.suppress(ProcessLookupError):
            emulator.process.send_signal(signal.SIGCONT)
        await ucm.stop()
        emulator.stop()

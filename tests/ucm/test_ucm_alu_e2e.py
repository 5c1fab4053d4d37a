"""Advanced Load Up end to end: UCM (``use_advanced_load_up``) ⇄ pty ⇄ SGD emulator.

The same charge (4 kW for 30 min, i.e. 2 kWh) from a 47 °C tank: Load Up alone heats to
the setpoint (≈ 922 Wh, test_ucm_e2e); followed by Set Advanced Load Up the emulator
raises its setpoint for the event and stores more (up to its maximum setpoint).
"""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np

from sef.agents.ucm import UCMAgent
from sef.clock import ScaledClock
from sef.emulators.waterheater import SGDEmulator, run_sgd_emulator
from sef.models.waterheater import WaterHeaterParams
from sef.protocols import cta2045 as cta
from support import wait_for
from ucm_helpers import FAST, at


async def test_advanced_load_up_stores_more_than_load_up(broker_url: str) -> None:
    clock = ScaledClock(speed=600, sim_start=at("12:00"))
    sgd = SGDEmulator(
        clock, timing=FAST, params=WaterHeaterParams(initial_c=47.0), draws=np.zeros(0)
    )
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_sgd_emulator(pty=True, emulator=sgd, on_ready=ready.set_result))
    path = await asyncio.wait_for(ready, 5.0)
    ucm = UCMAgent(
        "wh-alu",
        broker_url,
        serial_port=path,
        poll_s=0.25,
        clock=clock,
        timing=FAST,
        use_advanced_load_up=True,
    )
    await ucm.start()
    try:
        await wait_for(lambda: ucm.status.healthy and ucm.device.stored_wh is not None, 8.0)
        assert ucm.device.advanced_load_up  # the emulator answered Get Advanced Load Up
        sgd.advance()
        before = float(sgd.model.present_energy_storage_wh[0])
        start = clock.now()
        outcome = await ucm.energy_method([("charge", 4, 1800)])
        assert outcome.applied is True
        assert ucm.device.load_up_wh == 2000.0
        assert sgd.received[-2:] == [cta.LoadUp(30), cta.SetAdvancedLoadUpRequest(30, 2000, 0)]
        assert sgd.intermediate.advanced_load_up is not None
        await asyncio.sleep(clock.to_real(start + 1700 - clock.now()))
        sgd.advance()
        gained = float(sgd.model.present_energy_storage_wh[0]) - before
        print(f"Load Up + Advanced Load Up (2 kWh asked): +{gained:.0f} Wh stored in 28 min")
        assert gained > 1.3 * 922  # Load Up alone stops at the setpoint: ~922 Wh
    finally:
        await ucm.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

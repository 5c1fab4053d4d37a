"""The OpenADR VEN as a leader duty (issue 16 item 6): ``sef ems --openadr`` on several
workers registers with the VTN only on the leader, leaves the API's ``/openadr`` board
when the worker stops leading, and registers again at its next term (a real oadr2b VTN
stand-in, a real Mosquitto)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from oadr2b_vtn import TestVtn

from sef.clock import ScaledClock
from sef.ems import EMS
from sef.ems._dr_board import dr_board
from sef.ems._leader import Listener
from sef.ems._leader_duties import LeaderDuties
from sef.openadr import DrService, load_dr_config
from support import wait_for


class Switch:
    """A leadership an operator flips (the election itself: tests/ems/test_leader.py)."""

    election = "test"
    worker_id = "w"

    def __init__(self) -> None:
        self.is_leader = False
        self.terms = 0
        self._listeners: list[Listener] = []

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def set(self, leader: bool) -> None:
        self.is_leader = leader
        self.terms += leader
        for listener in self._listeners:
            listener(leader)

    async def start(self) -> None:
        """Nothing to do."""

    async def stop(self) -> None:
        """Nothing to do."""


async def test_the_ven_runs_only_while_leader(broker_url: str, tmp_path: Path) -> None:
    vtn = await TestVtn().start()
    config = tmp_path / "dr.toml"
    config.write_text(
        f'[bridge]\nrng_seed = 1\n[oadr2b]\ninsecure = true\nvtn_url = "{vtn.url}"\n'
        'ven_name = "sef-ems"\nregister_timeout_s = 5\n'
    )
    ems = EMS(broker_url, "ems-dr", clock=ScaledClock(speed=1.0))
    await ems.start()
    switch = Switch()
    duties = LeaderDuties(switch)
    started: list[DrService] = []

    async def start_dr() -> Any:
        service = DrService(ems, load_dr_config(config))
        await service.start()
        started.append(service)
        return service

    duties.add_service("openadr", start_dr, lambda service: service.stop())
    try:
        await duties.start()
        assert not started and dr_board(ems) is None and not vtn.vens  # a standby
        for term in (1, 2):
            switch.set(True)
            await wait_for(lambda: len(started) == switch.terms, 15.0)  # registered: started
            board = dr_board(ems)
            assert board is not None
            (adapter,) = board.status()["adapters"]
            assert adapter["registered"] is True
            assert list(vtn.vens) == ["VEN-sef-ems"]
            switch.set(False)
            await wait_for(lambda: dr_board(ems) is None, 15.0)
            assert len(started) == term and not duties.running
    finally:
        await duties.close()
        await ems.stop()
        await vtn.stop()

"""Demand response beside a running EMS: the bridge, its adapters and the operator board,
started and stopped together (``sef ems --openadr FILE.toml``).

A VTN that cannot be reached when the EMS starts does not stop the EMS: the adapter is
tried again with a growing wait (``retry_s`` doubling up to ``max_retry_s``) and each
failure is logged with its reason; the dashboard shows it as not registered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from sef.ems import EMS
from sef.ems._dr_board import set_dr_board
from sef.openadr._adapter import VenAdapter
from sef.openadr._bridge import DrBridge
from sef.openadr._config import DrConfig
from sef.openadr._operator import OperatorBoard, install_operator

__all__ = ["DrService"]

log = logging.getLogger("sef.openadr")


class DrService:
    """The EMS's VEN side: one :class:`DrBridge`, the adapters ``config`` names, and the
    operator board serving the API (``/openadr/...``).

    Args:
        ems: the running EMS.
        config: what ``--openadr FILE`` says (:func:`~sef.openadr.load_dr_config`).
        live_control: a live controller runs beside the EMS (fleet-wide targets and
            capacity limits go to its target board).
        retry_s: first wait before trying an unreachable VTN again, real s.
        max_retry_s: longest wait between tries, real s.
    """

    def __init__(
        self,
        ems: EMS,
        config: DrConfig,
        *,
        live_control: bool = False,
        retry_s: float = 5.0,
        max_retry_s: float = 300.0,
    ) -> None:
        self.ems = ems
        self.config = config
        self.bridge = DrBridge(
            ems,
            mapping=config.mapping,
            policy=config.policy,
            rng_seed=config.rng_seed,
            live_control=live_control,
        )
        self.retry_s = retry_s
        self.max_retry_s = max_retry_s
        self._board: OperatorBoard | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.pending = 0
        """VTNs not registered with yet (being retried)."""

    def _factories(self) -> list[Callable[[], VenAdapter]]:
        """One maker per configured VTN (a failed adapter cannot start twice: each try
        makes a new one)."""
        makers: list[Callable[[], VenAdapter]] = []
        if (oadr2b := self.config.oadr2b) is not None:
            from sef.openadr._oadr2b import Oadr2bAdapter

            makers.append(lambda: Oadr2bAdapter(oadr2b, clock=self.ems.clock))
        if (oadr3 := self.config.oadr3) is not None:
            from sef.openadr._oadr3 import Oadr3Adapter

            makers.append(lambda: Oadr3Adapter(oadr3, clock=self.ems.clock))
        return makers

    async def start(self) -> None:
        """Serve the operator board and register with every VTN (an unreachable one is
        retried in the background)."""
        self._board = install_operator(self.ems, self.bridge)
        self._board.start()
        for make in self._factories():
            if not await self._attach(make(), retrying=False):
                self.pending += 1
                self._tasks.append(asyncio.create_task(self._retry(make)))

    async def _attach(self, adapter: VenAdapter, *, retrying: bool) -> bool:
        try:
            await self.bridge.attach(adapter)
        except (ConnectionError, OSError) as exc:
            with contextlib.suppress(Exception):
                await adapter.stop()
            (log.warning if retrying else log.error)(
                "%s: cannot register with %s (%s); trying again",
                adapter.source,
                adapter.status().vtn,
                exc,
            )
            return False
        log.info("%s: registered with %s", adapter.source, adapter.status().vtn)
        return True

    async def _retry(self, make: Callable[[], VenAdapter]) -> None:
        wait = self.retry_s
        while True:
            await asyncio.sleep(wait)
            if await self._attach(make(), retrying=True):
                self.pending -= 1
                return
            wait = min(wait * 2, self.max_retry_s)

    async def stop(self) -> None:
        """Stop retries, adapters, scheduled plans and the board (idempotent)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self.pending = 0
        await self.bridge.close()
        if self._board is not None:
            await self._board.stop()
            set_dr_board(self.ems, None)  # off the API: GET /openadr/status says not configured
            self._board = None

    async def __aenter__(self) -> DrService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

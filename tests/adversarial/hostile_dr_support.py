"""Helpers of the hostile demand-response tests (``test_hostile_dr_*.py``).

Puts ``tests/openadr`` on ``sys.path`` (its stack and VTN helpers are imported by bare name
there) and builds OpenADR 2.0b event dicts shaped like openleadr's parse of an
``oadrEvent`` (the dict openleadr hands the VEN's ``on_event`` handler), so a test can
drive the real :class:`~sef.openadr.Oadr2bAdapter` handler with shapes a real VTN cannot
always send. :class:`Rig` is one dr_stack with a bridge, a command log and both adapters'
event handlers wired to the bridge without a VTN.

Imported by bare name (``tests/adversarial`` is on sys.path while its tests run).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

_OPENADR_TESTS = str(Path(__file__).resolve().parents[1] / "openadr")
if _OPENADR_TESTS not in sys.path:
    sys.path.insert(0, _OPENADR_TESTS)

from dr_stack import CallLog, DrStack, dr_stack  # noqa: E402
from e2e_events import let_simple_levels_through, raw_event  # noqa: E402
from e2e_support import on_clock  # noqa: E402
from oa3_vtn import VEN_CLIENT, Oa3Vtn, iso  # noqa: E402
from oadr2b_vtn import RecordingSink, TestVtn, make_pki  # noqa: E402

from sef.models.waterheater_dr import DRMode  # noqa: E402
from sef.openadr import DrBridge, Oadr2bAdapter, Oadr2bConfig, Oadr3Config  # noqa: E402
from sef.openadr._oadr3 import Oadr3Adapter  # noqa: E402
from support import wait_for  # noqa: E402

__all__ = [
    "PERCENT",
    "POWER_KW",
    "USD_PER_KWH",
    "VEN_CLIENT",
    "LoopLag",
    "Oa3Vtn",
    "RecordingSink",
    "Rig",
    "TestVtn",
    "ev2b",
    "iso",
    "let_simple_levels_through",
    "make_pki",
    "oa3_config",
    "on_clock",
    "raw_event",
    "rig",
    "simple_oa3",
    "warned",
]

POWER_KW = {"name": "powerReal", "unit": "W", "scale": "k"}
"""itemBase of a LOAD_DISPATCH in kW."""
PERCENT = {"name": "customUnit", "unit": "percent", "scale": "none"}
USD_PER_KWH = {"name": "currencyPerKWh", "unit": "USD", "scale": "none"}


def ev2b(
    event_id: str,
    start: datetime,
    intervals: list[tuple[float, Any]],
    *,
    name: str = "SIMPLE",
    signal_type: str = "level",
    measurement: dict[str, str] | None = None,
    modification: int = 0,
    groups: tuple[str, ...] = (),
    resources: tuple[str, ...] = (),
    duration_s: float | None = None,
    randomize_s: float | None = None,
    status: str = "far",
) -> dict[str, Any]:
    """An openleadr-shaped 2.0b event: ``intervals`` are ``(duration s, payload)``; the
    active period lasts their sum unless ``duration_s`` is given."""
    period: dict[str, Any] = {
        "dtstart": start,
        "duration": timedelta(
            seconds=sum(d for d, _ in intervals) if duration_s is None else duration_s
        ),
    }
    if randomize_s is not None:
        period["tolerance"] = {"tolerate": {"startafter": timedelta(seconds=randomize_s)}}
    signal: dict[str, Any] = {
        "intervals": [
            {"duration": timedelta(seconds=d), "uid": i, "signal_payload": v}
            for i, (d, v) in enumerate(intervals)
        ],
        "signal_name": name,
        "signal_type": signal_type,
        "signal_id": f"{event_id}-s",
    }
    if measurement is not None:
        signal["measurement"] = measurement
    by_type: dict[str, list[str]] = {}
    if groups:
        by_type["group_id"] = list(groups)
    if resources:
        by_type["resource_id"] = list(resources)
    return {
        "event_descriptor": {
            "event_id": event_id,
            "modification_number": modification,
            "market_context": "http://utility.test/programs/dr",
            "event_status": status,
            "priority": 1,
            "test_event": False,
            "created_date_time": datetime.now(UTC),
        },
        "active_period": period,
        "event_signals": [signal],
        "targets_by_type": by_type,
        "response_required": "always",
    }


@dataclass
class Rig:
    """A dr_stack (``bat-1``, ``wh-1``) with a bridge, its command log and both adapters'
    event handlers attached to the bridge (no VTN: the test calls the handlers)."""

    stack: DrStack
    bridge: DrBridge
    calls: CallLog
    oadr2b: Oadr2bAdapter
    oadr3: Oadr3Adapter

    def at(self, ahead_s: float) -> datetime:
        """The EMS clock ``ahead_s`` clock seconds from now (whole s, aware UTC)."""
        return datetime.fromtimestamp(int(self.stack.clock.now() + ahead_s) + 1, UTC)

    def untouched(self) -> bool:
        """No call left the EMS, the battery idles, the heater runs normally, no plan."""
        return (
            not self.calls.calls
            and self.stack.battery_kw("bat-1") == 0.0
            and self.stack.heater_mode("wh-1") is DRMode.NORMAL
            and not self.bridge.executor._plans
        )

    async def good_event_still_works(self, event_id: str = "good") -> None:
        """A SIMPLE level 3 event for bat-1 through the 2.0b handler: opted in, and the
        battery discharges within 5 s real."""
        raw = ev2b(event_id, self.at(2), [(120, 3)], resources=("bat-1",))
        assert await self.oadr2b._on_event(raw) == "optIn"
        await wait_for(lambda: self.stack.battery_kw("bat-1") < 0, 5.0)
        assert all(by == f"openadr:oadr2b:{event_id}" for _, _, by in self.calls.calls)


@contextlib.asynccontextmanager
async def rig(broker_url: str, *, history_limit: int | None = None) -> AsyncIterator[Rig]:
    """Start the stack (60x clock) and wire the bridge and the adapters' handlers."""
    async with dr_stack(broker_url, batteries=1, heaters=1, speed=60.0) as stack:
        bridge = DrBridge(stack.ems, rng_seed=15)
        if history_limit is not None:
            bridge.history.limit = history_limit
        calls = CallLog(stack.ems)
        oadr2b = Oadr2bAdapter(
            Oadr2bConfig(vtn_url="http://127.0.0.1:9", ven_name="sef-ems"), clock=stack.clock
        )
        oadr2b._sink = bridge
        oadr3 = Oadr3Adapter(
            Oadr3Config(vtn_url="http://127.0.0.1:9", ven_name="sef-ems", token="t"),
            clock=stack.clock,
        )
        oadr3._sink = bridge
        try:
            yield Rig(stack, bridge, calls, oadr2b, oadr3)
        finally:
            await bridge.close()


def warned(caplog: pytest.LogCaptureFixture, *words: str) -> bool:
    """A WARNING or higher on ``sef.openadr`` contains every one of ``words``."""
    return any(
        r.levelno >= logging.WARNING
        and r.name == "sef.openadr"
        and all(w in r.getMessage() for w in words)
        for r in caplog.records
    )


# ---------------------------------------------------------------------- OpenADR 3


def simple_oa3(program_id: str, event_id: str, start_s: float, level: float) -> dict[str, Any]:
    """An OpenADR 3 SIMPLE event for the group ``batteries`` (bat-1): one 10-min interval at
    ``level``."""
    stamp = iso(start_s - 3600)
    return {
        "id": event_id,
        "programID": program_id,
        "objectType": "EVENT",
        "createdDateTime": stamp,
        "modificationDateTime": stamp,
        "eventName": event_id,
        "targets": ["batteries"],
        "intervalPeriod": {"start": iso(start_s), "duration": "PT10M"},
        "intervals": [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [level]}]}],
    }


class LoopLag:
    """Measures the event loop's longest stall: a task that sleeps ``step_s`` and records how
    late it wakes, real s.

    ``worst_s`` leaves out the time the garbage collector ran within the stall
    (``gc.callbacks``): a full collection walks the whole test process's heap (every
    module and object a pytest worker gathered; 0.5-0.7 s seen under load, in weakref
    callbacks), which says nothing of the code under test; ``worst_with_gc_s`` has it in.
    """

    def __init__(self, step_s: float = 0.02) -> None:
        self.step_s = step_s
        self.worst_s = 0.0
        self.worst_with_gc_s = 0.0
        self.gc_s = 0.0
        """Time the collector ran while measuring, real s."""
        self._gc_began = 0.0
        self._task: asyncio.Task[None] | None = None

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_began = time.monotonic()
        elif self._gc_began:
            self.gc_s += time.monotonic() - self._gc_began
            self._gc_began = 0.0

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            gc_before = self.gc_s
            await asyncio.sleep(self.step_s)
            late = time.monotonic() - before - self.step_s
            self.worst_with_gc_s = max(self.worst_with_gc_s, late)
            self.worst_s = max(self.worst_s, late - (self.gc_s - gc_before))

    def start(self) -> LoopLag:
        """Start measuring."""
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.create_task(self._run())
        return self

    def stop(self) -> None:
        """Stop measuring."""
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()


def oa3_config(vtn: Oa3Vtn, **changes: Any) -> Oadr3Config:
    values: dict[str, Any] = {
        "vtn_url": vtn.url,
        "ven_name": "sef-ems",
        "client_id": VEN_CLIENT[0],
        "client_secret": VEN_CLIENT[1],
        "poll_interval_s": 30.0,  # clock s: 0.5 s real at 60x
        "report_interval_s": 600.0,
        "max_backoff_s": 60.0,
        "timeout_s": 5.0,
    }
    return Oadr3Config(**{**values, **changes})

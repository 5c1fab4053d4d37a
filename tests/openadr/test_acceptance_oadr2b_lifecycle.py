"""OpenADR 2.0b event life cycle end to end (beside the acceptance tests in
``test_acceptance_oadr2b.py``, same parts): a modification from the VTN changes the devices,
a cancellation before the start sends nothing at all, a randomised start
(``tolerance/startafter``) moves the first command by the offset the bridge drew, and two
overlapping events for the same devices hand the devices back to the earlier event when the
later one is cancelled or ends (more cases in ``test_overlap.py``). Checked at
the emulators and in the EMS's command log."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from e2e_events import RATINGS_KW, pro_rata_kw, simple_battery_kw
from e2e_support import (
    energy_methods,
    on_clock,
    reached_by,
    real_mono_at,
    running_ven,
    sent_by,
)

from sef.models.waterheater_dr import DRMode
from support import wait_for

RNG_SEED = 15
"""The bridge's seed in ``running_ven``."""


async def test_a_modification_from_the_vtn_changes_the_devices(
    broker_url: str, tmp_path: Path
) -> None:
    async with running_ven(broker_url, tmp_path, tls=False) as ven:
        stack, vtn = ven.stack, ven.vtn
        vtn.add_simple(ven.ven_id, "mod-1", 1, on_clock(stack, 0.0), 1800)
        level_1 = {b: simple_battery_kw(1, r) for b, r in RATINGS_KW.items()}
        await wait_for(
            lambda: ven.batteries_at(level_1) and stack.heater_mode("wh-1") is DRMode.SHED, 3.0
        )
        await wait_for(lambda: bool(vtn.opts_for("mod-1")), 3.0)  # quirk 5: opt before modify

        modified = time.monotonic()
        vtn.modify_level(ven.ven_id, "mod-1", 3)
        level_3 = {b: simple_battery_kw(3, r) for b, r in RATINGS_KW.items()}
        assert level_3 == {"bat-1": -8.0, "bat-2": -4.0}

        def at_level_3() -> bool:
            return ven.batteries_at(level_3) and stack.heater_mode("wh-1") is DRMode.CRITICAL_PEAK

        reached = await reached_by(at_level_3, modified + 2.0)
        assert reached - modified < 2.0
        await wait_for(lambda: len(vtn.opts_for("mod-1")) == 2, 3.0)
        assert [(o.modification, o.opt) for o in vtn.opts_for("mod-1")] == [
            (0, "optIn"),
            (1, "optIn"),
        ]
        # one sequence per device and version: nothing idled in between
        bat_1 = [row["args"][0] for row in energy_methods(stack) if row["target"] == "bat-1"]
        assert [sequence[0][:2] for sequence in bat_1] == [["shed", 3], ["shed", 8]]


async def test_a_cancellation_before_the_start_sends_nothing(
    broker_url: str, tmp_path: Path
) -> None:
    async with running_ven(broker_url, tmp_path, tls=False) as ven:
        stack, vtn = ven.stack, ven.vtn
        start = on_clock(stack, 150.0)  # 2.5 s real ahead
        vtn.add_simple(ven.ven_id, "early", 2, start, 600)
        await wait_for(lambda: bool(vtn.opts_for("early")), 3.0)
        vtn.cancel(ven.ven_id, "early")
        await wait_for(lambda: len(vtn.opts_for("early")) == 2, 3.0)
        assert time.monotonic() < real_mono_at(stack, start), "the cancel came too late"
        await stack.until(start.timestamp() + 60.0)  # one second real past the start
        assert energy_methods(stack, sent_by_prefix="") == []
        assert ven.normal()
        record = ven.bridge.history.latest("oadr2b", "early")
        assert record is not None and record.status == "cancelled"


async def test_a_randomised_start_moves_the_first_command(broker_url: str, tmp_path: Path) -> None:
    """``startafter`` 120 clock s: the bridge draws U(0, 120) from its seeded RNG once for
    the version (decision 6); the batteries start at start + offset, not before."""
    offset_s = random.Random(RNG_SEED).uniform(0.0, 120.0)
    assert 60.0 < offset_s < 120.0  # a draw the test can tell from "no offset"
    async with running_ven(broker_url, tmp_path, tls=False) as ven:
        stack, vtn = ven.stack, ven.vtn
        start = on_clock(stack, 120.0)
        vtn.add_dispatch(
            ven.ven_id, "jitter", start, [-6.0], 600, resource_id="batteries", startafter_s=120
        )
        due_mono = real_mono_at(stack, start) + stack.clock.to_real(offset_s)
        want = pro_rata_kw(-6.0)
        reached = await reached_by(lambda: ven.batteries_at(want), due_mono + 2.0)
        first = ven.calls.first("jitter")
        assert first is not None
        assert first >= due_mono - 0.05, f"first command {due_mono - first:.3f} s early"
        assert reached - due_mono < 2.0
        record = ven.bridge.history.latest("oadr2b", "jitter")
        assert record is not None and record.offset_s == pytest.approx(offset_s)
        rows = energy_methods(stack)
        assert {row["target"] for row in rows} == {"bat-1", "bat-2"}
        assert {row["sent_by"] for row in rows} == {sent_by("jitter")}
        first_logged = min(row["ts"] for row in rows)  # clock s
        assert first_logged == pytest.approx(start.timestamp() + offset_s, abs=3.0)


async def test_cancelling_one_of_two_overlapping_events_leaves_the_other_running(
    broker_url: str, tmp_path: Path
) -> None:
    """Event A (SIMPLE 1) runs; event B (SIMPLE 3) for the same devices comes on top and is
    then cancelled: A is still on, so the devices go back to A's commands, not to idle."""
    async with running_ven(broker_url, tmp_path, tls=False) as ven:
        stack, vtn = ven.stack, ven.vtn
        level_1 = {b: simple_battery_kw(1, r) for b, r in RATINGS_KW.items()}
        level_3 = {b: simple_battery_kw(3, r) for b, r in RATINGS_KW.items()}
        vtn.add_simple(ven.ven_id, "ev-a", 1, on_clock(stack, 0.0), 3600)
        await wait_for(lambda: ven.batteries_at(level_1) and bool(vtn.opts_for("ev-a")), 3.0)
        vtn.add_simple(ven.ven_id, "ev-b", 3, on_clock(stack, 0.0), 3600)
        await wait_for(lambda: ven.batteries_at(level_3) and bool(vtn.opts_for("ev-b")), 3.0)
        vtn.cancel(ven.ven_id, "ev-b")
        await wait_for(lambda: len(vtn.opts_for("ev-b")) == 2, 3.0)
        await stack.until(stack.clock.now() + 60.0)  # the 1-s restore is over
        assert ven.batteries_at(level_1), {b: stack.battery_kw(b) for b in RATINGS_KW}
        assert stack.heater_mode("wh-1") is DRMode.SHED


async def test_a_short_event_on_top_of_a_long_one_hands_back_to_it(
    broker_url: str, tmp_path: Path
) -> None:
    """Event A (SIMPLE 1, 1 h) runs; event B (SIMPLE 3, 2 clock min) for the same devices
    comes on top and ends: A is still on, so the devices go back to A's commands."""
    async with running_ven(broker_url, tmp_path, tls=False) as ven:
        stack, vtn = ven.stack, ven.vtn
        level_1 = {b: simple_battery_kw(1, r) for b, r in RATINGS_KW.items()}
        level_3 = {b: simple_battery_kw(3, r) for b, r in RATINGS_KW.items()}
        vtn.add_simple(ven.ven_id, "ev-a", 1, on_clock(stack, 0.0), 3600)
        await wait_for(lambda: ven.batteries_at(level_1) and bool(vtn.opts_for("ev-a")), 3.0)
        b_start = on_clock(stack, 60.0)
        vtn.add_simple(ven.ven_id, "ev-b", 3, b_start, 120)
        await wait_for(lambda: ven.batteries_at(level_3), 4.0)
        await stack.until(b_start.timestamp() + 120.0 + 60.0)  # B is over (1 s real ago)
        assert ven.batteries_at(level_1), {b: stack.battery_kw(b) for b in RATINGS_KW}

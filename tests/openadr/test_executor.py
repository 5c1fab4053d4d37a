"""The DR executor carries out hand-made plans through a real EMS, Mosquitto and agents;
what the devices do is checked at the emulators (battery controls, SGD demand-response
mode), which calls went out at the EMS's call method."""

from __future__ import annotations

import asyncio

import pytest
from dr_stack import CallLog, DrStack, dr_stack

from sef.ems._target_board import target_board
from sef.models.waterheater_dr import DRMode
from sef.openadr import Dispatch, DrHistory, EventRecord, Plan, TargetWindow
from sef.openadr._executor import PlanExecutor
from support import wait_for

KEY = ("test", "ev-1", 0)

RESTORE = (
    Dispatch(("bat-1",), 0.0, (("idle", 0, 1),)),
    Dispatch(("wh-1",), 0.0, (("endshed", 0, 1),)),
)


def history_with(stack: DrStack, start_s: float, end_s: float) -> DrHistory:
    history = DrHistory()
    history.add(
        EventRecord(
            source="test",
            event_id="ev-1",
            modification=0,
            program="p",
            signal="SIMPLE",
            status="scheduled",
            opt="optIn",
            reason="mapped",
            received_s=stack.clock.now(),
            start_s=start_s,
            end_s=end_s,
        )
    )
    return history


async def test_dispatches_at_their_time_reach_the_devices(broker_url: str) -> None:
    async with dr_stack(broker_url, speed=60.0) as stack:
        calls = CallLog(stack.ems)
        start = stack.clock.now() + 60.0  # 1 s real
        end = start + 240.0
        history = history_with(stack, start, end)
        plan = Plan(
            dispatches=(
                Dispatch(("bat-1",), start, (("discharge", 3, 240),)),
                Dispatch(("wh-1",), start, (("discharge", 0, 240),)),  # CTA-2045 Critical Peak
            ),
            restore=RESTORE,
            requested_kw=-3.0,
        )
        executor = PlanExecutor(stack.ems, history)
        scheduled = executor.schedule(KEY, plan, offset_s=0.0, end_s=end, groups=("batteries",))
        await asyncio.sleep(stack.clock.to_real(30.0))
        assert calls.calls == [] and stack.battery_kw("bat-1") == 0.0  # not yet due
        assert stack.heater_mode("wh-1") is DRMode.NORMAL

        await wait_for(lambda: stack.battery_kw("bat-1") == pytest.approx(-3.0), 5.0)
        await wait_for(lambda: stack.heater_mode("wh-1") is DRMode.CRITICAL_PEAK, 5.0)
        assert scheduled.first_sent_s is not None and scheduled.first_sent_s >= start
        assert scheduled.first_sent_s - start < stack.clock.to_clock(0.5)
        # bat-1 alone is the whole group "batteries": one group call; wh-1 per agent
        assert sorted(calls.targets) == ["group:batteries", "wh-1"]
        assert {sent_by for _, _, sent_by in calls.calls} == {"openadr:test:ev-1"}
        assert calls.commands("wh-1") == [[["discharge", 0, 240]]]
        record = history.get(KEY)
        assert record is not None and record.status == "active"
        assert (record.dispatched, record.agents) == (2, 2)
        board = target_board(stack.ems)
        assert board.held_at(start + 10.0) == {"bat-1", "wh-1"}

        await stack.until(end + 5.0)
        await wait_for(lambda: record.status == "completed", 5.0)
        assert scheduled.failures == 0 and executor.calls_failed == 0
        # delivered: the commanded agents' power during the event − before it
        assert record.delivered_kw is not None and record.delivered_kw < -2.0
        print(f"requested -3 kW (battery) + heater critical peak: delivered {record.delivered_kw}")
        assert board.holds == {}
        await wait_for(lambda: stack.battery_kw("bat-1") == 0.0, 5.0)  # the sequence ended


async def test_group_call_only_for_a_whole_group(broker_url: str) -> None:
    async with dr_stack(broker_url, batteries=2, heaters=0, speed=60.0) as stack:
        calls = CallLog(stack.ems)
        now = stack.clock.now()
        end = now + 120.0
        history = history_with(stack, now, end)
        executor = PlanExecutor(stack.ems, history)
        both = Plan((Dispatch(("bat-1", "bat-2"), now, (("discharge", 2, 120),)),))
        executor.schedule(KEY, both, offset_s=0.0, end_s=end, groups=("batteries",))
        await wait_for(lambda: len(calls.calls) == 1, 3.0)
        assert calls.targets == ["group:batteries"]
        await wait_for(
            lambda: stack.battery_kw("bat-1") == stack.battery_kw("bat-2") == pytest.approx(-2.0),
            5.0,
        )

        calls.calls.clear()
        one = Plan((Dispatch(("bat-2",), now, (("charge", 1, 60),)),))
        executor.schedule(("test", "ev-2", 0), one, offset_s=0.0, end_s=end, groups=("batteries",))
        await wait_for(lambda: len(calls.calls) == 1, 3.0)  # one agent of the group: per agent
        # (scheduled together, the newer ev-3 would hold bat-2 from the same instant and
        # ev-2 would rightly send nothing: overlapping events are arbitrated per device)
        no_group = Plan((Dispatch(("bat-1", "bat-2"), now, (("idle", 0, 60),)),))
        executor.schedule(("test", "ev-3", 0), no_group, offset_s=0.0, end_s=end)
        await wait_for(lambda: len(calls.calls) == 3, 3.0)
        assert sorted(calls.targets) == ["bat-1", "bat-2", "bat-2"]
        await executor.close()


async def test_cancel_restores_the_commanded_devices(broker_url: str) -> None:
    async with dr_stack(broker_url, speed=60.0) as stack:
        calls = CallLog(stack.ems)
        now = stack.clock.now()
        end = now + 3600.0
        history = history_with(stack, now, end)
        executor = PlanExecutor(stack.ems, history)
        plan = Plan(
            dispatches=(
                Dispatch(("bat-1",), now, (("discharge", 4, 3600),)),
                Dispatch(("wh-1",), now, (("shed", 0, 3600),)),
            ),
            windows=(TargetWindow(now, end, limit_kw=12.0),),
            restore=RESTORE,
        )
        executor.schedule(KEY, plan, offset_s=0.0, end_s=end)
        await wait_for(lambda: stack.battery_kw("bat-1") == pytest.approx(-4.0), 5.0)
        await wait_for(lambda: stack.heater_mode("wh-1") is DRMode.SHED, 5.0)
        board = target_board(stack.ems)
        assert board.limit_at(now + 60.0) == 12.0 and board.held_at(now + 60.0)

        await executor.cancel(KEY)
        assert calls.commands("bat-1")[-1] == [["idle", 0, 1]]
        assert calls.commands("wh-1")[-1] == [["endshed", 0, 1]]
        await wait_for(lambda: stack.battery_kw("bat-1") == 0.0, 5.0)
        await wait_for(lambda: stack.heater_mode("wh-1") is DRMode.NORMAL, 5.0)
        assert board.limit_at(now + 60.0) is None and board.held_at(now + 60.0) == set()
        assert executor.get(KEY) is None


async def test_cancel_before_the_start_sends_nothing(broker_url: str) -> None:
    async with dr_stack(broker_url, heaters=0, speed=60.0) as stack:
        calls = CallLog(stack.ems)
        start = stack.clock.now() + 600.0
        history = history_with(stack, start, start + 600.0)
        executor = PlanExecutor(stack.ems, history)
        plan = Plan((Dispatch(("bat-1",), start, (("discharge", 4, 600),)),), restore=RESTORE)
        executor.schedule(KEY, plan, offset_s=0.0, end_s=start + 600.0)
        await asyncio.sleep(0.3)
        await executor.cancel(KEY)
        await asyncio.sleep(0.3)
        assert calls.calls == [] and stack.battery_kw("bat-1") == 0.0


async def test_the_start_offset_is_respected(broker_url: str) -> None:
    async with dr_stack(broker_url, heaters=0, speed=60.0) as stack:
        now = stack.clock.now()
        history = history_with(stack, now, now + 300.0)
        executor = PlanExecutor(stack.ems, history)
        plan = Plan((Dispatch(("bat-1",), now, (("discharge", 2, 120),)),))
        scheduled = executor.schedule(KEY, plan, offset_s=90.0, end_s=now + 300.0)
        assert scheduled.end_s == now + 390.0
        await wait_for(lambda: scheduled.first_sent_s is not None, 5.0)
        assert scheduled.first_sent_s is not None
        assert now + 90.0 <= scheduled.first_sent_s < now + 90.0 + stack.clock.to_clock(0.5)
        await executor.close()


async def test_a_refused_call_is_counted_not_raised(broker_url: str) -> None:
    async with dr_stack(broker_url, heaters=0, speed=60.0) as stack:
        now = stack.clock.now()
        history = history_with(stack, now, now + 60.0)
        executor = PlanExecutor(stack.ems, history)
        bad = Plan((Dispatch(("bat-1",), now, (("discharge", 70_000, 60),)),))  # beyond int16
        scheduled = executor.schedule(KEY, bad, offset_s=0.0, end_s=now + 60.0)
        await wait_for(lambda: scheduled.failures == 1, 5.0)
        assert executor.calls_failed == 1 and stack.battery_kw("bat-1") == 0.0
        await stack.until(now + 65.0)
        record = history.get(KEY)
        assert record is not None
        await wait_for(lambda: record.status == "completed", 5.0)

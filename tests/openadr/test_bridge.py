"""The DR bridge (DrSink) over a real EMS, Mosquitto and agents: the mapping's commands at
the emulators, redelivery, modification, cancellation, random start, opt-outs that send
nothing, and no exception ever reaching the adapter."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence

import pytest
from dr_stack import CallLog, dr_stack

from sef.ems._target_board import target_board
from sef.models.waterheater_dr import DRMode
from sef.openadr import (
    AdapterStatus,
    Dispatch,
    DrBridge,
    DrEvent,
    DrInterval,
    DrSignal,
    DrSink,
    EventStatus,
    FleetMember,
    Opt,
    OptDecision,
    Plan,
    Targets,
    Unsupported,
)
from support import wait_for


def event(
    start_s: float,
    duration_s: float,
    *,
    name: str = "SIMPLE",
    type_: str = "level",
    unit: str | None = None,
    value: float = 2.0,
    modification: int = 0,
    event_id: str = "ev-1",
    groups: tuple[str, ...] = (),
    randomize_s: float = 0.0,
    test: bool = False,
) -> DrEvent:
    signal = DrSignal(name, type_, unit, (DrInterval(start_s, duration_s, value),))
    return DrEvent(
        source="oadr2b",
        event_id=event_id,
        modification=modification,
        program="prog-1",
        status=EventStatus.FAR,
        start_s=start_s,
        duration_s=duration_s,
        signals=(signal,),
        targets=Targets(groups=groups),
        randomize_s=randomize_s,
        test=test,
    )


def battery_plan(rate_kw: int, start_s: float, duration_s: int, agents: Sequence[str]) -> Plan:
    """Hand-made: discharge the batteries at ``rate_kw``; heaters (``wh-*``) shed."""
    dispatches = tuple(
        Dispatch((a,), start_s, (("shed", 0, duration_s),))
        if a.startswith("wh")
        else Dispatch((a,), start_s, (("discharge", rate_kw, duration_s),))
        for a in agents
    )
    restore = tuple(
        Dispatch((a,), start_s, (("endshed", 0, 1),) if a.startswith("wh") else (("idle", 0, 1),))
        for a in agents
    )
    return Plan(dispatches, restore=restore, requested_kw=-float(rate_kw), signal="SIMPLE")


async def test_simple_level_2_through_the_mapping_and_cancel(broker_url: str) -> None:
    async with dr_stack(broker_url, speed=60.0) as stack:
        bridge = DrBridge(stack.ems, rng_seed=1)
        now = stack.clock.now()
        ev = event(now + 30.0, 1800.0)
        decision = await bridge.on_event(ev)
        assert decision.opt is Opt.IN, decision
        # SIMPLE 2: battery shed ⌈0.66 × 8 kW⌉ = 6 kW (discharge), heater Critical Peak
        await wait_for(lambda: stack.battery_kw("bat-1") == pytest.approx(-6.0), 5.0)
        await wait_for(lambda: stack.heater_mode("wh-1") is DRMode.CRITICAL_PEAK, 5.0)
        record = bridge.history.get(ev.key)
        assert record is not None and record.status == "active"
        assert (record.dispatched, record.agents, record.signal) == (2, 2, "SIMPLE")
        latency = bridge.latency_s(ev.key)
        assert latency is not None
        print(f"event -> first command (start due in 0.5 s real): {latency:.3f} s")

        await bridge.on_cancel("oadr2b", "ev-1", 1)
        await wait_for(lambda: stack.battery_kw("bat-1") == 0.0, 5.0)
        await wait_for(lambda: stack.heater_mode("wh-1") is DRMode.NORMAL, 5.0)
        assert record.status == "cancelled"
        assert bridge.executor.keys_of("oadr2b", "ev-1") == []


async def test_first_command_latency_of_an_event_due_now(broker_url: str) -> None:
    async with dr_stack(broker_url, speed=60.0) as stack:
        bridge = DrBridge(stack.ems, rng_seed=1)
        latencies = []
        for i in range(5):
            ev = event(stack.clock.now(), 600.0, event_id=f"now-{i}", groups=("batteries",))
            assert (await bridge.on_event(ev)).opt is Opt.IN
            await wait_for(lambda ev=ev: bridge.latency_s(ev.key) is not None, 5.0)  # type: ignore[misc]
            latencies.append(bridge.latency_s(ev.key) or 0.0)
        print("event -> first command, due now:", [f"{x * 1000:.1f} ms" for x in latencies])
        assert max(latencies) < 0.5
        await bridge.close()


async def test_redelivery_answers_again_and_sends_nothing(broker_url: str) -> None:
    async with dr_stack(broker_url, heaters=0, speed=60.0) as stack:
        calls = CallLog(stack.ems)
        planned: list[int] = []

        def planner(ev: DrEvent, fleet: Sequence[FleetMember]) -> Plan:
            planned.append(ev.modification)
            return battery_plan(3, ev.start_s, int(ev.duration_s), ["bat-1"])

        bridge = DrBridge(stack.ems, rng_seed=7, planner=planner)
        now = stack.clock.now()
        ev = event(now + 30.0, 600.0, randomize_s=120.0)
        first = await bridge.on_event(ev)
        again = await bridge.on_event(ev)
        assert again == first and again.opt is Opt.IN and planned == [0]
        record = bridge.history.get(ev.key)
        assert record is not None
        # the offset: U(0, 120) from the seeded RNG, drawn once
        assert record.offset_s == random.Random(7).uniform(0.0, 120.0)
        assert bridge.offset_s(ev.key, 120.0) == record.offset_s
        await wait_for(lambda: stack.battery_kw("bat-1") == pytest.approx(-3.0), 8.0)
        scheduled = bridge.executor.get(ev.key)
        assert scheduled is not None and scheduled.first_sent_s is not None
        assert scheduled.first_sent_s >= ev.start_s + record.offset_s
        assert await bridge.on_event(ev) == first
        await asyncio.sleep(0.3)
        assert len(calls.calls) == 1
        await bridge.close()


async def test_a_modification_replaces_the_schedule(broker_url: str) -> None:
    async with dr_stack(broker_url, speed=60.0) as stack:
        calls = CallLog(stack.ems)

        def planner(ev: DrEvent, fleet: Sequence[FleetMember]) -> Plan:
            agents = ["bat-1", "wh-1"] if ev.modification == 0 else ["bat-1"]
            rate = 3 if ev.modification == 0 else 5
            return battery_plan(rate, ev.start_s, int(ev.duration_s), agents)

        bridge = DrBridge(stack.ems, planner=planner)
        now = stack.clock.now()
        first = event(now, 1800.0)
        assert (await bridge.on_event(first)).opt is Opt.IN
        await wait_for(lambda: stack.battery_kw("bat-1") == pytest.approx(-3.0), 5.0)
        await wait_for(lambda: stack.heater_mode("wh-1") is DRMode.SHED, 5.0)

        second = event(now, 1800.0, modification=1)
        assert (await bridge.on_event(second)).opt is Opt.IN
        await wait_for(lambda: stack.battery_kw("bat-1") == pytest.approx(-5.0), 5.0)
        await wait_for(lambda: stack.heater_mode("wh-1") is DRMode.NORMAL, 5.0)
        # bat-1 is commanded by the new version: no idle in between; wh-1 is restored
        assert calls.commands("bat-1") == [[["discharge", 3, 1800]], [["discharge", 5, 1800]]]
        assert calls.commands("wh-1") == [[["shed", 0, 1800]], [["endshed", 0, 1]]]
        old, new = bridge.history.get(first.key), bridge.history.get(second.key)
        assert old is not None and old.status == "cancelled"
        assert new is not None and new.status == "active"
        # an older version arriving late changes nothing
        assert (await bridge.on_event(first)).opt is Opt.IN
        assert len(calls.calls) == 4
        await bridge.close()


async def test_opt_outs_and_test_events_send_nothing(
    broker_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sef.openadr")
    async with dr_stack(broker_url, speed=60.0) as stack:
        calls = CallLog(stack.ems)
        bridge = DrBridge(stack.ems)
        now = stack.clock.now()
        unsupported = event(now, 600.0, name="x-foo", event_id="foo")
        decision = await bridge.on_event(unsupported)
        assert decision.opt is Opt.OUT
        record = bridge.history.get(unsupported.key)
        assert record is not None and record.status == "opted_out"
        assert record.reason == decision.reason

        level7 = event(now, 600.0, value=7.0, event_id="seven")
        assert (await bridge.on_event(level7)).opt is Opt.OUT

        test_event = event(now, 600.0, event_id="drill", test=True)
        decision = await bridge.on_event(test_event)
        assert decision.opt is Opt.IN and "nothing sent" in decision.reason

        await asyncio.sleep(0.5)
        assert calls.calls == []
        assert stack.battery_kw("bat-1") == 0.0 and stack.heater_mode("wh-1") is DRMode.NORMAL
        logged = [r.getMessage() for r in caplog.records if r.name == "sef.openadr"]
        for ev_id in ("foo", "seven", "drill"):
            assert any(f"oadr2b/{ev_id} " in m and "opt" in m for m in logged), logged


async def test_failures_become_opt_outs(broker_url: str, caplog: pytest.LogCaptureFixture) -> None:
    async with dr_stack(broker_url, heaters=0, speed=60.0) as stack:
        calls = CallLog(stack.ems)

        def planner(ev: DrEvent, fleet: Sequence[FleetMember]) -> Plan | Unsupported:
            if ev.event_id == "boom":
                raise RuntimeError("mapping broke")
            return Unsupported("nothing to do")

        bridge = DrBridge(stack.ems, planner=planner)
        now = stack.clock.now()
        boom = event(now, 600.0, event_id="boom")
        decision = await bridge.on_event(boom)
        assert decision.opt is Opt.OUT
        assert decision.reason == "internal error: RuntimeError: mapping broke"
        record = bridge.history.get(boom.key)
        assert record is not None and record.status == "failed"
        assert any(r.exc_info for r in caplog.records if r.name == "sef.openadr")
        assert (await bridge.on_event(boom)) == decision  # answered the same again

        calm = event(now, 600.0, event_id="calm")
        assert (await bridge.on_event(calm)).reason == "nothing to do"
        # a cancel of an unknown event, and telemetry of an unknown group, do not raise
        await bridge.on_cancel("oadr2b", "unknown", 3)
        assert bridge.telemetry("nobody") is None
        sample = bridge.telemetry("*")
        assert sample is not None and sample.members == 1
        assert calls.calls == []


async def test_a_hundred_concurrent_events_across_programs(broker_url: str) -> None:
    """100 events of 4 programs arrive at once, their starts spread over 2 min of clock
    (2 s real): each is answered, and each one's first command goes out within 0.5 s real
    of its (offset) start: no missed interval."""
    async with dr_stack(broker_url, batteries=2, heaters=0, speed=60.0) as stack:
        calls = CallLog(stack.ems)

        def planner(ev: DrEvent, fleet: Sequence[FleetMember]) -> Plan:
            agent = "bat-1" if int(ev.event_id.split("-")[1]) % 2 else "bat-2"
            return battery_plan(1 + len(ev.event_id) % 3, ev.start_s, 60, [agent])

        bridge = DrBridge(stack.ems, rng_seed=3, planner=planner)
        now = stack.clock.now()
        starts = [now + 30.0 + 90.0 * i / 100 for i in range(100)]
        # 50 events overlap on each battery: priorities follow the due times (the bridge's
        # seeded offsets, drawn in arrival order) so that none is outranked on its battery
        # (arbitration: test_overlap.py); this test measures the timing of every event
        draws = random.Random(3)
        due_at = [start + draws.uniform(0.0, 10.0) for start in starts]
        by_due = sorted(range(100), key=lambda i: due_at[i])
        priority = {i: 100 - position for position, i in enumerate(by_due)}
        events = [
            DrEvent(
                source="oadr2b",
                event_id=f"ev-{i}",
                modification=0,
                program=f"prog-{i % 4}",
                status=EventStatus.FAR,
                start_s=start,
                duration_s=60.0,
                signals=(DrSignal("SIMPLE", "level", None, (DrInterval(start, 60.0, 1.0),)),),
                randomize_s=10.0,
                priority=priority[i],
            )
            for i, start in enumerate(starts)
        ]
        decisions = await asyncio.gather(*(bridge.on_event(ev) for ev in events))
        assert all(d.opt is Opt.IN for d in decisions)
        await stack.until(now + 30.0 + 90.0 + 10.0)
        await wait_for(lambda: len(calls.calls) == 100, 5.0)
        late = []
        for ev in events:
            record = bridge.history.get(ev.key)
            assert record is not None
            scheduled = bridge.scheduled(ev.key)
            assert scheduled is not None and scheduled.first_sent_s is not None
            due = ev.start_s + record.offset_s
            late.append(stack.clock.to_real(scheduled.first_sent_s - due))
        print(f"100 events: first command after its due time, real s: max {max(late):.3f}")
        assert min(late) >= 0.0 and max(late) < 0.5
        assert bridge.executor.calls_failed == 0
        await bridge.close()


async def test_a_capacity_limit_goes_to_the_target_board(broker_url: str) -> None:
    async with dr_stack(broker_url, speed=60.0) as stack:
        calls = CallLog(stack.ems)
        now = stack.clock.now()
        limit = event(now + 30.0, 600.0, name="IMPORT_CAPACITY_LIMIT", type_="setpoint",
                      unit="kW", value=9.0, event_id="cap")  # fmt: skip
        without = DrBridge(stack.ems)
        decision = await without.on_event(limit)
        assert decision.opt is Opt.OUT and "live controller" in decision.reason

        bridge = DrBridge(stack.ems, live_control=True)
        assert (await bridge.on_event(limit)).opt is Opt.IN
        board = target_board(stack.ems)
        await wait_for(lambda: board.limit_at(now + 60.0) == 9.0, 3.0)
        assert board.limit_at(now + 10.0) is None and board.limit_at(now + 640.0) is None
        scheduled = bridge.scheduled(limit.key)
        assert scheduled is not None and scheduled.measured == {"bat-1", "wh-1"}
        await stack.until(now + 40.0)
        await wait_for(lambda: scheduled.baseline_kw is not None, 3.0)

        await bridge.on_cancel("oadr2b", "cap", 1)
        assert board.limit_at(now + 60.0) is None
        record = bridge.history.get(limit.key)
        assert record is not None and record.status == "cancelled"
        assert calls.calls == []


class AnswerBook:
    """A VEN adapter without a VTN: records the answers the bridge sends again."""

    source = "oadr2b"

    def __init__(self) -> None:
        self.sink: object = None
        self.sent: list[tuple[str, int, OptDecision]] = []
        self.stopped = False

    async def start(self, sink: DrSink) -> None:
        self.sink = sink

    async def stop(self) -> None:
        self.stopped = True

    def status(self) -> AdapterStatus:
        return AdapterStatus(self.source, "http://vtn.invalid", registered=True)

    async def send_opt(self, event_id: str, modification: int, decision: OptDecision) -> None:
        self.sent.append((event_id, modification, decision))


async def test_operator_overrides_and_policy(broker_url: str) -> None:
    async with dr_stack(broker_url, heaters=0, speed=60.0) as stack:
        calls = CallLog(stack.ems)

        def planner(ev: DrEvent, fleet: Sequence[FleetMember]) -> Plan:
            return battery_plan(3, ev.start_s, int(ev.duration_s), ["bat-1"])

        bridge = DrBridge(stack.ems, planner=planner)
        book = AnswerBook()
        await bridge.attach(book)
        assert book.sink is bridge and bridge.statuses()[0].registered
        now = stack.clock.now()
        ev = event(now, 1800.0)
        assert (await bridge.on_event(ev)).opt is Opt.IN
        await wait_for(lambda: stack.battery_kw("bat-1") == pytest.approx(-3.0), 5.0)

        record = await bridge.set_opt("oadr2b", "ev-1", Opt.OUT, "customer asked")
        assert (record.opt, record.status, record.reason) == (
            "optOut",
            "opted_out",
            "operator: customer asked",
        )
        await wait_for(lambda: stack.battery_kw("bat-1") == 0.0, 5.0)
        assert calls.commands("bat-1")[-1] == [["idle", 0, 1]]
        assert [(e, m, d.opt) for e, m, d in book.sent] == [("ev-1", 0, Opt.OUT)]
        assert (await bridge.on_event(ev)).opt is Opt.OUT  # redelivered: the operator's answer
        sent = len(calls.calls)
        later = event(now, 1800.0, modification=1)
        assert (await bridge.on_event(later)).opt is Opt.OUT  # it holds for modifications
        await asyncio.sleep(0.3)
        assert len(calls.calls) == sent

        record = await bridge.set_opt("oadr2b", "ev-1", Opt.IN, "resolved")
        assert (record.modification, record.opt, record.status) == (1, "optIn", "scheduled")
        await wait_for(lambda: stack.battery_kw("bat-1") == pytest.approx(-3.0), 5.0)
        with pytest.raises(KeyError):
            await bridge.set_opt("oadr2b", "nope", Opt.OUT, "")

        assert bridge.policy_json()["blocked_programs"] == []
        bridge.set_policy_json({"blocked_programs": ["prog-1"]})
        blocked = await bridge.on_event(event(now, 600.0, event_id="ev-2"))
        assert blocked.opt is Opt.OUT and "prog-1" in blocked.reason
        with pytest.raises(ValueError):
            bridge.set_policy_json({"no_such_rule": 1})
        await bridge.close()
        assert book.stopped

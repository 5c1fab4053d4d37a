"""Session checks: sequence numbers, rebirth, stale-death repair, bdseq across a reconnect
and a restart, the will (docs/protocol.md §4).

These run last: they disturb the agent (a forged stale death, a client-id takeover, a
process restart). The takeover is the one way to make any agent reconnect from outside:
MQTT hands a client id to the newest connection (§1).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from sef.certify._birth import current_session, declared_properties, obj, relative
from sef.certify._model import Check, CheckContext, CheckFailed, CheckSkipped, Level, Observed

__all__ = ["CHECKS"]

SEQ_MODULUS = 2**32
RESTART_CHECK_TIMEOUT_S = 900.0
"""Time limit of the checks that wait for a restart (an operator may be slow), s."""


def _status(ctx: CheckContext, message: Observed) -> dict[str, Any] | None:
    return obj(message) if relative(ctx, message) == "status" else None


def _online_after(
    ctx: CheckContext, mark: int, test: Any = lambda bdseq: True
) -> Any:  # -> Callable[[Observed], bool]
    def matches(message: Observed) -> bool:
        data = _status(ctx, message)
        return (
            data is not None
            and data.get("state") == "online"
            and isinstance(data.get("bdseq"), int)
            and bool(test(data["bdseq"]))
        )

    return matches


async def _wait(ctx: CheckContext, mark: int, predicate: Any, timeout_s: float) -> Observed | None:
    """The first message after ``mark`` (arrived or arriving) that matches."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = next((m for m in ctx.since(mark) if predicate(m)), None)
        left = deadline - time.monotonic()
        if found is not None or left <= 0:
            return found
        await asyncio.sleep(min(0.05, left))


async def check_seq(ctx: CheckContext) -> str:
    await ctx.live_birth()
    await asyncio.sleep(0.5)  # let a telemetry update or two arrive
    expected: int | None = None
    checked, gaps, last = 0, [], b""
    for message in ctx.agent_messages(0):
        data = obj(message)
        if message.retain or data is None or not isinstance(data.get("seq"), int):
            continue
        seq = data["seq"]
        if relative(ctx, message) == "status" and data.get("state") == "online" and seq == 0:
            expected = 1
            continue
        if message.payload == last:  # a QoS 1 duplicate
            continue
        if expected is not None:
            checked += 1
            if seq != expected:
                gaps.append(f"{relative(ctx, message)}: seq {seq}, expected {expected}")
        expected, last = (seq + 1) % SEQ_MODULUS, message.payload
    if gaps:
        raise CheckFailed(f"{len(gaps)} gap(s) in {checked} live messages: {gaps[:3]}")
    if checked < 2:
        raise CheckFailed(f"only {checked} live message(s) with seq seen")
    return f"{checked} live messages, seq without gaps"


async def check_rebirth(ctx: CheckContext) -> str:
    await ctx.live_birth()
    bdseq, _ = current_session(ctx)
    mark = ctx.mark()
    await ctx.call("sef.Agent", "Rebirth", [], reply=False)
    status = await _wait(ctx, mark, _online_after(ctx, mark), 5.0)
    if status is None:
        raise CheckFailed("no online status within 5 s of sef.Agent.Rebirth")
    data = obj(status) or {}
    if data.get("seq") != 0 or data.get("bdseq") != bdseq:
        raise CheckFailed(
            f"rebirth status has seq {data.get('seq')!r} bdseq {data.get('bdseq')!r}; "
            f"expected seq 0 and the same bdseq {bdseq}"
        )
    topics = {ctx.agent_topic("about")} | {
        ctx.agent_topic(f"props/{i}/{p}") for i, p, _ in declared_properties(ctx)
    }
    deadline = time.monotonic() + 3.0
    while True:
        seen = {m.topic for m in ctx.agent_messages(mark)}
        if topics <= seen or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    missing = sorted(t.rsplit("/", 2)[-1] for t in topics - seen)
    if missing:
        raise CheckFailed(f"rebirth without {missing}")
    return f"birth republished (status seq 0, bdseq {bdseq}, About, {len(topics) - 1} properties)"


async def check_stale_death(ctx: CheckContext) -> str:
    await ctx.live_birth()
    bdseq, top = current_session(ctx)
    if bdseq == 0:
        raise CheckSkipped("bdseq is 0: no lower bdseq to forge a stale death with")
    forged = f'{{"v":1,"state":"offline","bdseq":{bdseq - 1},"reason":"will"}}'.encode()
    mark = ctx.mark()
    if not await ctx.publish_retained(ctx.agent_topic("status"), forged):
        raise CheckSkipped("the broker refused the certifier's publish on the status topic (ACL)")
    repair = await _wait(ctx, mark, _online_after(ctx, mark, lambda b: b == bdseq), 5.0)
    if repair is None:
        raise CheckFailed(
            f"no online status of session {bdseq} within 5 s after a retained stale death "
            f"(bdseq {bdseq - 1}): the retained status stays offline"
        )
    seq = (obj(repair) or {}).get("seq")
    if not isinstance(seq, int) or seq <= top:
        raise CheckFailed(f"repair status has seq {seq!r}, not the next one (> {top})")
    snapshot = await ctx.retained_snapshot()
    held = snapshot.get(ctx.agent_topic("status"))
    state = (obj(held) or {}).get("state") if held is not None else None
    if state != "online":
        raise CheckFailed(f"after the repair the retained status is {state!r}")
    return f"stale death (bdseq {bdseq - 1}) repaired with online bdseq {bdseq} seq {seq}"


async def check_reconnect(ctx: CheckContext) -> str:
    await ctx.live_birth()
    mark = await ctx.reconnect_agent()  # done already if the agent ignored Rebirth
    bdseq = _session_at(ctx, mark)
    started = time.monotonic()
    back = await _wait(ctx, mark, _online_after(ctx, mark, lambda b: b != bdseq), 15.0)
    if back is None:
        raise CheckFailed(f"no new session within 15 s after a takeover of session {bdseq}")
    new = (obj(back) or {})["bdseq"]
    if new <= bdseq:
        raise CheckFailed(f"reconnected with bdseq {new}, not greater than {bdseq}")
    took = time.monotonic() - started
    return f"reconnected in {took:.1f} s with bdseq {bdseq} -> {new}"


async def check_restart(ctx: CheckContext) -> str:
    await ctx.live_birth()
    mark = await ctx.restart_agent()
    bdseq = _session_at(ctx, mark)
    started = time.monotonic()
    timeout = getattr(getattr(ctx, "settings", None), "restart_timeout_s", 60.0)
    back = await _wait(ctx, mark, _online_after(ctx, mark, lambda b: b != bdseq), timeout)
    if back is None:
        raise CheckFailed(f"no new session within {timeout:.0f} s of the restart")
    new = (obj(back) or {})["bdseq"]
    if new <= bdseq:
        raise CheckFailed(f"restarted with bdseq {new}, not greater than {bdseq}")
    return f"back {time.monotonic() - started:.1f} s after the restart, bdseq {bdseq} -> {new}"


def _session_at(ctx: CheckContext, mark: int) -> int:
    """The bdseq of the agent's session live at stream position ``mark``."""
    before = ctx.agent_messages(0)[: len(ctx.agent_messages(0)) - len(ctx.agent_messages(mark))]
    bdseq: int | None = None
    for message in before:
        data = _status(ctx, message) or {}
        number = data.get("bdseq")
        if data.get("state") == "online" and isinstance(number, int):
            bdseq = number
    if bdseq is None:
        raise CheckFailed("the agent was not online before its connection was dropped")
    return bdseq


def _will_after(ctx: CheckContext, mark: int) -> tuple[int | None, dict[str, Any] | None]:
    """(bdseq of the session live at stream position ``mark``, the first offline status
    after it)."""
    after = ctx.agent_messages(mark)
    bdseq = _session_at(ctx, mark)
    offline = next(
        (d for m in after if (d := _status(ctx, m)) is not None and d.get("state") == "offline"),
        None,
    )
    return bdseq, offline


async def check_will(ctx: CheckContext) -> str:
    await ctx.live_birth()
    seen: list[str] = []
    skipped = 0
    for how, start in (("restart", ctx.restart_agent), ("takeover", ctx.reconnect_agent)):
        try:
            mark = await start()
        except CheckSkipped as exc:
            seen.append(f"{how}: {exc}")
            skipped += 1
            continue
        bdseq, offline = _will_after(ctx, mark)
        if offline is None:
            seen.append(f"{how}: no offline status")
            continue
        if offline.get("reason") != "will":
            seen.append(f"{how}: offline status with reason {offline.get('reason')!r}")
            continue
        if offline.get("bdseq") != bdseq or offline.get("v") != 1:
            raise CheckFailed(f"will {offline} does not carry the dead session's bdseq {bdseq}")
        if "seq" in offline or "ts" in offline:
            raise CheckFailed(f"will {offline} carries seq/ts (a will is set before the session)")
        return f"{how}: the broker published the will {offline}"
    if skipped == 2:
        raise CheckSkipped("no way to drop the agent's connection: " + "; ".join(seen))
    raise CheckFailed("no will seen: " + "; ".join(seen))


async def check_redundant_status(ctx: CheckContext) -> str:
    await ctx.live_birth()
    sessions: list[str] = []
    redundant: list[str] = []
    for how, start in (("takeover", ctx.reconnect_agent), ("restart", ctx.restart_agent)):
        try:
            mark = await start()
        except CheckSkipped:
            continue
        old = _session_at(ctx, mark)
        fresh = _online_after(ctx, mark, lambda b, old=old: b != old)
        birth = await _wait(ctx, mark, fresh, 15.0)
        if birth is None:
            continue  # sessions.reconnect / sessions.restart say why
        new = (obj(birth) or {})["bdseq"]
        await asyncio.sleep(max(0.0, birth.at + 1.0 - time.monotonic()))
        repeats = [
            d.get("seq")
            for m in ctx.agent_messages(mark)
            if (d := _status(ctx, m)) is not None
            and d.get("state") == "online"
            and d.get("bdseq") == new
            and d.get("seq") != 0
            and not m.retain
            and m.at <= birth.at + 1.0  # later ones may answer a forged stale death
        ]
        sessions.append(f"{how}: session {new}")
        if repeats:
            redundant.append(f"after the {how}, session {new} repeated its online status "
                             f"(seq {repeats})")  # fmt: skip
    if redundant:
        raise CheckFailed(
            "; ".join(redundant) + ": the own status delivered with the retain flag (the "
            "previous connection's will) SHOULD be ignored"
        )
    if not sessions:
        raise CheckSkipped("no reconnection or restart observed")
    return "one online status per new session (" + "; ".join(sessions) + ")"


async def check_subscribed_before_birth(ctx: CheckContext) -> str:
    await ctx.live_birth()
    for start in (ctx.reconnect_agent, ctx.restart_agent):
        with contextlib.suppress(CheckSkipped):
            await start()
    if not ctx.birth_pings:
        raise CheckSkipped("no new session seen live (no reconnection or restart)")
    answered = []
    for bdseq, task in list(ctx.birth_pings.items()):
        reply = await task
        if reply is None:
            raise CheckFailed(
                f"a Ping sent the moment session {bdseq}'s birth status arrived had no reply "
                "within 5 s: the birth came before the broker acknowledged the subscriptions"
            )
        answered.append(str(bdseq))
    return f"a Ping sent on each new birth was answered (sessions {', '.join(answered)})"


R = Level.REQUIRED
CHECKS: list[Check] = [
    Check("sessions.seq", "seq increments by one without gaps on live messages", "§4.1", R,
          check_seq),
    Check("sessions.rebirth", "sef.Agent.Rebirth republishes the birth (same bdseq, seq 0)",
          "§4.5", R, check_rebirth),
    Check("sessions.stale_death", "a retained stale death is repaired with an online status",
          "§4.3", R, check_stale_death),
    Check("sessions.reconnect", "bdseq strictly grows across a reconnection", "§4.1", R,
          check_reconnect),
    Check("sessions.restart", "bdseq strictly grows across a process restart", "§4.1", R,
          check_restart, RESTART_CHECK_TIMEOUT_S),
    Check("sessions.will", "the will is set and fires on a dropped connection", "§4.2", R,
          check_will, RESTART_CHECK_TIMEOUT_S),
    Check("sessions.subscribed_before_birth",
          "a call sent as soon as the birth arrives is answered (birth after SUBACK)", "§4.2",
          R, check_subscribed_before_birth, RESTART_CHECK_TIMEOUT_S),
    Check("sessions.retained_status_ignored",
          "the own status delivered retained at a reconnection is not repaired", "§4.3",
          Level.RECOMMENDED, check_redundant_status, RESTART_CHECK_TIMEOUT_S),
]  # fmt: skip

"""The ``calls`` suite: how an agent answers, de-duplicates, refuses and ignores calls
(``docs/protocol.md`` §3, §5.5, §5.6, §6, §7).

The checks call ``sef.Agent.Ping`` (every agent implements it) and, when the agent
implements ``edu.pdx.powerlab.demo``, ``EnergyMethod`` where a check needs a call with an
effect (a duplicate or an expired call must not change the running event) or an int16
argument. "Nothing arrives" is concluded after :data:`NOTHING_S` seconds.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from typing import Any

from sef.certify._call_helpers import (
    AGENT,
    DEMO,
    NOTHING_S,
    REPLY_S,
    energy,
    ensure_idle,
    events_observable,
    expect_error,
    expect_ok,
    field_of,
    fresh_id,
    has_demo,
    need_demo,
    offline_since,
    ping_ok,
    render,
    replies_since,
    reply_count,
    wait_event,
)
from sef.certify._calls_dedup import duplicate
from sef.certify._model import Check, CheckContext, CheckFailed, CheckSkipped, Level

__all__ = ["CHECKS"]

UNKNOWN_INTERFACE = "org.freedesktop.DBus.Error.UnknownInterface"
UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
EXPIRED = "sef.Error.Expired"


async def known_method(ctx: CheckContext) -> str:
    """Ping -> one reply of the documented shape, QoS 1, not retained."""
    call_id = fresh_id("shape")
    mark = ctx.mark()
    reply = await ctx.call(AGENT, "Ping", [], call_id=call_id, timeout_s=REPLY_S)
    sent = f"sef.Agent.Ping() id {call_id}"
    if reply is None:
        raise CheckFailed(f"sent {sent}: no reply within {REPLY_S:g} s")
    problems = []
    if reply.get("v") != 1 or isinstance(reply.get("v"), bool):
        problems.append(f"v is {render(reply.get('v'))}, expected 1")
    if reply.get("id") != call_id:
        problems.append(f"id is {render(reply.get('id'))}, expected {call_id!r}")
    if reply.get("agent") != ctx.agent_id:
        problems.append(f"agent is {render(reply.get('agent'))}, expected {ctx.agent_id!r}")
    if reply.get("ok") is not True:
        problems.append(f"ok is {render(reply.get('ok'))}, expected true")
    result = reply.get("result")
    if not isinstance(result, list):
        problems.append(f"result is {render(result)}, expected an array")
    elif len(result) != 1 or not _is_double(result[0]):
        problems.append(f"result is {render(result)}, expected [now] (one number, 'd')")
    if not _is_number(reply.get("ts")):
        problems.append(f"ts is {render(reply.get('ts'))}, expected a number")
    observed = replies_since(ctx, mark, call_id)
    if observed:
        if observed[0].retain:
            problems.append("the reply was published retained")
        if observed[0].qos != 1:
            problems.append(f"the reply arrived with QoS {observed[0].qos}, expected 1")
    if problems:
        raise CheckFailed(f"sent {sent}, got {render(reply)}: {'; '.join(problems)}")
    return f"sent {sent} -> {render(reply)}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_double(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value)


async def unknown_keys(ctx: CheckContext) -> str:
    """Keys a call has beyond §5.5's are ignored: the call is answered as usual."""
    extra = {"x_certify": {"nested": [1, 2]}, "priority": "high"}
    sent = f"sef.Agent.Ping() with unknown keys {render(extra)}"
    expect_ok(sent, await ctx.call(AGENT, "Ping", [], extra=extra, timeout_s=REPLY_S))
    return f"{sent} -> ok"


async def noreply_method_answered(ctx: CheckContext) -> str:
    """A method annotated NoReply (sef.Agent.Rebirth) called with reply_to is answered
    ok with an empty result: reply_to alone decides."""
    reply = await ctx.call(AGENT, "Rebirth", [], timeout_s=REPLY_S)
    sent = "sef.Agent.Rebirth() (annotated NoReply) with reply_to"
    expect_ok(sent, reply)
    assert reply is not None
    if reply.get("result") != []:
        raise CheckFailed(f"{sent}: ok, but result {render(reply.get('result'))}, expected []")
    return f"{sent} -> {render(reply)}"


async def no_reply_wanted(ctx: CheckContext) -> str:
    """A call without reply_to is executed and not answered."""
    call_id = fresh_id("noreply")
    if events_observable(ctx):
        await ensure_idle(ctx)
        mark = ctx.mark()
        await ctx.call(DEMO, "EnergyMethod", [[["charge", 1, 0]]], call_id=call_id, reply=False)
        if await wait_event(ctx, mark, "charge") is None:
            raise CheckFailed(
                f"EnergyMethod([[charge,1,0]]) without reply_to (id {call_id}) was not "
                f"executed: no Telemetry with Event charge within {REPLY_S:g} s"
            )
        await asyncio.sleep(0.5)
        sent, effect = "EnergyMethod([[charge,1,0]])", "executed (Telemetry Event charge), "
        expect_ok("EnergyMethod([[idle,0,0]])", await energy(ctx, [["idle", 0, 0]]))
    else:
        mark = ctx.mark()
        await ctx.call(AGENT, "Ping", [], call_id=call_id, reply=False)
        await asyncio.sleep(NOTHING_S)
        sent, effect = "sef.Agent.Ping()", ""
    if count := await reply_count(ctx, mark, call_id):
        raise CheckFailed(f"{sent} without reply_to (id {call_id}) was answered {count} time(s)")
    return f"{sent} without reply_to: {effect}no reply"


async def expired(ctx: CheckContext) -> str:
    """A call whose exp is past -> not executed, answered sef.Error.Expired."""
    if events_observable(ctx):
        await ensure_idle(ctx)
        mark = ctx.mark()
        reply = await energy(ctx, [["charge", 1, 0]], exp_in_s=-60.0)
        evidence = expect_error("EnergyMethod([charge,1,0]) with exp 60 s ago", reply, EXPIRED)
        await asyncio.sleep(0.5)
        if await wait_event(ctx, mark, "charge", timeout_s=0.0) is not None:
            raise CheckFailed(f"{evidence}, but the expired charge was executed (Telemetry)")
        return f"{evidence}; Telemetry still idle"
    reply = await ctx.call(AGENT, "Ping", [], exp_in_s=-60.0, timeout_s=REPLY_S)
    return expect_error("sef.Agent.Ping() with exp 60 s ago", reply, EXPIRED)


async def unknown_interface(ctx: CheckContext) -> str:
    """A call to an interface the agent lacks -> UnknownInterface."""
    interface = "com.example.certify.NoSuchInterface"
    reply = await ctx.call(interface, "Ping", [], timeout_s=REPLY_S)
    return expect_error(f"{interface}.Ping()", reply, UNKNOWN_INTERFACE)


async def unknown_method(ctx: CheckContext) -> str:
    """A call to a method sef.Agent lacks -> UnknownMethod."""
    reply = await ctx.call(AGENT, "NoSuchMethod", [], timeout_s=REPLY_S)
    return expect_error("sef.Agent.NoSuchMethod()", reply, UNKNOWN_METHOD)


async def wrong_args(ctx: CheckContext) -> str:
    """Arguments that do not fit the in-signature -> InvalidArgs."""
    evidence = [
        expect_error(
            "sef.Agent.Ping(1) (Ping takes no argument)",
            await ctx.call(AGENT, "Ping", [1], timeout_s=REPLY_S),
            INVALID_ARGS,
        )
    ]
    if has_demo(ctx):
        for label, cmds in (
            ('[[charge,"4",10]] (string for n)', [["charge", "4", 10]]),
            ("[[charge,4.5,10]] (4.5 for n)", [["charge", 4.5, 10]]),
            ("[[charge,4]] (struct of 2 for (snn))", [["charge", 4]]),
            ('{"charge":4} (object for a(snn))', {"charge": 4}),
        ):
            reply = await energy(ctx, cmds)
            evidence.append(expect_error(f"EnergyMethod({label})", reply, INVALID_ARGS))
    return "; ".join(evidence)


async def int16_range(ctx: CheckContext) -> str:
    """An int16 argument out of -32768..32767 -> InvalidArgs, the message starting with
    the path of the bad value (§7.2)."""
    need_demo(ctx)
    evidence = []
    for rate, duration, path in ((40000, 10, 1), (-40000, 10, 1), (32768, 10, 1), (1, 32768, 2)):
        reply = await energy(ctx, [["charge", rate, duration]])
        sent = f"EnergyMethod([[charge,{rate},{duration}]])"
        evidence.append(expect_error(sent, reply, INVALID_ARGS, path=f"cmds[0][{path}]"))
    return "; ".join(evidence)


async def group_calls(ctx: CheckContext) -> str:
    """A call on each group the About declares reaches the agent (it answers)."""
    groups = (ctx.about or {}).get("groups") or []
    if not groups:
        raise CheckSkipped("the About declares no groups")
    evidence = []
    for group in groups:
        call_id = fresh_id("group")
        reply = await ctx.call(AGENT, "Ping", [], group=group, call_id=call_id, timeout_s=REPLY_S)
        if reply is None:
            raise CheckFailed(f"sef.Agent.Ping() on group {group!r}: no reply in {REPLY_S:g} s")
        if reply.get("ok") is not True or reply.get("agent") != ctx.agent_id:
            raise CheckFailed(f"sef.Agent.Ping() on group {group!r}: got {render(reply)}")
        evidence.append(f"group {group!r} -> ok from {ctx.agent_id}")
    return "; ".join(evidence)


async def not_addressed(ctx: CheckContext) -> str:
    """Calls to another agent id and to a group the agent is not in are ignored."""
    suffix = uuid.uuid4().hex[:8]
    other_agent = f"certify-other-{suffix}"
    other_group = f"certify-nogroup-{suffix}"
    if other_group in ((ctx.about or {}).get("groups") or []):  # pragma: no cover
        raise CheckSkipped(f"the agent declares group {other_group!r}")
    mark = ctx.mark()
    to_agent, to_group = await asyncio.gather(
        ctx.call(AGENT, "Ping", [], target=other_agent, timeout_s=NOTHING_S),
        ctx.call(AGENT, "Ping", [], group=other_group, timeout_s=NOTHING_S),
    )
    answered = [
        f"{where}: {render(reply)}"
        for where, reply in ((f"agent {other_agent}", to_agent), (f"group {other_group}", to_group))
        if reply is not None
    ]
    ours = [
        m
        for m in ctx.since(mark)
        if m.topic == ctx.reply_topic and field_of(m, "agent") == ctx.agent_id
    ]
    if answered or ours:
        raise CheckFailed(
            "calls not addressed to the agent were answered: "
            + "; ".join(answered or [render(m.payload) for m in ours])
        )
    return (
        f"sef.Agent.Ping() to agent {other_agent!r} and to group {other_group!r}: "
        f"no reply within {NOTHING_S:g} s"
    )


BAD_REPLY_TO = ("clients/{x}/notreply", "clients/+/reply", "clients/{x}/reply/#")
"""Invalid ``reply_to`` values, below ``{root}/`` (``{x}``: a fresh client id)."""


async def reply_to_invalid(ctx: CheckContext) -> str:
    """A call with an invalid reply_to is not executed, nothing is published anywhere for
    it, and the agent stays connected."""
    client = f"certify-x-{uuid.uuid4().hex[:8]}"
    # only this client's subtree: an overlapping subscription with the certifier's own reply
    # topic would make the broker deliver its replies twice
    await ctx.subscribe(ctx.topic(f"clients/{client}/#"))
    demo = events_observable(ctx)
    if demo:
        await ensure_idle(ctx)
    mark = ctx.mark()
    sent = []
    for pattern in BAD_REPLY_TO:
        reply_to = ctx.topic(pattern.format(x=client))
        call_id = fresh_id("replyto")
        sent.append((reply_to, call_id))
        if demo:
            await ctx.call(
                DEMO, "EnergyMethod", [[["charge", 1, 0]]], call_id=call_id,
                extra={"reply_to": reply_to}, timeout_s=0.0,
            )  # fmt: skip
        else:
            await ctx.call(
                AGENT, "Ping", [], call_id=call_id, extra={"reply_to": reply_to}, timeout_s=0.0
            )
    await asyncio.sleep(NOTHING_S)
    ids = {call_id for _, call_id in sent}
    stray = [
        m
        for m in ctx.since(mark)
        if m.topic.startswith(ctx.topic("clients/")) and field_of(m, "id") in ids
    ]
    if stray:
        raise CheckFailed(
            "replies to calls with an invalid reply_to were published: "
            + "; ".join(f"{m.topic}: {render(m.payload)}" for m in stray)
        )
    if (gone := offline_since(ctx, mark)) is not None:
        raise CheckFailed(
            f"after calls with reply_to {', '.join(t for t, _ in sent)} the agent went offline: "
            f"{render(gone.payload)}"
        )
    method = "EnergyMethod([charge,1,0])" if demo else "sef.Agent.Ping()"
    evidence = f"{method} with reply_to {', '.join(repr(t) for t, _ in sent)}: nothing published"
    if demo:
        if await wait_event(ctx, mark, "charge", timeout_s=0.0) is not None:
            raise CheckFailed(f"{evidence}, but the charge was executed (Telemetry)")
        evidence += ", not executed (still idle)"
    return f"{evidence}, still online; {await ping_ok(ctx)}"


CHECKS: list[Check] = [
    Check(
        "calls.known_method",
        "a known method (sef.Agent.Ping) is answered with the documented reply",
        "§5.6, §7",
        Level.REQUIRED,
        known_method,
    ),
    Check(
        "calls.unknown_keys",
        "unknown keys in a call are ignored",
        "§5",
        Level.REQUIRED,
        unknown_keys,
    ),
    Check(
        "calls.no_reply_wanted",
        "a call without reply_to is executed and not answered",
        "§5.5, §6 step 7",
        Level.REQUIRED,
        no_reply_wanted,
    ),
    Check(
        "calls.noreply_method_answered",
        "a NoReply method called with reply_to is answered",
        "§6 step 7, §7.1",
        Level.REQUIRED,
        noreply_method_answered,
    ),
    Check(
        "calls.duplicate",
        "a duplicate call (same sender and id) is executed once",
        "§6 step 2",
        Level.REQUIRED,
        duplicate,
    ),
    Check(
        "calls.expired",
        "an expired call is not executed and answered sef.Error.Expired",
        "§5.5, §6 step 3",
        Level.REQUIRED,
        expired,
    ),
    Check(
        "calls.unknown_interface",
        "a call to an unknown interface is answered UnknownInterface",
        "§6 step 4",
        Level.REQUIRED,
        unknown_interface,
    ),
    Check(
        "calls.unknown_method",
        "a call to an unknown method is answered UnknownMethod",
        "§6 step 4",
        Level.REQUIRED,
        unknown_method,
    ),
    Check(
        "calls.wrong_args",
        "arguments that do not fit the in-signature are answered InvalidArgs",
        "§6 step 5, §8",
        Level.REQUIRED,
        wrong_args,
    ),
    Check(
        "calls.int16_range",
        "an int16 argument out of range is answered InvalidArgs",
        "§6 step 5, §8",
        Level.REQUIRED,
        int16_range,
    ),
    Check(
        "calls.group",
        "a call reaches the agent through every group its About declares",
        "§3",
        Level.REQUIRED,
        group_calls,
    ),
    Check(
        "calls.not_addressed",
        "calls to another agent id or a group the agent is not in are ignored",
        "§3",
        Level.REQUIRED,
        not_addressed,
    ),
    Check(
        "calls.reply_to_invalid",
        "a call with an invalid reply_to is not executed and nothing is published for it",
        "§6 step 1",
        Level.REQUIRED,
        reply_to_invalid,
    ),
]

"""The ``demo`` suite: ``edu.pdx.powerlab.demo`` as ``docs/protocol.md`` §7.2 defines it
(``EnergyMethod(cmds: a(snn))``: commands charge, discharge, idle, shed, endshed; rate
and duration integers 0…32767; duration 0 = until the next command, last event only; a new
sequence replaces the running one; ``Telemetry`` carries ``TimeStamp``).

Every check SKIPs when the agent does not implement the interface. The checks that watch
the running event read Telemetry's ``Event`` key and SKIP when the agent does not publish
it. Commands are sent with small rates (1 kW) and end with an open-ended ``idle``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sef.agents._nameplate import nameplate_problems
from sef.certify._birth import parsed_interface
from sef.certify._call_helpers import (
    DEMO,
    REPLY_S,
    energy,
    events_since,
    expect_error,
    expect_ok,
    need_demo,
    need_event_key,
    render,
    wait_event,
)
from sef.certify._model import Check, CheckContext, CheckFailed, CheckSkipped, Level, Observed
from sef.interface import TypeMismatch, from_json

__all__ = ["CHECKS"]

SECTION = "§7.2"
"""Where the command and telemetry rules of ``edu.pdx.powerlab.demo`` are."""
INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
COMMANDS = ("charge", "discharge", "idle", "shed", "endshed")
MAX_EVENTS = 256


async def commands(ctx: CheckContext) -> str:
    """Each of the five commands is accepted (open-ended, 1 kW), in any case and with
    blanks around it, then idle."""
    need_demo(ctx)
    accepted = []
    for command in (*COMMANDS, " CHARGE ", "Idle"):
        sent = f"EnergyMethod([[{command!r},1,0]])"
        expect_ok(sent, await energy(ctx, [[command, 1, 0]]))
        accepted.append(repr(command))
    return f"EnergyMethod([[cmd,1,0]]) accepted (ok) for {', '.join(accepted)}"


async def bounds_accepted(ctx: CheckContext) -> str:
    """Rates and durations at the ends of 0..32767 and 1 and 256 events are accepted."""
    need_demo(ctx)
    cases: list[tuple[str, list[Any]]] = [
        (
            "[[idle,0,1],[idle,32767,32767],[idle,0,0]]",
            [["idle", 0, 1], ["idle", 32767, 32767], ["idle", 0, 0]],
        ),
        ("[[idle,0,0]] (1 event)", [["idle", 0, 0]]),
        (
            f"{MAX_EVENTS} events [[idle,0,60]]*{MAX_EVENTS - 1}+[[idle,0,0]]",
            [["idle", 0, 60]] * (MAX_EVENTS - 1) + [["idle", 0, 0]],
        ),
        ("[[idle,0,0]]", [["idle", 0, 0]]),
    ]  # fmt: skip
    for label, cmds in cases:
        expect_ok(f"EnergyMethod({label})", await energy(ctx, cmds))
    return "accepted: " + "; ".join(label for label, _ in cases)


REFUSED: tuple[tuple[str, list[Any], str], ...] = (
    ("[[charge,-1,10]] (negative rate)", [["charge", -1, 10]], "cmds[0][1]"),
    ("[[charge,1,-1]] (negative duration)", [["charge", 1, -1]], "cmds[0][2]"),
    ("[[explode,1,10]] (unknown command)", [["explode", 1, 10]], "cmds[0][0]"),
    (
        "[[charge,1,0],[idle,0,10]] (open-ended not last)",
        [["charge", 1, 0], ["idle", 0, 10]],
        "cmds[0][2]",
    ),
    ("[] (no event)", [], "cmds"),
    (
        f"{MAX_EVENTS + 1} events [[idle,0,60]]*{MAX_EVENTS}+[[idle,0,0]]",
        [["idle", 0, 60]] * MAX_EVENTS + [["idle", 0, 0]],
        "cmds",
    ),
)
"""(label, cmds, the path the error message must start with)."""


async def bounds_refused(ctx: CheckContext) -> str:
    """Negative rates and durations, unknown commands, an open-ended event that is not last,
    no event and 257 events are refused InvalidArgs with the path of the bad value first in
    the message, and change nothing (values beyond int16 are ``calls.int16_range``'s)."""
    need_demo(ctx)
    expect_ok("EnergyMethod([[idle,0,0]])", await energy(ctx, [["idle", 0, 0]]))
    mark = ctx.mark()
    evidence = []
    for label, cmds, path in REFUSED:
        reply = await energy(ctx, cmds)
        evidence.append(expect_error(f"EnergyMethod({label})", reply, INVALID_ARGS, path=path))
    changed = [event for event in events_since(ctx, mark) if event != "idle"]
    if changed:
        raise CheckFailed(f"{'; '.join(evidence)}; but the running event changed to {changed}")
    return "; ".join(evidence)


async def replaces(ctx: CheckContext) -> str:
    """A new sequence replaces the running one: the rest of the old one never runs."""
    need_demo(ctx)
    need_event_key(ctx)
    mark = ctx.mark()
    first = "[[charge,1,2],[discharge,1,0]]"
    expect_ok(f"EnergyMethod({first})", await energy(ctx, [["charge", 1, 2], ["discharge", 1, 0]]))
    if await wait_event(ctx, mark, "charge") is None:
        raise CheckFailed(f"EnergyMethod({first}) accepted but no Telemetry with Event charge")
    expect_ok("EnergyMethod([[shed,1,0]])", await energy(ctx, [["shed", 1, 0]]))
    if await wait_event(ctx, mark, "shed") is None:
        raise CheckFailed("EnergyMethod([[shed,1,0]]) accepted but no Telemetry with Event shed")
    await asyncio.sleep(3.0)  # the replaced sequence would have started discharge at 2 s
    seen = events_since(ctx, mark)
    after_shed = seen[seen.index("shed") :]
    if "discharge" in after_shed:
        raise CheckFailed(
            f"{first} then [[shed,1,0]]: the replaced sequence still ran discharge "
            f"(Telemetry Event: {' -> '.join(seen)})"
        )
    expect_ok("EnergyMethod([[idle,0,0]])", await energy(ctx, [["idle", 0, 0]]))
    return (
        f"{first}, once charging [[shed,1,0]]: Telemetry Event {' -> '.join(seen)}, "
        "no discharge within 3 s"
    )


async def open_ended(ctx: CheckContext) -> str:
    """An open-ended event lasts until the next command, which ends it."""
    need_demo(ctx)
    need_event_key(ctx)
    mark = ctx.mark()
    expect_ok("EnergyMethod([[charge,1,0]])", await energy(ctx, [["charge", 1, 0]]))
    if await wait_event(ctx, mark, "charge") is None:
        raise CheckFailed(
            "EnergyMethod([[charge,1,0]]) accepted but no Telemetry with Event charge"
        )
    await asyncio.sleep(2.0)
    seen = events_since(ctx, mark)
    if seen and seen[-1] != "charge":
        raise CheckFailed(
            f"open-ended charge did not last until the next command: Event {' -> '.join(seen)}"
        )
    mark2 = ctx.mark()
    expect_ok("EnergyMethod([[discharge,1,0]])", await energy(ctx, [["discharge", 1, 0]]))
    if await wait_event(ctx, mark2, "discharge") is None:
        raise CheckFailed(
            "open-ended charge, then EnergyMethod([[discharge,1,0]]) accepted: no Telemetry "
            f"with Event discharge (seen: {' -> '.join(events_since(ctx, mark))})"
        )
    expect_ok("EnergyMethod([[idle,0,0]])", await energy(ctx, [["idle", 0, 0]]))
    return (
        "EnergyMethod([[charge,1,0]]): Event charge for 2 s; then [[discharge,1,0]]: "
        f"Event {' -> '.join(events_since(ctx, mark))}"
    )


def _timestamp(value: Any) -> int | None:
    """``TimeStamp`` of a Telemetry value as ``u`` (``["u", n]`` or a bare integer)."""
    if not isinstance(value, dict):
        return None
    stamp = value.get("TimeStamp")
    if isinstance(stamp, list) and len(stamp) == 2 and stamp[0] == "u":
        stamp = stamp[1]
    if isinstance(stamp, int) and not isinstance(stamp, bool) and 0 <= stamp < 2**32:
        return stamp
    return None


async def telemetry_timestamp(ctx: CheckContext) -> str:
    """The Telemetry property is an a{sv} with TimeStamp (u, Unix s)."""
    need_demo(ctx)
    try:
        value = ctx.property_value(DEMO, "Telemetry")
    except KeyError:
        raise CheckFailed(f"no {DEMO}.Telemetry property was published") from None
    stamp = _timestamp(value)
    if stamp is None:
        raise CheckFailed(f"Telemetry has no TimeStamp of type u: {render(value)}")
    return f"Telemetry TimeStamp {stamp} ({stamp - time.time():+.0f} s from the certifier's clock)"


async def telemetry_changes(ctx: CheckContext) -> str:
    """After a command the agent publishes a new, different Telemetry value."""
    need_demo(ctx)
    topic = ctx.agent_topic(f"props/{DEMO}/Telemetry")
    try:
        before = ctx.property_value(DEMO, "Telemetry")
    except KeyError:
        before = None
    mark = ctx.mark()
    expect_ok("EnergyMethod([[charge,1,0]])", await energy(ctx, [["charge", 1, 0]]))

    def changed(message: Observed) -> bool:
        if message.topic != topic:
            return False
        try:
            obj = message.json()
        except ValueError:
            return False
        return isinstance(obj, dict) and obj.get("value") != before

    update = next((m for m in ctx.since(mark) if changed(m)), None)
    if update is None:
        update = await ctx.wait_message(changed, REPLY_S)
    expect_ok("EnergyMethod([[idle,0,0]])", await energy(ctx, [["idle", 0, 0]]))
    if update is None:
        raise CheckFailed(
            f"EnergyMethod([[charge,1,0]]) accepted: no new Telemetry within {REPLY_S:g} s "
            f"(last: {render(before)})"
        )
    value = update.json().get("value")
    return f"EnergyMethod([[charge,1,0]]) -> Telemetry {render(value, 200)}"


async def nameplate(ctx: CheckContext) -> str:
    """The ``Nameplate`` property is published and well formed: a known ``DeviceType`` with
    every key of its type, typed and in range (``docs/interfaces.md``, Nameplate keys)."""
    need_demo(ctx)
    iface = parsed_interface(ctx, DEMO)
    if iface is not None and "Nameplate" not in iface.properties:
        raise CheckSkipped(f"the agent's {DEMO} XML predates the Nameplate property")
    try:
        value = ctx.property_value(DEMO, "Nameplate")
    except KeyError:
        raise CheckFailed(f"no {DEMO}.Nameplate property was published") from None
    try:
        parsed = from_json("a{sv}", value)
    except TypeMismatch as exc:
        raise CheckFailed(f"Nameplate is not an a{{sv}}: {exc}") from None
    assert isinstance(parsed, dict)
    problems = nameplate_problems(parsed)
    if problems:
        raise CheckFailed(f"Nameplate {render(value, 200)}: {'; '.join(problems[:4])}")
    return f"Nameplate {render(value, 200)}"


async def applied(ctx: CheckContext) -> str:
    """An accepted EnergyMethod reply says whether the device applied the command
    (``applied``; with ``false`` a ``fault`` object naming why)."""
    need_demo(ctx)
    sent = "EnergyMethod([[idle,0,0]])"
    reply = expect_ok(sent, await energy(ctx, [["idle", 0, 0]]))
    value = reply.get("applied")
    if value is None:
        raise CheckFailed(
            f"{sent} -> {render(reply)}: no 'applied' key (an agent that knows whether its "
            "device applied the command SHOULD say so)"
        )
    if not isinstance(value, bool):
        raise CheckFailed(f"{sent} -> {render(reply)}: 'applied' is not a boolean")
    if value:
        return f"{sent} -> applied: true"
    fault = reply.get("fault")
    if not (
        isinstance(fault, dict)
        and isinstance(fault.get("name"), str)
        and isinstance(fault.get("message"), str)
    ):
        raise CheckFailed(
            f"{sent} -> {render(reply)}: applied false without a fault object {{name, message}}"
        )
    return f"{sent} -> applied: false, fault {render(fault)}"


CHECKS: list[Check] = [
    Check(
        "demo.commands",
        "EnergyMethod accepts each command: charge, discharge, idle, shed, endshed",
        SECTION,
        Level.REQUIRED,
        commands,
    ),
    Check(
        "demo.bounds_accepted",
        f"rate and duration 0..32767 and 1..{MAX_EVENTS} events are accepted",
        SECTION,
        Level.REQUIRED,
        bounds_accepted,
    ),
    Check(
        "demo.bounds_refused",
        "bad sequences (negative, unknown command, open-ended not last, 0 or 257 events) refused",
        SECTION,
        Level.REQUIRED,
        bounds_refused,
    ),
    Check(
        "demo.replaces",
        "a new sequence replaces the running one",
        SECTION,
        Level.REQUIRED,
        replaces,
    ),
    Check(
        "demo.open_ended",
        "an open-ended event lasts until the next command, which ends it",
        SECTION,
        Level.REQUIRED,
        open_ended,
    ),
    Check(
        "demo.applied",
        "an accepted command's reply says whether the device applied it",
        "§5.6",
        Level.RECOMMENDED,
        applied,
    ),
    Check(
        "demo.telemetry_timestamp",
        "Telemetry carries TimeStamp (u, Unix s)",
        SECTION,
        Level.REQUIRED,
        telemetry_timestamp,
    ),
    Check(
        "demo.nameplate",
        "Nameplate is published with the keys of its DeviceType (a SHOULD: recommended level)",
        "§7.2",
        Level.RECOMMENDED,
        nameplate,
    ),
    Check(
        "demo.telemetry_changes",
        "Telemetry is published anew after a command",
        SECTION,
        Level.REQUIRED,
        telemetry_changes,
    ),
]

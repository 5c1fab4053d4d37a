"""Helpers shared by the ``calls``, ``demo`` and ``robustness`` checks: reading replies,
rendering evidence, and the questions several checks ask (is the agent still connected and
answering? which event is it running?).

Every wait is bounded; times are real seconds.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from sef.certify._model import CheckContext, CheckFailed, CheckSkipped, Observed

__all__ = [
    "AGENT",
    "DEMO",
    "NOTHING_S",
    "current_event",
    "energy",
    "ensure_idle",
    "error_name",
    "events_observable",
    "expect_error",
    "expect_ok",
    "field_of",
    "fresh_id",
    "has_demo",
    "need_demo",
    "offline_since",
    "ping_ok",
    "render",
    "replies_since",
    "reply_count",
    "wait_event",
    "wait_online",
]

AGENT = "sef.Agent"
DEMO = "edu.pdx.powerlab.demo"
NOTHING_S = 1.5
"""How long a check waits to conclude that nothing arrives (no reply, no publish), s."""
REPLY_S = 5.0
"""How long a check waits for a reply that must come, s."""


def fresh_id(prefix: str) -> str:
    """A call id no earlier call of this run used: ``certify-<prefix>-<8 hex>``."""
    return f"certify-{prefix}-{uuid.uuid4().hex[:8]}"


def render(value: Any, limit: int = 240) -> str:
    """Compact JSON of ``value`` (bytes shown as text when UTF-8), cut to ``limit`` chars."""
    if isinstance(value, bytes):
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            text = repr(value[:limit])
    else:
        try:
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}... ({len(text)} chars)"


def error_name(reply: dict[str, Any] | None) -> str | None:
    """The error name of an ``ok: false`` reply (``None`` for an ok or shapeless reply)."""
    if reply is None or reply.get("ok") is not False:
        return None
    error = reply.get("error")
    if isinstance(error, dict) and isinstance(error.get("name"), str):
        return str(error["name"])
    return None


def expect_error(
    sent: str, reply: dict[str, Any] | None, name: str, *, path: str | None = None
) -> str:
    """Evidence when ``reply`` is an error reply named ``name`` (and, with ``path``, whose
    message starts with it: the path of the offending value), else :class:`CheckFailed`."""
    if reply is None:
        raise CheckFailed(f"sent {sent}: no reply (expected error {name})")
    got = error_name(reply)
    if got != name:
        raise CheckFailed(f"sent {sent}: expected error {name}, got {render(reply)}")
    if path is not None:
        message = reply["error"].get("message")
        if not isinstance(message, str) or not message.startswith(path):
            raise CheckFailed(
                f"sent {sent}: {name} as expected, but its message {render(message)} does "
                f"not start with the path of the bad value, {path!r}"
            )
    return f"{sent} -> {name}"


def expect_ok(sent: str, reply: dict[str, Any] | None) -> dict[str, Any]:
    """``reply`` when it says ``ok: true``, else :class:`CheckFailed`."""
    if reply is None:
        raise CheckFailed(f"sent {sent}: no reply within {REPLY_S:g} s (expected ok)")
    if reply.get("ok") is not True:
        raise CheckFailed(f"sent {sent}: expected ok, got {render(reply)}")
    return reply


def replies_since(ctx: CheckContext, mark: int, call_id: str) -> list[Observed]:
    """The messages on the certifier's reply topic since ``mark`` whose ``id`` is
    ``call_id`` (unreadable ones are skipped)."""
    found = []
    for message in ctx.since(mark):
        if message.topic != ctx.reply_topic:
            continue
        try:
            obj = message.json()
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("id") == call_id:
            found.append(message)
    return found


def offline_since(ctx: CheckContext, mark: int) -> Observed | None:
    """The first offline status of the agent published since ``mark`` (a will or a
    shutdown: the agent lost or dropped its connection), else ``None``."""
    status_topic = ctx.agent_topic("status")
    for message in ctx.since(mark):
        if message.topic != status_topic or not message.payload:
            continue
        try:
            obj = message.json()
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("state") == "offline":
            return message
    return None


async def reply_count(ctx: CheckContext, mark: int, call_id: str) -> int:
    """How many replies with id ``call_id`` arrived since ``mark``: the larger of the
    replies seen on the reply topic (version 1) and of those the certifier took (signed
    replies, verified); ``call_id`` must be fresh (unused before ``mark``)."""
    taken = await ctx.replies(call_id, 0.0)
    return max(len(replies_since(ctx, mark, call_id)), len(taken))


def _state(message: Observed) -> str | None:
    try:
        obj = message.json()
    except ValueError:
        return None
    return obj.get("state") if isinstance(obj, dict) else None


async def wait_online(ctx: CheckContext, timeout_s: float = 10.0) -> None:
    """Return once the agent's last status says online (at once when it does: an earlier
    check may have made it reconnect); :class:`CheckFailed` after ``timeout_s``."""
    status_topic = ctx.agent_topic("status")
    ctx.mark()  # wait_message below also sees a status arriving from now on
    last = None
    for message in ctx.since(0):
        if message.topic == status_topic and message.payload:
            last = _state(message)
    if last != "offline":
        return
    back = await ctx.wait_message(
        lambda m: m.topic == status_topic and bool(m.payload) and _state(m) == "online",
        timeout_s,
    )
    if back is None:
        raise CheckFailed(f"the agent is offline and did not come back within {timeout_s:g} s")


async def ping_ok(ctx: CheckContext, *, timeout_s: float = REPLY_S) -> str:
    """Call ``sef.Agent.Ping``; evidence when it is answered ``ok``, else
    :class:`CheckFailed`."""
    call_id = fresh_id("ping")
    reply = await ctx.call(AGENT, "Ping", [], call_id=call_id, timeout_s=timeout_s)
    if reply is None:
        raise CheckFailed(f"a valid Ping (id {call_id}) got no reply within {timeout_s:g} s")
    if reply.get("ok") is not True:
        raise CheckFailed(f"a valid Ping (id {call_id}) was refused: {render(reply)}")
    return f"a valid Ping was then answered ok ({render(reply.get('result'))})"


# -- edu.pdx.powerlab.demo ----------------------------------------------------------------


def field_of(message: Observed, key: str) -> Any:
    """``key`` of the JSON object ``message`` carries (``None`` when absent or unreadable)."""
    try:
        obj = message.json()
    except ValueError:
        return None
    return obj.get(key) if isinstance(obj, dict) else None


def has_demo(ctx: CheckContext) -> bool:
    """Whether the agent implements ``edu.pdx.powerlab.demo``."""
    try:
        need_demo(ctx)
    except CheckSkipped:
        return False
    return True


def events_observable(ctx: CheckContext) -> bool:
    """Whether the agent implements ``edu.pdx.powerlab.demo`` and its Telemetry tells the
    running command (``Event``): a call's effect can then be seen."""
    try:
        need_demo(ctx)
        need_event_key(ctx)
    except CheckSkipped:
        return False
    return True


def need_demo(ctx: CheckContext) -> None:
    """:class:`CheckSkipped` unless the agent implements ``edu.pdx.powerlab.demo``."""
    declared = {
        item.get("name")
        for item in (ctx.about or {}).get("interfaces", [])
        if isinstance(item, dict)
    }
    if DEMO not in ctx.interfaces and DEMO not in declared:
        raise CheckSkipped(f"the agent does not implement {DEMO}")


async def energy(
    ctx: CheckContext,
    cmds: Any,
    *,
    call_id: str | None = None,
    exp_in_s: float = 30.0,
    timeout_s: float = REPLY_S,
) -> dict[str, Any] | None:
    """Call ``EnergyMethod(cmds)`` (``cmds`` as JSON, possibly ill-typed on purpose) and
    return the reply (``None``: none within ``timeout_s`` s)."""
    return await ctx.call(
        DEMO,
        "EnergyMethod",
        [cmds],
        call_id=call_id or fresh_id("energy"),
        exp_in_s=exp_in_s,
        timeout_s=timeout_s,
    )


def _telemetry_event(value: Any) -> str | None:
    """The ``Event`` key of a Telemetry value (``["s", "charge"]`` or a bare string)."""
    if not isinstance(value, dict):
        return None
    event = value.get("Event")
    if isinstance(event, list) and len(event) == 2 and isinstance(event[1], str):
        return event[1]
    return event if isinstance(event, str) else None


def current_event(ctx: CheckContext) -> str | None:
    """The running command as the last Telemetry says (its ``Event`` key), or ``None``."""
    try:
        return _telemetry_event(ctx.property_value(DEMO, "Telemetry"))
    except KeyError:
        return None


def need_event_key(ctx: CheckContext) -> None:
    """:class:`CheckSkipped` when the agent's Telemetry has no ``Event`` key: the running
    command is then not observable from outside."""
    try:
        value = ctx.property_value(DEMO, "Telemetry")
    except KeyError:
        raise CheckSkipped(
            "the agent published no Telemetry: the running event is not observable"
        ) from None
    if _telemetry_event(value) is None:
        raise CheckSkipped(
            "the agent's Telemetry has no 'Event' key: the running event is not observable"
        )


async def wait_event(
    ctx: CheckContext, mark: int, command: str, timeout_s: float = REPLY_S
) -> Observed | None:
    """The first Telemetry update since ``mark`` whose ``Event`` is ``command``."""
    topic = ctx.agent_topic(f"props/{DEMO}/Telemetry")

    def matches(message: Observed) -> bool:
        if message.topic != topic:
            return False
        try:
            obj = message.json()
        except ValueError:
            return False
        return isinstance(obj, dict) and _telemetry_event(obj.get("value")) == command

    for message in ctx.since(mark):
        if matches(message):
            return message
    return await ctx.wait_message(matches, timeout_s)


async def ensure_idle(ctx: CheckContext) -> None:
    """Command ``[[idle,0,0]]`` and return once Telemetry says idle (at once when it
    already did: an unchanged value need not be published again)."""
    mark = ctx.mark()
    expect_ok("EnergyMethod([[idle,0,0]])", await energy(ctx, [["idle", 0, 0]]))
    if current_event(ctx) == "idle":
        return
    if await wait_event(ctx, mark, "idle") is None:
        raise CheckFailed(
            f"EnergyMethod([[idle,0,0]]) accepted: no Telemetry with Event idle in {REPLY_S:g} s"
        )


def events_since(ctx: CheckContext, mark: int) -> list[str]:
    """The ``Event`` of every Telemetry update since ``mark``, in order (repeats kept)."""
    topic = ctx.agent_topic(f"props/{DEMO}/Telemetry")
    seen = []
    for message in ctx.since(mark):
        if message.topic != topic:
            continue
        try:
            obj = message.json()
        except ValueError:
            continue
        event = _telemetry_event(obj.get("value")) if isinstance(obj, dict) else None
        if event is not None:
            seen.append(event)
    return seen


async def settle(seconds: float) -> None:
    """Let ``seconds`` pass (real time)."""
    await asyncio.sleep(seconds)

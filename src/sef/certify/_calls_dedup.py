"""The ``calls.duplicate`` check (``docs/protocol.md`` §6 step 2): a call is executed at
most once per (``sender``, ``id``), and the de-duplication window holds exactly the calls
that passed step 1.

Sub-checks, all in one wait of :data:`NOTHING_S` seconds:

* a Ping sent twice with one id: one reply;
* an expired Ping sent twice: one reply (the window holds calls whatever happens to
  them after step 1; that the reply is ``sef.Error.Expired`` is ``calls.expired``'s);
* an anonymous Ping (no ``sender``) twice: one reply; then the same id with the sender
  ``"None"``: answered (an absent sender equals no sender string);
* a malformed Ping (no ``args``: refused at step 1), then a valid one with its id:
  answered ok (calls refused at step 1 are not remembered);
* on a demo agent whose Telemetry tells the running command: charge (id A), idle, charge
  again with id A: the agent stays idle (one effect).
"""

from __future__ import annotations

import asyncio

from sef.certify._call_helpers import (
    AGENT,
    NOTHING_S,
    REPLY_S,
    current_event,
    energy,
    events_observable,
    expect_ok,
    fresh_id,
    render,
    reply_count,
    wait_event,
)
from sef.certify._model import CheckContext, CheckFailed

__all__ = ["duplicate"]


async def duplicate(ctx: CheckContext) -> str:
    """The same (sender, id) twice -> one reply; the window's edges; one effect."""
    ping, expired, anonymous, fixed = (
        fresh_id(p) for p in ("dup", "dup-exp", "dup-anon", "dup-fix")
    )
    mark = ctx.mark()
    expect_ok(f"Ping() id {ping}", await ctx.call(AGENT, "Ping", [], call_id=ping))
    await ctx.call(AGENT, "Ping", [], call_id=ping, timeout_s=0.0)

    await ctx.call(AGENT, "Ping", [], call_id=expired, exp_in_s=-60.0)  # Expired: its check
    await ctx.call(AGENT, "Ping", [], call_id=expired, exp_in_s=-60.0, timeout_s=0.0)

    reply = await ctx.call(AGENT, "Ping", [], call_id=anonymous, omit=("sender",))
    expect_ok(f"Ping() id {anonymous} without sender", reply)
    await ctx.call(AGENT, "Ping", [], call_id=anonymous, omit=("sender",), timeout_s=0.0)
    none_sender = await ctx.call(
        AGENT, "Ping", [], call_id=anonymous, extra={"sender": "None"}, timeout_s=REPLY_S
    )
    if none_sender is None:
        raise CheckFailed(
            f"Ping() id {anonymous} from sender 'None' after an anonymous call with that id: "
            "not answered (an absent sender must equal no sender string)"
        )

    # refused at step 1 (its MalformedPayload reply is robustness.malformed_reply's)
    await ctx.call(AGENT, "Ping", [], call_id=fixed, omit=("args",), timeout_s=NOTHING_S / 3)
    reply = await ctx.call(AGENT, "Ping", [], call_id=fixed)
    if reply is None or reply.get("ok") is not True:
        raise CheckFailed(
            f"Ping() id {fixed} after a malformed call with that id: {render(reply)}, expected "
            "ok (calls refused at step 1 must not enter the de-duplication window)"
        )

    effect = ""
    if events_observable(ctx):
        effect = "; " + await _one_effect(ctx)  # waits NOTHING_S meanwhile
    else:
        await asyncio.sleep(NOTHING_S)
    expected = {ping: 1, expired: 1, anonymous: 2}
    counts = {call_id: await reply_count(ctx, mark, call_id) for call_id in expected}
    if counts != expected:
        raise CheckFailed(
            "replies per call id: "
            + ", ".join(f"{i}: {counts[i]} (expected {n})" for i, n in expected.items())
            + f"; sent: Ping {ping} twice, expired Ping {expired} twice, anonymous Ping "
            f"{anonymous} twice then from sender 'None'"
        )
    return (
        f"Ping id {ping} twice -> 1 reply; expired Ping twice -> 1 reply; anonymous "
        "Ping twice -> 1 reply, the same id from sender 'None' -> answered; a malformed "
        f"Ping's id reused by a valid one -> answered ({render(reply)}){effect}"
    )


async def _one_effect(ctx: CheckContext) -> str:
    """Charge (id A), idle (id B), charge again with id A: the agent must stay idle."""
    id_a, id_b = fresh_id("dup-a"), fresh_id("dup-b")
    expect_ok("EnergyMethod([charge,1,0])", await energy(ctx, [["charge", 1, 0]], call_id=id_a))
    mark = ctx.mark()
    expect_ok("EnergyMethod([idle,0,0])", await energy(ctx, [["idle", 0, 0]], call_id=id_b))
    if await wait_event(ctx, mark, "idle") is None:
        raise CheckFailed("after EnergyMethod([idle,0,0]) no Telemetry with Event idle")
    again = await energy(ctx, [["charge", 1, 0]], call_id=id_a, timeout_s=NOTHING_S)
    if again is not None:
        raise CheckFailed(f"EnergyMethod id {id_a} sent again was answered: {render(again)}")
    if (event := current_event(ctx)) != "idle":
        raise CheckFailed(f"EnergyMethod id {id_a} sent again was executed: Event is {event!r}")
    return f"EnergyMethod charge (id {id_a}), idle, the charge again -> no reply, still idle"

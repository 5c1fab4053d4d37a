"""The ``robustness`` suite: an agent survives whatever arrives on its call topics
(``docs/protocol.md`` §5, §6: "An agent MUST keep running whatever arrives").

Each check publishes bad payloads raw on the agent's ``sef.Agent.Ping`` call topic, then
requires that the agent published no offline status (no will, no shutdown) and answers a
valid Ping afterwards. Where §6 step 1 says an error reply is sent (the object was
readable and has a string ``id`` and a valid ``reply_to``) the reply's name is checked;
a readable object that is refused for its version may be answered (then with
``sef.Error.UnsupportedVersion`` or ``sef.Error.MalformedPayload``) or not.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from sef.certify._call_helpers import (
    AGENT,
    NOTHING_S,
    REPLY_S,
    error_name,
    field_of,
    fresh_id,
    offline_since,
    ping_ok,
    render,
    replies_since,
    wait_online,
)
from sef.certify._model import Check, CheckContext, CheckFailed, CheckSkipped, Level

__all__ = ["CHECKS"]

MAX_PAYLOAD_BYTES = 262_144
MALFORMED = "sef.Error.MalformedPayload"
TOO_LARGE = "sef.Error.PayloadTooLarge"
UNSUPPORTED = "sef.Error.UnsupportedVersion"
SURVIVE_S = 0.5
"""How long after the bad payloads the agent must still be online before the Ping, s."""


def _call_object(ctx: CheckContext, call_id: str, **changes: Any) -> dict[str, Any]:
    """A valid version-1 Ping call answered on the certifier's reply topic, changed by
    ``changes`` (a value of ``None`` removes the key)."""
    now = time.time()
    obj: dict[str, Any] = {
        "v": 1,
        "id": call_id,
        "ts": now,
        "exp": now + 30.0,
        "args": [],
        "reply_to": ctx.reply_topic,
        "sender": "certify",
    }
    for key, value in changes.items():
        if value is None:
            obj.pop(key, None)
        else:
            obj[key] = value
    return obj


def _encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


async def _survives(ctx: CheckContext, mark: int, what: str) -> str:
    """Evidence that the agent stayed online since ``mark`` and answers a Ping."""
    await asyncio.sleep(SURVIVE_S)
    if (gone := offline_since(ctx, mark)) is not None:
        raise CheckFailed(f"after {what} the agent went offline: {render(gone.payload)}")
    try:
        answered = await ping_ok(ctx)
    except CheckFailed as exc:
        raise CheckFailed(f"after {what}: {exc}") from None
    return f"{what}: still online; {answered}"


async def _publish_all(ctx: CheckContext, payloads: list[tuple[str, bytes]]) -> int:
    """Publish each payload on the Ping call topic once the agent is online (a check
    before may have made it reconnect); return the mark taken before."""
    await wait_online(ctx)
    topic = ctx.agent_topic(f"call/{AGENT}/Ping")
    mark = ctx.mark()
    for _, payload in payloads:
        await ctx.publish_raw(topic, payload)
    return mark


async def malformed(ctx: CheckContext) -> str:
    """Malformed JSON, a non-object, garbage bytes, NaN: survived, not answered."""
    payloads = [
        ("malformed JSON", b'{"v":1,"id":"x",'),
        ("a JSON array", b"[1,2,3]"),
        ("a JSON string", b'"call"'),
        ("garbage bytes", bytes(range(256))),
        ("invalid UTF-8", b'{"v":1,"id":"\xff\xfe"}'),
        ("NaN", b'{"v":1,"id":"x","ts":NaN}'),
        ("empty payload", b""),
    ]
    mark = await _publish_all(ctx, payloads)
    return await _survives(ctx, mark, ", ".join(label for label, _ in payloads))


async def oversized(ctx: CheckContext) -> str:
    """A readable call over 262 144 bytes is refused unread: survived, not executed."""
    call_id = fresh_id("big")
    obj = _call_object(ctx, call_id, pad="x" * MAX_PAYLOAD_BYTES)
    payload = _encode(obj)
    mark = await _publish_all(ctx, [("oversized", payload)])
    what = f"a Ping call of {len(payload)} bytes (limit {MAX_PAYLOAD_BYTES})"
    evidence = await _survives(ctx, mark, what)
    for message in replies_since(ctx, mark, call_id):
        reply = message.json()
        if reply.get("ok") is True:
            raise CheckFailed(f"{what} was executed: {render(reply)}")
        if error_name(reply) not in (TOO_LARGE, MALFORMED):
            raise CheckFailed(f"{what} was answered {render(reply)}, expected {TOO_LARGE}")
    return evidence


async def wrong_version(ctx: CheckContext) -> str:
    """v=2 without an envelope, v=99, v="1", v missing, jws/cose keys: survived, not
    executed; an answer, if any, is UnsupportedVersion (or MalformedPayload)."""
    variants: list[tuple[str, dict[str, Any]]] = [
        ("v=2 without envelope", {"v": 2}),
        ("v=99", {"v": 99}),
        ('v="1"', {"v": "1"}),
        ("no v", {"v": None}),
        ("a jws key", {"jws": "e30.e30.sig"}),
        ("a cose key", {"cose": "AAAA"}),
    ]
    ids = {label: fresh_id("ver") for label, _ in variants}
    payloads = [
        (label, _encode(_call_object(ctx, ids[label], **changes))) for label, changes in variants
    ]
    mark = await _publish_all(ctx, payloads)
    evidence = await _survives(ctx, mark, ", ".join(label for label, _ in variants))
    answered = []
    for label, call_id in ids.items():
        for message in replies_since(ctx, mark, call_id):
            reply = message.json()
            if reply.get("ok") is True:
                raise CheckFailed(f"a Ping call with {label} was executed: {render(reply)}")
            if error_name(reply) not in (UNSUPPORTED, MALFORMED):
                raise CheckFailed(
                    f"a Ping call with {label} was answered {render(reply)}, expected {UNSUPPORTED}"
                )
            answered.append(f"{label} -> {error_name(reply)}")
    return f"{evidence}; answers: {', '.join(answered) or 'none'}"


async def malformed_reply(ctx: CheckContext) -> str:
    """A readable call with an id and a valid reply_to but an invalid field is answered
    sef.Error.MalformedPayload, not executed (protocol version 1: a signing agent refuses
    the unsigned calls unanswered, so the check SKIPs)."""
    variants: list[tuple[str, dict[str, Any]]] = [
        ("no args", {"args": None}),
        ('args "x"', {"args": "x"}),
        ("no exp", {"exp": None}),
        ('exp "soon"', {"exp": "soon"}),
    ]
    mark = ctx.mark()
    await ping_ok(ctx)
    if any(field_of(m, "jws") for m in ctx.since(mark) if m.topic == ctx.reply_topic):
        raise CheckSkipped(
            "the agent signs its replies (protocol version 2): unsigned calls are refused "
            "unanswered there (§12)"
        )
    ids = {label: fresh_id("bad") for label, _ in variants}
    payloads = [
        (label, _encode(_call_object(ctx, ids[label], **changes))) for label, changes in variants
    ]
    mark = await _publish_all(ctx, payloads)
    deadline = time.monotonic() + REPLY_S
    results = []
    for label, call_id in ids.items():
        found = replies_since(ctx, mark, call_id)
        while not found and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            found = replies_since(ctx, mark, call_id)
        if not found:
            raise CheckFailed(f"a Ping call with {label}: no reply (expected {MALFORMED})")
        reply = found[0].json()
        if error_name(reply) != MALFORMED:
            raise CheckFailed(
                f"a Ping call with {label}: expected {MALFORMED}, got {render(reply)}"
            )
        results.append(f"{label} -> {MALFORMED}")
    if (gone := offline_since(ctx, mark)) is not None:
        raise CheckFailed(
            f"after calls with invalid fields the agent went offline: {gone.payload!r}"
        )
    return "; ".join(results)


async def unanswerable(ctx: CheckContext) -> str:
    """A readable object without a string id, or without reply_to, is not answered."""
    mark = await _publish_all(
        ctx,
        [
            ("id 42", _encode(_call_object(ctx, "ignored", id=42))),
            ("no id", _encode(_call_object(ctx, "ignored", id=None))),
        ],
    )
    await asyncio.sleep(NOTHING_S)
    stray = [m for m in ctx.since(mark) if m.topic == ctx.reply_topic]
    if stray:
        raise CheckFailed(
            "calls with no string id were answered: " + "; ".join(render(m.payload) for m in stray)
        )
    return await _survives(ctx, mark, "Ping calls with id 42 and without id: not answered")


CHECKS: list[Check] = [
    Check(
        "robustness.malformed",
        "malformed JSON, non-objects and garbage bytes are survived",
        "§5, §6",
        Level.REQUIRED,
        malformed,
    ),
    Check(
        "robustness.oversized",
        f"a payload over {MAX_PAYLOAD_BYTES} bytes is refused and survived",
        "§5, §6 step 1",
        Level.REQUIRED,
        oversized,
    ),
    Check(
        "robustness.wrong_version",
        "a payload with v other than 1 (or jws/cose keys) is refused and survived",
        "§5, §6 step 1",
        Level.REQUIRED,
        wrong_version,
    ),
    Check(
        "robustness.malformed_reply",
        "a readable call with an invalid field is answered sef.Error.MalformedPayload",
        "§6 step 1",
        Level.REQUIRED,
        malformed_reply,
    ),
    Check(
        "robustness.unanswerable",
        "a call without a string id is not answered and survived",
        "§6 step 1",
        Level.REQUIRED,
        unanswerable,
    ),
]

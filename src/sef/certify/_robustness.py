"""The ``robustness`` suite: an agent survives whatever arrives on its call topics
(``docs/protocol.md`` §5, §6: "An agent MUST keep running whatever arrives").

Each check publishes bad payloads raw on the agent's ``sef.Agent.Ping`` call topic, then
requires that the agent published no offline status (no will, no shutdown) and answers a
valid Ping afterwards. §6 step 1 decides the replies: a readable JSON object with a string
``id`` and a valid ``reply_to`` is answered ``sef.Error.UnsupportedVersion`` when ``v`` is
not 1 and ``sef.Error.MalformedPayload`` when a key is missing or wrong; an oversized or
unreadable payload, or one that is not an object, is never answered. An agent that signs
its replies (protocol version 2) answers no unsigned call (§12).
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


def _signs_replies(ctx: CheckContext) -> bool:
    """Whether the agent's replies seen so far are signed envelopes (protocol version 2,
    where unsigned calls are refused unanswered, §12)."""
    return any(field_of(m, "jws") for m in ctx.since(0) if m.topic == ctx.reply_topic)


def _answers(ctx: CheckContext, mark: int, ids: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Label -> the first reply since ``mark`` to the call ``ids[label]``."""
    found = {}
    for label, call_id in ids.items():
        replies = replies_since(ctx, mark, call_id)
        if replies:
            found[label] = replies[0].json()
    return found


async def _await_answers(
    ctx: CheckContext, mark: int, ids: dict[str, str], timeout_s: float
) -> dict[str, dict[str, Any]]:
    """:func:`_answers` once every call has one, or after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while len(found := _answers(ctx, mark, ids)) < len(ids) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return found


async def malformed(ctx: CheckContext) -> str:
    """Malformed JSON, non-objects, garbage bytes, NaN: survived and never answered (also
    when they carry an id and a reply topic: nothing of them is readable)."""
    ids = {label: fresh_id("junk") for label in ("truncated", "array", "bad UTF-8")}
    truncated = _encode(_call_object(ctx, ids["truncated"]))[:-9]
    array = _encode([_call_object(ctx, ids["array"])])
    # NaN: not JSON (RFC 8259), but a lenient parser reads it: no reply_to, no verdict
    nan = _encode(_call_object(ctx, "nan", ts="TS", reply_to=None)).replace(b'"TS"', b"NaN")
    placeholder = _encode(_call_object(ctx, ids["bad UTF-8"], sender="SENDER"))
    bad_utf8 = placeholder.replace(b"SENDER", b"\xff\xfe")
    payloads = [
        ("truncated JSON", truncated),
        ("a JSON array holding a call", array),
        ("NaN", nan),
        ("invalid UTF-8 in a call", bad_utf8),
        ("a JSON string", b'"call"'),
        ("garbage bytes", bytes(range(256))),
        ("an empty payload", b""),
    ]
    mark = await _publish_all(ctx, payloads)
    evidence = await _survives(ctx, mark, ", ".join(label for label, _ in payloads))
    if answered := _answers(ctx, mark, ids):
        raise CheckFailed(
            "unreadable payloads must never be answered, got: "
            + "; ".join(f"{label} -> {render(reply)}" for label, reply in answered.items())
        )
    return f"{evidence}; none answered"


async def oversized(ctx: CheckContext) -> str:
    """A call over 262 144 bytes is refused unread: survived, never answered."""
    call_id = fresh_id("big")
    payload = _encode(_call_object(ctx, call_id, pad="x" * MAX_PAYLOAD_BYTES))
    mark = await _publish_all(ctx, [("oversized", payload)])
    what = f"a Ping call of {len(payload)} bytes (limit {MAX_PAYLOAD_BYTES})"
    evidence = await _survives(ctx, mark, what)
    if answered := _answers(ctx, mark, {what: call_id}):
        raise CheckFailed(f"{what} must never be answered ({TOO_LARGE} is only logged), "
                          f"got {render(answered[what])}")  # fmt: skip
    return f"{evidence}; not answered"


async def wrong_version(ctx: CheckContext) -> str:
    """A readable call with v other than the integer 1, or with jws/cose keys: survived,
    not executed, answered sef.Error.UnsupportedVersion (protocol version 1; a signing
    agent refuses them unanswered)."""
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
    await ping_ok(ctx)  # a reply shows whether the agent signs (then: no answers)
    signed = _signs_replies(ctx)
    mark = await _publish_all(ctx, payloads)
    evidence = await _survives(ctx, mark, ", ".join(label for label, _ in variants))
    answered = await _await_answers(ctx, mark, ids, 0.0 if signed else REPLY_S)
    for label, reply in answered.items():
        if reply.get("ok") is True:
            raise CheckFailed(f"a Ping call with {label} was executed: {render(reply)}")
        if not signed and error_name(reply) != UNSUPPORTED:
            raise CheckFailed(
                f"a Ping call with {label} was answered {render(reply)}, expected {UNSUPPORTED}"
            )
    if signed:
        return f"{evidence}; not executed (signing agent: unsigned calls refused, §12)"
    if missing := [label for label in ids if label not in answered]:
        raise CheckFailed(f"{evidence}, but no {UNSUPPORTED} reply to: {', '.join(missing)}")
    return f"{evidence}; each answered {UNSUPPORTED}"


async def malformed_reply(ctx: CheckContext) -> str:
    """A readable call with an id and a valid reply_to but a required key missing or of
    the wrong type is answered sef.Error.MalformedPayload, not executed (protocol version
    1: a signing agent refuses unsigned calls unanswered, so the check SKIPs)."""
    variants: list[tuple[str, dict[str, Any]]] = [
        ("no args", {"args": None}),
        ('args "x"', {"args": "x"}),
        ("no exp", {"exp": None}),
        ('exp "soon"', {"exp": "soon"}),
        ("no ts", {"ts": None}),
    ]
    await ping_ok(ctx)
    if _signs_replies(ctx):
        raise CheckSkipped(
            "the agent signs its replies (protocol version 2): unsigned calls are refused "
            "unanswered there (§12)"
        )
    ids = {label: fresh_id("bad") for label, _ in variants}
    payloads = [
        (label, _encode(_call_object(ctx, ids[label], **changes))) for label, changes in variants
    ]
    mark = await _publish_all(ctx, payloads)
    answered = await _await_answers(ctx, mark, ids, REPLY_S)
    results = []
    for label in ids:
        reply = answered.get(label)
        if reply is None:
            raise CheckFailed(f"a Ping call with {label}: no reply (expected {MALFORMED})")
        if error_name(reply) != MALFORMED:
            raise CheckFailed(
                f"a Ping call with {label}: expected {MALFORMED}, got {render(reply)}"
            )
        results.append(f"{label} -> {MALFORMED}")
    if (gone := offline_since(ctx, mark)) is not None:
        raise CheckFailed(
            f"after the calls with invalid fields it went offline: {render(gone.payload)}"
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
        "malformed JSON, non-objects and garbage bytes are survived and never answered",
        "§5, §6",
        Level.REQUIRED,
        malformed,
    ),
    Check(
        "robustness.oversized",
        f"a payload over {MAX_PAYLOAD_BYTES} bytes is refused unanswered and survived",
        "§5, §6 step 1",
        Level.REQUIRED,
        oversized,
    ),
    Check(
        "robustness.wrong_version",
        "a call with v other than 1 (or jws/cose keys) is answered UnsupportedVersion",
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

"""Event sequences for agents and groups: validated completely before anything is sent."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

from sef.ems._caller import CallRefused, CallTarget, CheckedArgs, command_status
from sef.ems._service import EMS
from sef.ems.api._errors import ApiError
from sef.ems.api._models import (
    CommandRequest,
    CommandResult,
    CommandStatus,
    ReplyOut,
    ReplyOutcome,
)
from sef.interface import DEMO_INTERFACE, TypeMismatch, parse_events

__all__ = ["CommandStats", "check_cmds", "send_sequence"]

METHOD = "EnergyMethod"
MAX_EVENTS = 256
"""Most events in one sequence (a call payload stays far below the bus's 256 KiB)."""
DEFAULT_TIMEOUT_S = 5.0

_PATH = re.compile(r"^(cmds(?:\[\d+\])*)")


@dataclass
class CommandStats:
    """Counters for /metrics: commands by outcome, replies by ok/error (``ok`` counts
    every accepted reply, ``not_applied`` also those whose device did not apply it)."""

    by_status: Counter[str] = field(default_factory=Counter)
    replies: Counter[str] = field(default_factory=Counter)


def _invalid(exc: TypeMismatch) -> ApiError:
    match = _PATH.match(exc.path)
    return ApiError(422, str(exc), {"path": match.group(1) if match else "cmds"})


def check_cmds(ems: EMS, cmds: Any) -> CheckedArgs:
    """Check a sequence against the interface's signature ``a(snn)`` (types, int16 ranges)
    and the sequence rules (known commands, rate and duration ≥ 0, open-ended event last).

    Returns the checked ``EnergyMethod`` arguments, sent as they are.
    Raises :class:`ApiError` 422 with a message naming the offending item, e.g.
    ``cmds[0][1]: 40000 out of range for int16 ...``.
    """
    if isinstance(cmds, list) and len(cmds) > MAX_EVENTS:
        raise _invalid(TypeMismatch(f"{len(cmds)} events, at most {MAX_EVENTS} allowed", "cmds"))
    try:
        checked = ems.check(DEMO_INTERFACE, METHOD, [cmds])
    except CallRefused as exc:
        if exc.mismatch is None:  # pragma: no cover - the shipped interface has the method
            raise ApiError(503, f"interface {DEMO_INTERFACE} is not known to this EMS") from None
        raise _invalid(exc.mismatch) from None
    try:
        parse_events(cast("list[tuple[str, int, int]]", checked.values[0]))
    except TypeMismatch as exc:
        raise _invalid(exc) from None
    return checked


def _members(ems: EMS, target: CallTarget) -> list[str]:
    """Agents a target reaches; 404/409/422 when it cannot take the command."""
    if target.group:
        members = sorted(a.agent_id for a in ems.registry.group_members(target.name))
        if not members:
            raise ApiError(
                404,
                f"unknown group {target.name!r}: no known agent is a member",
                {"group": target.name},
            )
        return members
    record = ems.registry.get(target.name)
    if record is None:
        raise ApiError(404, f"unknown agent {target.name!r}", {"agent": target.name})
    if record.online is False:
        raise ApiError(
            409,
            f"agent {target.name!r} is offline; command not sent",
            {"agent": target.name, "offline_since": record.offline_since},
        )
    if record.interfaces and DEMO_INTERFACE not in record.interfaces:
        raise ApiError(
            422,
            f"agent {target.name!r} does not implement {DEMO_INTERFACE}",
            {"agent": target.name, "interfaces": sorted(record.interfaces)},
        )
    return [target.name]


async def send_sequence(
    ems: EMS,
    target: CallTarget,
    body: CommandRequest,
    stats: CommandStats,
    *,
    sent_by: str | None = None,
) -> CommandResult:
    """Check, then send ``EnergyMethod(cmds)`` to an agent or group; gather replies.

    ``target`` is already valid; the arguments are checked here once and sent as checked.
    ``sent_by`` (the caller's token name) is kept in the command log.
    """
    try:
        expected = _members(ems, target)
        checked = check_cmds(ems, body.cmds)
        if not ems.bus.connected:
            raise ApiError(503, "the EMS is not connected to the broker; command not sent")
    except ApiError:
        stats.by_status["rejected"] += 1
        raise
    call_id = uuid.uuid4().hex
    sent_at = ems.clock.now()
    replies = await ems.send(
        target,
        checked,
        reply=body.reply,
        timeout_s=body.timeout_s or DEFAULT_TIMEOUT_S,
        call_id=call_id,
        sent_by=sent_by,
    )
    answered = {r.agent for r in replies}
    missing = [m for m in expected if m not in answered] if body.reply else []
    status = cast("CommandStatus", command_status(replies, expected) if body.reply else "sent")
    stats.by_status[status] += 1
    for reply in replies:
        stats.replies["ok" if reply.ok else "error"] += 1
        if reply.applied is False:
            stats.replies["not_applied"] += 1
    return CommandResult(
        call_id=call_id,
        target=str(target),
        sent_at=sent_at,
        sent_by=sent_by,
        status=status,
        replies=[
            ReplyOut(
                agent=r.agent,
                ok=r.ok,
                result=list(r.result or []),
                error=r.error,
                message=r.message,
                outcome=cast("ReplyOutcome", r.outcome),
                fault=r.fault,
                fault_message=r.fault_message,
            )
            for r in replies
        ],
        missing=missing,
    )

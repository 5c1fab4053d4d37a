"""``PUT`` and ``GET /control/target``: the live controller's target, set by an operator.

The body of ``PUT`` is a JSON list of ``[time_s, kw]`` points (Unix s on the EMS clock,
kW; ``Content-Type: application/json``) or CSV rows ``time_s,kw`` (``text/csv``; a header
line is allowed). Each point holds until the next (the last one holds on); before the
first point, and after ``PUT []``, the controller follows its scenario's target. The
live controller beside the EMS (:class:`sef.control.live.LiveControl`) applies a new
target at its next step.

``GET`` also lists the windows and holds that demand-response events put on the board
(:mod:`sef.ems._target_board`; they are not set through this route) and the feeder
limit that applies now.

``PUT`` needs the ``operator`` role (like commands) and is audited: it is written to the
command log (``GET /commands?target=control/target``: ``method`` ``SetTarget``, the
points in ``args``, ``sent_by`` the caller) and logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

from fastapi import FastAPI, Request
from pydantic import BaseModel, Field

from sef.ems._service import EMS
from sef.ems._target_board import MAX_POINTS, TargetBoard, parse_target_csv, target_board
from sef.ems.api._errors import ApiError
from sef.ems.api._login import principal_of

__all__ = ["TARGET_PATH", "HoldOut", "TargetOut", "WindowOut", "install_target_routes"]

log = logging.getLogger("sef.ems.api.target")

TARGET_PATH = "/control/target"
AUDIT_TARGET = "control/target"
"""The command log's ``target`` of target changes."""


class WindowOut(BaseModel):
    """A time-limited target or feeder limit of a demand-response event."""

    key: str = Field(description="Who put it (e.g. the event's source and id).")
    start_s: float = Field(description="From (Unix s, EMS clock).")
    end_s: float = Field(description="Until, exclusive (Unix s).")
    limit_kw: float | None = Field(description="Most the metered feeder may draw (kW).")
    target_kw: float | None = Field(description="The target over the window (kW).")


class HoldOut(BaseModel):
    """Agents a demand-response event commands directly: the live controller leaves them."""

    key: str = Field(description="Who put it.")
    agents: list[str] = Field(description="The held agents, sorted.")
    start_s: float = Field(description="From (Unix s, EMS clock).")
    end_s: float = Field(description="Until, exclusive (Unix s).")


class TargetOut(BaseModel):
    """The live target set through the API."""

    points: list[tuple[float, float]] = Field(
        description="[time_s, kw] points, oldest first (Unix s, EMS clock; kW); each holds "
        "until the next. Empty: the controller follows its scenario's target."
    )
    now_kw: float | None = Field(description="The target now (kW), null when none applies.")
    set_by: str | None = Field(description="Who set it last (API principal).")
    set_at: float | None = Field(description="When (Unix s, EMS clock).")
    version: int = Field(description="Number of changes since the EMS started.")
    limit_now_kw: float | None = Field(
        default=None, description="The feeder limit of the windows now (kW), null: none."
    )
    windows: list[WindowOut] = Field(
        default_factory=list, description="Event windows not yet ended, by start."
    )
    holds: list[HoldOut] = Field(
        default_factory=list, description="Event holds not yet ended, by start."
    )


def _out(board: TargetBoard, now: float) -> TargetOut:
    now_kw, limit = board.value_at(now), board.limit_at(now)  # (these drop ended ones)
    windows = sorted(board.windows.items(), key=lambda kv: (kv[1].start_s, kv[0]))
    holds = sorted(board.holds.items(), key=lambda kv: (kv[1].start_s, kv[0]))
    return TargetOut(
        points=list(board.points),
        now_kw=now_kw,
        set_by=board.set_by,
        set_at=board.set_at,
        version=board.version,
        limit_now_kw=limit,
        windows=[
            WindowOut(
                key=k, start_s=w.start_s, end_s=w.end_s, limit_kw=w.limit_kw, target_kw=w.target_kw
            )
            for k, w in windows
        ],
        holds=[
            HoldOut(key=k, agents=sorted(h.agents), start_s=h.start_s, end_s=h.end_s)
            for k, h in holds
        ],
    )


def _points(body: bytes, content_type: str) -> list[tuple[float, float]]:
    """The body's points; :class:`ApiError` 422 naming what is wrong."""
    text = body.decode("utf-8", errors="replace")
    kind = content_type.split(";")[0].strip().lower()
    if kind in ("text/csv", "text/plain"):
        try:
            return parse_target_csv(text)
        except ValueError as exc:
            raise ApiError(422, f"CSV target: {exc}") from None
    if kind != "application/json":
        raise ApiError(
            415, f"target body must be application/json or text/csv, got {kind or 'none'!r}"
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(422, f"target body is not JSON: {exc}") from None
    if isinstance(data, dict):
        data = data.get("points")
    if not isinstance(data, list):
        raise ApiError(422, "target must be a list of [time_s, kw] points")
    points: list[tuple[float, float]] = []
    for i, item in enumerate(data):
        if (
            not isinstance(item, list | tuple)
            or len(item) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in item)
        ):
            raise ApiError(422, f"points[{i}]: expected [time_s, kw] numbers, got {item!r}")
        points.append((float(item[0]), float(item[1])))
    return points


def install_target_routes(app: FastAPI, ems: EMS) -> None:
    """Add ``GET`` and ``PUT /control/target`` (operator role for ``PUT``: see ``_auth``)."""

    @app.get(TARGET_PATH, response_model=TargetOut, tags=["control"])
    async def get_target() -> TargetOut:
        """The live target set through the API (empty: the scenario's target applies)."""
        return _out(target_board(ems), ems.clock.now())

    @app.put(
        TARGET_PATH,
        response_model=TargetOut,
        tags=["control"],
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "array",
                            "maxItems": MAX_POINTS,
                            "items": {
                                "type": "array",
                                "items": {"type": "number"},
                                "minItems": 2,
                                "maxItems": 2,
                            },
                        },
                        "example": [[1767225600, 80.0], [1767250800, 95.0]],
                    },
                    "text/csv": {
                        "schema": {"type": "string"},
                        "example": "time_s,kw\n1767225600,80\n1767250800,95\n",
                    },
                },
                "required": True,
            }
        },
    )
    async def put_target(request: Request) -> TargetOut:
        """Set the live controller's target: [time_s, kw] points (JSON) or ``time_s,kw``
        CSV rows, each held until the next; ``[]`` returns to the scenario's target.
        Operator role; written to the command log (``target`` ``control/target``)."""
        principal = principal_of(request)
        points = _points(await request.body(), request.headers.get("content-type", ""))
        board = target_board(ems)
        now = ems.clock.now()
        try:
            board.set(points, principal.name, now)
        except ValueError as exc:
            raise ApiError(422, f"target: {exc}") from None
        log.info(
            "control target set by %s: %d points%s",
            principal.name,
            len(points),
            f" from {board.points[0][0]:.0f} to {board.points[-1][0]:.0f}" if points else "",
        )
        if ems.store is not None:
            await asyncio.to_thread(
                ems.store.log_command,
                uuid.uuid4().hex,
                now,
                ems.bus.client_id,
                AUDIT_TARGET,
                "sef.control",
                "SetTarget",
                [[list(p) for p in board.points]],
                "ok",
                sent_by=principal.name,
            )
        return _out(board, now)

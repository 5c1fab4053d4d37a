"""``/openadr/...``: the demand-response bridge (the EMS as a VEN of utility programs) for
operators: its adapters and policy, the event history with each event's opt and outcome,
the policy's changes and an operator's opt override (issue 15, ``docs/openadr.md``).

The routes read the :class:`~sef.ems._dr_board.DrBoard` the bridge installs on the EMS.
Without one, ``GET /openadr/status`` answers ``{"configured": false, ...}`` (a dashboard can
poll it) and every other route 404 ``OpenADR is not configured on this EMS``.

``PUT /openadr/policy`` and ``POST .../opt`` need the ``operator`` role (see ``_auth``) and
are audited in the command log (``target`` ``openadr``, ``interface`` ``sef.openadr``,
``method`` ``SetOptPolicy`` / ``OptOverride``, ``sent_by`` the caller).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from sef.ems._dr_board import EVENT_STATUSES, DrBoard, dr_board
from sef.ems._service import EMS
from sef.ems.api._errors import ApiError
from sef.ems.api._login import principal_of
from sef.ems.store._dr_events import MAX_DR_EVENTS, json_safe

__all__ = ["AUDIT_TARGET", "OpenadrStatus", "OptRequest", "install_openadr_routes"]

log = logging.getLogger("sef.ems.api.openadr")

AUDIT_TARGET = "openadr"
"""The command log's ``target`` of policy changes and opt overrides."""
NOT_CONFIGURED = "OpenADR is not configured on this EMS (no demand-response bridge runs)"

Source = Annotated[
    str, Path(description="The VEN adapter: oadr2b, oadr3.", min_length=1, max_length=32)
]
EventId = Annotated[str, Path(description="The VTN's event id.", min_length=1, max_length=255)]


class OpenadrStatus(BaseModel):
    """The demand-response bridge: configured or not, its adapters and opt-out policy."""

    configured: bool = Field(description="Whether a demand-response bridge runs.")
    now_s: float = Field(description="The EMS clock now, Unix s (to tell upcoming events).")
    adapters: list[dict[str, Any]] = Field(
        description="Per adapter: source, vtn, registered, ven_id, last_ok_s, errors, "
        "last_error, programs."
    )
    policy: dict[str, Any] | None = Field(description="The automatic opt-out policy.")


class OptRequest(BaseModel):
    """An operator's answer to an event, overriding the bridge's."""

    model_config = ConfigDict(extra="forbid")

    opt: Literal["optIn", "optOut"] = Field(description="The answer.")
    reason: str = Field(
        default="", max_length=500, description="Why, for the history (the caller's name is added)."
    )


def _statuses(text: str | None) -> list[str] | None:
    """``status=active,scheduled`` → the list; 422 for a status that does not exist."""
    if not text:
        return None
    wanted = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [s for s in wanted if s not in EVENT_STATUSES]
    if unknown:
        raise ApiError(
            422,
            f"status: unknown {unknown[0]!r}; one or more of {', '.join(EVENT_STATUSES)}",
            {"param": "status"},
        )
    return wanted


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def install_openadr_routes(app: FastAPI, ems: EMS) -> None:
    """Add the ``/openadr`` routes (operator role for ``PUT`` and ``POST``)."""

    def board() -> DrBoard:
        found = dr_board(ems)
        if found is None:
            raise ApiError(404, NOT_CONFIGURED)
        return found

    async def audit(method: str, args: list[Any], by: str) -> None:
        if ems.store is not None:
            await asyncio.to_thread(
                ems.store.log_command,
                uuid.uuid4().hex,
                ems.clock.now(),
                ems.bus.client_id,
                AUDIT_TARGET,
                "sef.openadr",
                method,
                json_safe(args),
                "ok",
                sent_by=by,
            )

    @app.get("/openadr/status", response_model=OpenadrStatus, tags=["openadr"])
    async def status() -> OpenadrStatus:
        """The bridge's adapters (VTN, registration, errors, programs) and its automatic
        opt-out policy; ``configured: false`` when no bridge runs."""
        found = dr_board(ems)
        if found is None:
            return OpenadrStatus(configured=False, now_s=ems.clock.now(), adapters=[], policy=None)
        data = json_safe(found.status())
        return OpenadrStatus(
            configured=True,
            now_s=ems.clock.now(),
            adapters=list(data.get("adapters") or []),
            policy=data.get("policy"),
        )

    @app.get("/openadr/events", tags=["openadr"])
    async def events(
        status: Annotated[
            str | None,
            Query(
                max_length=200,
                description="Only these statuses, comma separated: " + ", ".join(EVENT_STATUSES),
            ),
        ] = None,
        program: Annotated[
            str | None, Query(max_length=255, description="Only this program.")
        ] = None,
        source: Annotated[
            str | None, Query(max_length=32, description="Only this adapter.")
        ] = None,
        limit: Annotated[
            int, Query(ge=1, le=MAX_DR_EVENTS, description="Most event versions.")
        ] = 100,
    ) -> list[dict[str, Any]]:
        """The event history, newest first: every event version received, its opt, status,
        requested and delivered kW, and the protocol's event (``raw``)."""
        found = board()
        wanted = _statuses(status)
        rows = await found.events(source=source, status=wanted, program=program, limit=limit)
        return [json_safe(row) for row in rows]

    @app.get("/openadr/events/{source}/{event_id}", tags=["openadr"])
    async def event(source: Source, event_id: EventId) -> dict[str, Any]:
        """One event: its newest version, and every version newest first."""
        versions = [json_safe(v) for v in await board().versions(source, event_id)]
        if not versions:
            raise ApiError(
                404, f"no event {event_id!r} from {source!r}", {"source": source, "event": event_id}
            )
        return {**versions[0], "versions": versions}

    @app.put("/openadr/policy", tags=["openadr"])
    async def put_policy(request: Request) -> dict[str, Any]:
        """Replace the automatic opt-out policy (a JSON object: see docs/openadr.md).
        Operator role; audited in the command log."""
        found = board()
        try:
            data = json.loads(await request.body(), parse_constant=_no_constant)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, NaN
            raise ApiError(422, f"policy is not strict JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ApiError(422, f"policy must be a JSON object, got {type(data).__name__}")
        by = principal_of(request).name
        try:
            policy: dict[str, Any] = json_safe(await found.set_policy(data, by))
        except ValueError as exc:
            words = str(exc)
            raise ApiError(
                422, words if words.startswith("policy") else f"policy: {words}"
            ) from None
        log.info("OpenADR opt-out policy set by %s", by)
        await audit("SetOptPolicy", [policy], by)
        return policy

    @app.post("/openadr/events/{source}/{event_id}/opt", tags=["openadr"])
    async def override_opt(
        source: Source, event_id: EventId, body: OptRequest, request: Request
    ) -> dict[str, Any]:
        """Answer an event (its newest version) as the operator says: ``optOut`` stops what
        was sent for it, ``optIn`` acts on it. Operator role; audited."""
        found = board()
        by = principal_of(request).name
        try:
            record = await found.set_opt(source, event_id, body.opt, body.reason, by)
        except LookupError:
            raise ApiError(
                404, f"no event {event_id!r} from {source!r}", {"source": source, "event": event_id}
            ) from None
        except ValueError as exc:
            raise ApiError(409, f"opt {body.opt} for {event_id!r}: {exc}") from None
        log.info("OpenADR event %s/%s: %s by %s (%s)", source, event_id, body.opt, by, body.reason)
        await audit("OptOverride", [source, event_id, body.opt, body.reason], by)
        return dict(json_safe(record))

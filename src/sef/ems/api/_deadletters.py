"""Store health and dead letters in the API: the verdict of ``/health`` and ``GET
/deadletters`` (rows the store refused, with their reasons)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from sef.ems._service import EMS
from sef.ems.api._errors import ApiError
from sef.ems.api._models import ErrorBody, Health
from sef.ems.api._times import parse_time

__all__ = ["DeadLetterOut", "HealthOut", "StoreStatus", "health_response", "install_deadletters"]


class StoreStatus(BaseModel):
    """Why the store is degraded (in ``/health`` only while it is)."""

    ok: bool
    oldest_pending_s: float = Field(
        description="Age of the oldest message not yet acknowledged (rows not committed), s."
    )
    failing_for_s: float | None = Field(description="How long writes have been failing, s.")
    last_error: str | None = Field(description="The last write error.")


class HealthOut(Health):
    """``/health``: HTTP 200 with ``status: ok``, or 503 with ``status: degraded`` and a
    ``reason`` (the broker not connected; store writes failing, or not advancing)."""

    status: Literal["ok", "degraded"] = Field(
        description="degraded: broker not connected, or store failing or not advancing."
    )
    reason: str | None = Field(default=None, description="Why degraded (only then).")
    store_status: StoreStatus | None = Field(
        default=None, description="The store's state (only when the store is degraded)."
    )
    agents_incomplete: int = Field(
        default=0,
        description="Online agents whose birth (status, About, interface definitions, "
        "properties) the EMS holds only part of, past the grace; each is asked for a "
        "rebirth (rate-limited, with backoff). Not a reason for degraded.",
    )
    agents_birth_pending: int = Field(
        default=0,
        description="Agents lacking part of their birth, still within the grace or the "
        "drain of the EMS's subscription.",
    )
    leader: bool = Field(
        default=True,
        description="This EMS worker runs the control side (control app, OpenADR VEN, "
        "retention): the holder of the store's advisory lock, or always with a SQLite "
        "store or none (docs/operations.md, several EMS workers). Not a reason for degraded.",
    )
    worker: str | None = Field(default=None, description="This worker's name (--worker-id).")
    election: str = Field(
        default="none", description="postgresql (advisory lock) or none (single EMS)."
    )


class DeadLetterOut(BaseModel):
    """A row the store refused, kept with its reason."""

    id: int
    received: float = Field(description="When the EMS received it (EMS clock, Unix s).")
    agent_id: str | None
    kind: str = Field(description="Table the row was for: telemetry, agent, event.")
    key: str | None = Field(description="Property key (telemetry).")
    category: str = Field(
        description="out_of_range, too_long, not_finite, bad_text, bad_type, bad_json, "
        "too_large, future, past, db_rejected."
    )
    reason: str
    payload: str = Field(description="The refused row as JSON text (truncated).")


def health_response(ems: EMS) -> JSONResponse:
    """The ``/health`` answer: 200 ``ok``, or 503 ``degraded`` with a reason."""
    agents = ems.registry.agents.values()
    body: dict[str, Any] = {
        "status": "ok",
        "broker_connected": ems.bus.connected,
        "store": None if ems.store is None else ems.store.dialect,
        "agents": len(agents),
        "online": sum(1 for a in agents if a.online),
        "agents_incomplete": ems.births.incomplete,
        "agents_birth_pending": ems.births.pending,
        "leader": ems.leadership.is_leader,
        "worker": ems.leadership.worker_id,
        "election": ems.leadership.election,
    }
    reasons = [] if ems.bus.connected else ["the EMS is not connected to the broker"]
    if ems.recorder is not None:
        store = ems.recorder.health()
        if not store.ok:
            assert store.reason is not None
            reasons.append(store.reason)
            body["store_status"] = StoreStatus(
                ok=False,
                oldest_pending_s=round(store.oldest_pending_s, 3),
                failing_for_s=None
                if store.failing_for_s is None
                else round(store.failing_for_s, 3),
                last_error=store.last_error,
            ).model_dump()
    if reasons:
        body["status"], body["reason"] = "degraded", "; ".join(reasons)
    return JSONResponse(body, status_code=503 if reasons else 200)


def install_deadletters(app: FastAPI, ems: EMS) -> None:
    """Add ``GET /deadletters`` to ``app``."""

    @app.get(
        "/deadletters",
        response_model=list[DeadLetterOut],
        responses={
            400: {"model": ErrorBody, "description": "A time that does not parse."},
            503: {"model": ErrorBody, "description": "No store, or the store is down."},
        },
        tags=["service"],
    )
    async def list_dead_letters(
        since: Annotated[
            str | None, Query(description="From (EMS time): Unix s, ISO 8601 or a duration ago.")
        ] = None,
        agent: Annotated[str | None, Query(description="Only this agent.", max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=10_000, description="Most entries.")] = 100,
    ) -> list[DeadLetterOut]:
        """Rows the store refused (out of range, outside the time window, rejected by the
        database), newest first, with their reasons; their messages were acknowledged."""
        store = ems.store
        if store is None:
            raise ApiError(503, "this EMS runs without a store (start it with --db): no history")
        start = None
        if since:
            try:
                start = parse_time(since, ems.clock.now())
            except ValueError as exc:
                raise ApiError(400, f"since: {exc}", {"param": "since"}) from None
        try:
            rows = await asyncio.to_thread(
                store.dead_letters, since=start, agent_id=agent, limit=limit
            )
        except SQLAlchemyError as exc:
            raise ApiError(503, f"store unavailable: {type(exc).__name__}") from None
        return [DeadLetterOut.model_validate(row) for row in rows]

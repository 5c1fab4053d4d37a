"""The agents listing (paginated), operator actions on the registry (reset a session,
approve a new agent), the admission state, and its metrics.

``GET /agents`` answers one page, in agent id order: ``limit`` (default
:data:`DEFAULT_PAGE`, at most :data:`MAX_PAGE`) agents after ``cursor`` (an agent id: the
``X-Next-Cursor`` of the previous page) and/or after skipping ``offset`` of them. The body
stays a JSON array; the page is described by headers: ``X-Total-Count`` (agents matching
the filters), ``X-Next-Cursor`` (absent on the last page) and a ``Link: <...>; rel="next"``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import FastAPI, Path, Query, Request, Response
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel, Field

from sef.ems._records import AgentRecord
from sef.ems._service import EMS
from sef.ems.api._errors import ApiError
from sef.ems.api._homes import agent_out
from sef.ems.api._models import AgentOut, ErrorBody

__all__ = [
    "DEFAULT_PAGE",
    "MAX_PAGE",
    "AdmissionCollector",
    "AdmissionOut",
    "ApprovalOut",
    "PendingOut",
    "install_agent_routes",
]

DEFAULT_PAGE = 100
"""Agents in one page of ``GET /agents`` when ``limit`` is not given."""
MAX_PAGE = 1000
"""Most agents in one page of ``GET /agents``."""
STATUSES = ("online", "offline", "unknown")
REFUSAL_REASONS = ("not_allowed", "rate", "cap", "pending", "pending_full")

AgentId = Annotated[str, Path(description="Agent id.", max_length=64)]


class PendingOut(BaseModel):
    """A new agent waiting for approval."""

    id: str = Field(description="Agent id.")
    first_seen: float = Field(description="Its first message, Unix s (EMS clock).")
    last_seen: float = Field(description="Its last message, Unix s (EMS clock).")
    messages: int = Field(description="Messages received (and dropped) while it waits.")


class AdmissionOut(BaseModel):
    """How the EMS admits new agents, and what it refused."""

    allow: list[str] = Field(description="Allowed ids or glob patterns; empty: any id.")
    approval: bool = Field(description="New agents wait for an operator's approval.")
    max_agents: int | None = Field(description="Most agents in the registry (null: no cap).")
    new_per_s: float | None = Field(description="New agents admitted per s (null: no limit).")
    burst: int = Field(description="New agents admitted at once before the rate applies.")
    agents: int = Field(description="Agents in the registry.")
    pending: list[PendingOut] = Field(description="Agents waiting for approval (oldest first).")
    approved: list[str] = Field(description="Ids approved by an operator.")
    refused: dict[str, int] = Field(
        description="Messages of agents not admitted, by reason: not_allowed, rate, cap, "
        "pending (waiting for approval), pending_full."
    )
    refused_ids: int = Field(description="Distinct agent ids refused.")


class ApprovalOut(BaseModel):
    """The answer to an approval."""

    agent: str = Field(description="The approved agent id.")
    was_pending: bool = Field(description="Whether it was waiting for approval.")
    rebirth_requested: bool = Field(description="Whether it was asked to re-announce now.")


class AdmissionCollector(Collector):
    """Metrics of admission: ``sef_agents_refused_total{reason}`` (messages of agents not
    admitted), ``sef_agents_refused_ids_total`` (distinct ids), ``sef_agents_pending``."""

    def __init__(self, ems: EMS) -> None:
        self.ems = ems

    def collect(self) -> Iterator[Metric]:
        """The metrics, read from the registry at scrape time."""
        registry = self.ems.registry
        refused = CounterMetricFamily(
            "sef_agents_refused",
            "Messages of agents not admitted into the registry, by reason.",
            labels=["reason"],
        )
        for reason in sorted(set(REFUSAL_REASONS) | set(registry.refused)):
            refused.add_metric([reason], registry.refused.get(reason, 0))
        yield refused
        yield CounterMetricFamily(
            "sef_agents_refused_ids",
            "Distinct agent ids refused admission.",
            value=registry.refused_ids,
        )
        yield GaugeMetricFamily(
            "sef_agents_pending", "Agents waiting for approval.", value=len(registry.pending)
        )


def install_agent_routes(app: FastAPI, ems: EMS, metrics: CollectorRegistry) -> None:
    """Add ``GET /agents``, ``POST /agents/{id}/reset``, ``POST /agents/{id}/approve`` and
    ``GET /admission`` to ``app``, and the admission metrics to ``metrics``."""
    metrics.register(AdmissionCollector(ems))
    errors: dict[int | str, dict[str, Any]] = {
        404: {"model": ErrorBody, "description": "Unknown agent."},
        422: {"model": ErrorBody, "description": "Invalid parameter."},
    }

    @app.get(
        "/agents",
        response_model=list[AgentOut],
        tags=["agents"],
        responses={
            200: {
                "description": "One page of agents, by id. Headers: X-Total-Count (agents "
                "matching the filters), X-Next-Cursor and Link rel=next (when more follow)."
            },
            422: errors[422],
        },
    )
    async def list_agents(
        request: Request,
        response: Response,
        status: Annotated[
            str | None, Query(description="Only agents with this status: online, offline, unknown.")
        ] = None,
        group: Annotated[
            str | None, Query(description="Only members of this group.", max_length=64)
        ] = None,
        home: Annotated[
            str | None,
            Query(description="Only agents behind this home (gateway).", max_length=64),
        ] = None,
        limit: Annotated[
            int, Query(ge=1, le=MAX_PAGE, description=f"Most agents (default {DEFAULT_PAGE}).")
        ] = DEFAULT_PAGE,
        cursor: Annotated[
            str | None,
            Query(
                description="Only agents after this id (X-Next-Cursor of the previous page).",
                max_length=64,
            ),
        ] = None,
        offset: Annotated[
            int, Query(ge=0, le=10_000_000, description="Skip this many (after cursor).")
        ] = 0,
    ) -> list[AgentOut]:
        """One page of the known agents, by id: status, interfaces, groups, last seen,
        last telemetry. Follow ``X-Next-Cursor`` for the next page."""
        if status is not None and status not in STATUSES:
            raise ApiError(
                422,
                f"status: expected one of {', '.join(STATUSES)}",
                {"param": "status", "value": status[:64]},
            )
        flag = {"online": True, "offline": False, "unknown": None}.get(status or "")

        home_of = ems.homes.home_of

        def where(record: AgentRecord) -> bool:
            return (
                (status is None or record.online is flag)
                and (group is None or group in record.groups)
                and (home is None or home_of.get(record.agent_id) == home)
            )

        records, total, more = ems.registry.page(
            after=cursor,
            offset=offset,
            limit=limit,
            where=where if (status, group, home) != (None, None, None) else None,
        )
        response.headers["X-Total-Count"] = str(total)
        if more and records:
            following = records[-1].agent_id
            response.headers["X-Next-Cursor"] = following
            params = {
                k: v for k, v in request.query_params.items() if k not in ("cursor", "offset")
            }
            params["cursor"] = following
            response.headers["Link"] = f'<{request.url.path}?{urlencode(params)}>; rel="next"'
        return [agent_out(ems, r) for r in records]

    @app.post(
        "/agents/{agent_id}/reset", response_model=AgentOut, responses=errors, tags=["agents"]
    )
    async def reset_agent(agent_id: AgentId) -> AgentOut:
        """Reset an agent's session state: forget its session number (bdseq) and presence,
        so that a forged or broken status cannot keep it out; ask it to re-announce."""
        if ems.registry.get(agent_id) is None:
            raise ApiError(404, f"unknown agent {agent_id!r}", {"agent": agent_id})
        return agent_out(ems, ems.reset_agent(agent_id))

    @app.post(
        "/agents/{agent_id}/approve", response_model=ApprovalOut, responses=errors, tags=["agents"]
    )
    async def approve_agent(agent_id: AgentId) -> ApprovalOut:
        """Admit an agent that waits for approval (or one not seen yet); it is asked to
        re-announce, and is then in the registry."""
        try:
            was_pending = ems.approve_agent(agent_id)
        except ValueError as exc:
            raise ApiError(422, f"bad agent id: {exc}", {"agent": agent_id[:64]}) from None
        return ApprovalOut(
            agent=agent_id,
            was_pending=was_pending,
            rebirth_requested=ems.request_rebirth and ems.bus.connected,
        )

    @app.get("/admission", response_model=AdmissionOut, tags=["agents"])
    async def admission() -> AdmissionOut:
        """The admission policy for new agents, the agents waiting for approval (at most
        1000 shown) and the refusal counters."""
        registry = ems.registry
        policy = registry.admission
        return AdmissionOut(
            allow=list(policy.allow),
            approval=policy.approval,
            max_agents=policy.max_agents,
            new_per_s=policy.new_per_s,
            burst=policy.burst,
            agents=len(registry.agents),
            pending=[PendingOut(**p.summary()) for p in list(registry.pending.values())[:1000]],
            approved=sorted(registry.approved)[:1000],
            refused=dict(registry.refused),
            refused_ids=registry.refused_ids,
        )

"""The EMS REST API: agents, telemetry history, commands, command log, live events, metrics.

:func:`create_app` builds a FastAPI app over a running :class:`~sef.ems.EMS`; OpenAPI
documentation is served at ``/docs`` (Swagger UI) and ``/openapi.json``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError

from sef import __version__
from sef.ems._caller import CallRefused, CallTarget
from sef.ems._records import AgentRecord
from sef.ems._service import EMS
from sef.ems.api._agents import install_agent_routes
from sef.ems.api._auth import ApiAuth
from sef.ems.api._commands import CommandStats, send_sequence
from sef.ems.api._deadletters import HealthOut, health_response, install_deadletters
from sef.ems.api._errors import ApiError, install_error_handlers
from sef.ems.api._events import EventHub
from sef.ems.api._gate import AuthMiddleware
from sef.ems.api._guards import install_guards
from sef.ems.api._homes import agent_out, install_home_routes
from sef.ems.api._limits import ApiLimits, install_limits
from sef.ems.api._login import install_login, principal_of
from sef.ems.api._metrics import metrics_registry
from sef.ems.api._models import (
    AgentDetail,
    AgentEventOut,
    CommandLogEntry,
    CommandRequest,
    CommandResult,
    ErrorBody,
    TelemetryOut,
    TelemetryPoint,
)
from sef.ems.api._openadr import install_openadr_routes
from sef.ems.api._target import install_target_routes
from sef.ems.api._times import EVERY_MAX_S, EVERY_MIN_S, TimeOutOfRange, parse_time
from sef.ems.api._web import install_dashboard
from sef.ems.store import Store

__all__ = ["create_app"]

T = TypeVar("T")

AgentId = Annotated[str, Path(description="Agent id.", max_length=64)]
GroupName = Annotated[str, Path(description="Group name.", max_length=64)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in (
        (400, "Bad query parameter (a time that does not parse, since after until)."),
        (404, "Unknown agent or group."),
        (409, "The agent is offline; nothing was sent."),
        (422, "Invalid body or parameters; for commands nothing was sent."),
        (503, "No store (history endpoints), store down, or broker not connected."),
    )
}

DESCRIPTION = """\
REST API of the SEF EMS (control server). Times are Unix seconds (EMS clock) unless said
otherwise; rates are kW, durations s. Every error is JSON `{"error": "...", "detail": ...}`.
Commands are validated completely (types, int16 ranges, command names, sequence rules)
before anything is sent on the bus.
"""


def create_app(
    ems: EMS,
    *,
    hub: EventHub | None = None,
    limits: ApiLimits | None = None,
    auth: ApiAuth | None = None,
    allowed_hosts: Iterable[str] | None = None,
    cors_origins: Iterable[str] = (),
) -> FastAPI:
    """A FastAPI app serving ``ems`` (started or not; requests need it started).

    ``auth`` (default: the tokens of ``ems.store``; :meth:`ApiAuth.open` for none) says
    who may do what (see ``_auth``); ``allowed_hosts`` (default: any) is the Host
    allow-list and ``cors_origins`` the origins allowed by CORS (default none: no CORS).
    The app's state holds ``ems``, ``hub`` (the :class:`EventHub` of ``/events``, installed
    into ``ems.on_event``), ``stats`` (command counters of ``/metrics``) and ``auth``.
    """
    app = FastAPI(title="SEF EMS API", version=__version__, description=DESCRIPTION)
    auth = auth if auth is not None else ApiAuth.of_store(ems.store)
    install_error_handlers(app)
    install_limits(app, limits or ApiLimits())
    app.add_middleware(AuthMiddleware, auth=auth)  # runs before the limits read a body
    install_guards(app, allowed_hosts, cors_origins)  # run first
    app.state.auth = auth
    hub = hub or EventHub(ems)
    hub.install()
    stats = CommandStats()
    registry = metrics_registry(ems, stats, hub)
    app.state.ems, app.state.hub, app.state.stats = ems, hub, stats

    def need_store() -> Store:
        if ems.store is None:
            raise ApiError(503, "this EMS runs without a store (start it with --db): no history")
        return ems.store

    async def in_thread(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return await asyncio.to_thread(func, *args, **kwargs)
        except SQLAlchemyError as exc:
            raise ApiError(
                503,
                f"store unavailable: {type(exc).__name__}",
                str(exc).splitlines()[0] if str(exc) else None,
            ) from None

    def known(agent_id: str) -> AgentRecord:
        record = ems.registry.get(agent_id)
        if record is None:
            raise ApiError(404, f"unknown agent {agent_id!r}", {"agent": agent_id})
        return record

    def when(name: str, text: str | None) -> float | None:
        if text is None or text == "":
            return None
        try:
            return parse_time(text, ems.clock.now())
        except TimeOutOfRange as exc:
            raise ApiError(422, f"{name}: {exc}", {"param": name, "value": text}) from None
        except ValueError as exc:
            raise ApiError(400, f"{name}: {exc}", {"param": name, "value": text}) from None

    @app.get(
        "/health",
        response_model=HealthOut,
        responses={503: {"model": HealthOut, "description": "Degraded: see reason."}},
        tags=["service"],
    )
    async def health() -> Response:
        """Whether the EMS is connected to the broker and its store is advancing; agent
        counts. 503 with a ``reason`` when degraded."""
        return health_response(ems)

    install_deadletters(app, ems)

    install_agent_routes(app, ems, registry)  # GET /agents (pages), reset, approve
    install_home_routes(app)  # GET /homes, /homes/{home}

    @app.get("/agents/{agent_id}", response_model=AgentDetail, responses=_ERRORS, tags=["agents"])
    async def show_agent(
        agent_id: AgentId,
        events: Annotated[
            int, Query(ge=0, le=1000, description="Recent presence events to include.")
        ] = 20,
    ) -> AgentDetail:
        """One agent, with its recent presence events from the store."""
        record = known(agent_id)
        rows: list[dict[str, Any]] = []
        if ems.store is not None and events:
            rows = await in_thread(ems.store.agent_events, agent_id, limit=events)
        return AgentDetail(
            **agent_out(ems, record).model_dump(), events=[AgentEventOut(**row) for row in rows]
        )

    @app.get(
        "/agents/{agent_id}/telemetry",
        response_model=TelemetryOut,
        responses=_ERRORS,
        tags=["agents"],
    )
    async def telemetry(
        agent_id: AgentId,
        key: Annotated[
            str | None,
            Query(
                description="Property 'interface.Property', or just 'Property' (e.g. Telemetry)."
            ),
        ] = None,
        since: Annotated[
            str | None,
            Query(description="From: Unix s, ISO 8601, or a duration ago (1h, 30m, 2d)."),
        ] = None,
        until: Annotated[str | None, Query(description="To (same forms as since).")] = None,
        every: Annotated[
            float | None,
            Query(
                ge=EVERY_MIN_S,
                le=EVERY_MAX_S,
                description="Downsample: the last value per property per this many s.",
            ),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=100_000, description="Most raw rows read.")] = 10_000,
    ) -> TelemetryOut:
        """Telemetry history of an agent (property updates), oldest first."""
        record = known(agent_id)
        store = need_store()
        start, end = when("since", since), when("until", until)
        if start is not None and end is not None and start > end:
            raise ApiError(400, f"since ({start}) is after until ({end})")
        if key is not None and "." not in key:
            matches = [k for k in record.properties if k.rsplit(".", 1)[-1] == key]
            key = matches[0] if len(matches) == 1 else key
        rows = await in_thread(store.telemetry, agent_id, key, start, end, every, limit)
        return TelemetryOut(
            agent=agent_id,
            key=key,
            since=start,
            until=end,
            every_s=every,
            count=len(rows),
            points=[TelemetryPoint(**row) for row in rows],
        )

    async def command(
        name: str, body: CommandRequest, request: Request, *, group: bool
    ) -> CommandResult:
        try:
            target = CallTarget(name, group=group)
        except CallRefused as exc:
            stats.by_status["rejected"] += 1
            shown = f"group:{name}" if group else name
            raise ApiError(
                404, f"unknown {'group' if group else 'agent'} {shown!r}: {exc}"
            ) from None
        sent_by = principal_of(request).name
        return await send_sequence(ems, target, body, stats, sent_by=sent_by)

    @app.post(
        "/agents/{agent_id}/commands",
        response_model=CommandResult,
        responses=_ERRORS,
        tags=["commands"],
    )
    async def command_agent(
        agent_id: AgentId, body: CommandRequest, request: Request
    ) -> CommandResult:
        """Send an event sequence to one agent (EnergyMethod) and return its reply.

        The sequence is validated before anything is sent; a refusal by the agent itself
        comes back as a reply with ``ok: false`` (status ``error``).
        """
        return await command(agent_id, body, request, group=False)

    @app.post(
        "/groups/{group}/commands",
        response_model=CommandResult,
        responses=_ERRORS,
        tags=["commands"],
    )
    async def command_group(
        group: GroupName,
        body: CommandRequest,
        request: Request,
    ) -> CommandResult:
        """Send an event sequence to every agent of a group with one publish; gather the
        replies of the known members until all answered or the timeout."""
        return await command(group, body, request, group=True)

    @app.get("/groups", tags=["agents"])
    async def groups() -> dict[str, list[str]]:
        """Known groups and their member agents."""
        out: dict[str, list[str]] = {}
        for record in ems.agents():
            for name in record.groups:
                out.setdefault(name, []).append(record.agent_id)
        return dict(sorted(out.items()))

    @app.get(
        "/commands", response_model=list[CommandLogEntry], responses=_ERRORS, tags=["commands"]
    )
    async def command_log(
        target: Annotated[str | None, Query(description="Agent id or group:NAME.")] = None,
        since: Annotated[
            str | None, Query(description="From: Unix s, ISO 8601 or a duration ago.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=10_000, description="Most entries.")] = 100,
    ) -> list[CommandLogEntry]:
        """The command log, newest first: what was sent (or refused), and the replies."""
        store = need_store()
        rows = await in_thread(
            store.commands, since=when("since", since), target=target, limit=limit
        )
        return [CommandLogEntry.model_validate(row) for row in rows]

    @app.get(
        "/events",
        tags=["service"],
        response_class=StreamingResponse,
        responses={
            200: {
                "content": {"text/event-stream": {}},
                "description": "Server-sent events, data is JSON.",
            }
        },
    )
    async def events(
        kind: Annotated[
            list[str] | None,
            Query(
                description="Only these kinds (repeatable): "
                "online, offline, property, "
                "about, discovered, gap..."
            ),
        ] = None,
        agent: Annotated[str | None, Query(description="Only this agent.")] = None,
    ) -> StreamingResponse:
        """Live registry events as server-sent events: a ``hello`` event first, then one
        ``event: KIND`` with a JSON ``data`` line per change (see docs/api.md)."""
        return StreamingResponse(
            hub.stream(kinds=set(kind or ()), agent=agent),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get(
        "/metrics",
        tags=["service"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    )
    async def metrics() -> Response:
        """Prometheus metrics (text exposition format)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    install_dashboard(app, ems)
    install_target_routes(app, ems)  # GET, PUT /control/target
    install_openadr_routes(app, ems)  # /openadr/status, events, policy, opt overrides
    install_login(app, auth)
    return app

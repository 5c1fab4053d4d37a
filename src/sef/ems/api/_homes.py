"""Homes (gateways) in the API: ``GET /homes`` and ``GET /homes/{home}`` (uplink state,
since when, agents behind each home, the relay's last statistics), and the ``home`` of an
agent in the agents' answers (:func:`agent_out`). The data is the EMS's
:class:`~sef.ems._homes.HomeBook`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import FastAPI, Path
from pydantic import BaseModel, Field

from sef.ems._homes import Home
from sef.ems._records import AgentRecord
from sef.ems._service import EMS
from sef.ems.api._errors import ApiError
from sef.ems.api._models import AgentOut, ErrorBody

__all__ = ["HomeDetail", "HomeOut", "HomeStatsOut", "agent_out", "install_home_routes"]

HomeId = Annotated[str, Path(description="Home (gateway) id.", max_length=64)]


class HomeStatsOut(BaseModel):
    """The last statistics of a home's relay (a field the gateway did not send is null)."""

    queued: int | None = Field(description="Messages waiting in the relay's queue.")
    queue_limit: int | None = Field(description="Most messages the queue holds.")
    dropped: int | None = Field(description="Messages dropped (queue full), since its start.")
    forwarded: int | None = Field(description="Messages forwarded upstream, since its start.")
    high_water: int | None = Field(description="Longest the queue has been.")
    uplink_down_s: float | None = Field(description="How long the uplink has been down, s.")
    ts: float | None = Field(description="When the gateway sent them, Unix s (its clock).")
    received: float | None = Field(description="When the EMS received them, Unix s (EMS clock).")


class HomeOut(BaseModel):
    """One home (gateway) as the EMS knows it."""

    home: str = Field(description="Home (gateway) id.")
    uplink: Literal["up", "down", "unknown"] = Field(
        description="The home's uplink to the control broker: up, down (its will), or "
        "unknown (no status heard yet)."
    )
    since: float = Field(
        description="When the EMS first saw the current uplink state (or the home), Unix s "
        "(EMS clock)."
    )
    agents: int = Field(description="Agents behind the home (its last agent list).")
    online_agents: int = Field(description="Of those, agents online.")
    stats: HomeStatsOut | None = Field(description="The relay's last statistics, or null.")


class HomeDetail(HomeOut):
    """One home, with the ids of the agents behind it."""

    agent_ids: list[str] = Field(description="Agents behind the home, sorted.")


def agent_out(ems: EMS, record: AgentRecord) -> AgentOut:
    """The API view of an agent, with its ``home`` (``None``: behind no gateway)."""
    return AgentOut.model_validate(
        {**record.summary(), "home": ems.homes.home_of.get(record.agent_id)}
    )


def _home_out(ems: EMS, home: Home) -> dict[str, Any]:
    def online(agent_id: str) -> bool:
        record = ems.registry.get(agent_id)
        return record is not None and record.online is True

    out = ems.homes.summary(home, online)
    stats = out.pop("stats")
    received = out.pop("stats_at")
    out.pop("stats_ts")
    out["stats"] = None if stats is None else HomeStatsOut(**stats, received=received)
    return out


def install_home_routes(app: FastAPI) -> None:
    """Add ``GET /homes`` and ``GET /homes/{home}`` to ``app`` (its ``state.ems``)."""
    errors: dict[int | str, dict[str, Any]] = {
        404: {"model": ErrorBody, "description": "Unknown home."},
        422: {"model": ErrorBody, "description": "Invalid parameter."},
    }

    @app.get("/homes", response_model=list[HomeOut], tags=["homes"])
    async def list_homes() -> list[HomeOut]:
        """Every home (gateway) the EMS heard of, by id: uplink state and since when,
        agents behind it (and how many are online), the relay's last statistics."""
        ems: EMS = app.state.ems
        return [HomeOut(**_home_out(ems, home)) for home in ems.homes.sorted_homes()]

    @app.get("/homes/{home}", response_model=HomeDetail, responses=errors, tags=["homes"])
    async def show_home(home: HomeId) -> HomeDetail:
        """One home, with the ids of the agents behind it."""
        ems: EMS = app.state.ems
        found = ems.homes.get(home)
        if found is None:
            raise ApiError(404, f"unknown home {home!r}", {"home": home})
        return HomeDetail(**_home_out(ems, found), agent_ids=ems.homes.members(home))

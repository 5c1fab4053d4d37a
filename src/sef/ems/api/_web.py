"""The web dashboard served by the EMS API, and the control series it charts.

The dashboard is static (``sef/ems/web/``: ``index.html``, ``app.js``, ``style.css``; no
CDN): ``/`` serves the page, ``/web/...`` its files; the page reads the JSON API and the
``/events`` stream. ``GET /control/series`` returns what a control application running
beside the EMS recorded in ``ems.control_series`` (see docs/dashboard.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from sef.ems._service import EMS

__all__ = ["WEB_DIR", "ControlSeries", "control_series", "install_dashboard"]

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
"""The dashboard's static files (package data ``sef/ems/web/*``)."""

SERIES_KEYS = ("t", "net_kw", "target_kw", "base_kw")


class ControlSeries(BaseModel):
    """Net load against target, recorded by the control application (empty lists when no
    control application runs beside the EMS)."""

    t: list[float] = Field(description="Times, Unix s (EMS clock), oldest first.")
    net_kw: list[float | None] = Field(description="Net load at each time, kW.")
    target_kw: list[float | None] = Field(description="Target net load at each time, kW.")
    base_kw: list[float | None] = Field(description="Base load (before DER control), kW.")


def control_series(ems: EMS, since: float | None = None) -> ControlSeries:
    """``ems.control_series`` (a dict of lists named as :data:`SERIES_KEYS`) if the EMS has
    one, else empty lists; with ``since``, only the points at or after that time."""
    raw: Any = getattr(ems, "control_series", None)
    data: dict[str, list[Any]] = {key: [] for key in SERIES_KEYS}
    if isinstance(raw, dict):
        t = [float(x) for x in list(raw.get("t") or ())]
        data["t"] = t
        for key in SERIES_KEYS[1:]:
            values = list(raw.get(key) or ())
            values = values[: len(t)] + [None] * (len(t) - len(values))
            data[key] = [None if v is None else float(v) for v in values]
        if since is not None:
            first = next((i for i, x in enumerate(t) if x >= since), len(t))
            data = {key: values[first:] for key, values in data.items()}
    return ControlSeries(**data)


def install_dashboard(app: FastAPI, ems: EMS) -> None:
    """Serve the dashboard at ``/`` (files under ``/web``) and ``GET /control/series``."""

    @app.get("/control/series", response_model=ControlSeries, tags=["control"])
    async def series(since: float | None = None) -> ControlSeries:
        """Net load, target and base load recorded by the control application running
        beside the EMS (``ems.control_series``); empty lists when there is none.
        ``since``: only points at or after this Unix time."""
        return control_series(ems, since)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/web", StaticFiles(directory=WEB_DIR, check_dir=False), name="web")

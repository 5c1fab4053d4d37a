"""The EMS REST API (FastAPI): agents, telemetry history, commands, events, metrics.

:func:`create_app` builds the app over an :class:`~sef.ems.EMS`; :func:`serve_api` serves
it with uvicorn in the running event loop (``sef ems --api HOST:PORT``). See docs/api.md.
"""

from sef.ems.api._app import create_app
from sef.ems.api._events import EventHub
from sef.ems.api._limits import ApiLimits
from sef.ems.api._server import ApiServer, parse_listen, serve_api
from sef.ems.api._times import parse_time

__all__ = [
    "ApiLimits",
    "ApiServer",
    "EventHub",
    "create_app",
    "parse_listen",
    "parse_time",
    "serve_api",
]

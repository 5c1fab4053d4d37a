"""The EMS REST API (FastAPI): agents, telemetry history, commands, events, metrics.

:func:`create_app` builds the app over an :class:`~sef.ems.EMS`; :func:`serve_api` serves
it with uvicorn in the running event loop (``sef ems --api HOST:PORT``); :class:`ApiAuth`
says who may use it (bearer tokens of ``sef api-token``, roles viewer/operator/admin).
See docs/api.md.
"""

from sef.ems.api._app import create_app
from sef.ems.api._auth import ApiAuth, Principal
from sef.ems.api._events import EventHub
from sef.ems.api._guards import default_hosts
from sef.ems.api._limits import ApiLimits
from sef.ems.api._server import ApiServer, is_loopback, parse_listen, serve_api
from sef.ems.api._times import parse_time

__all__ = [
    "ApiAuth",
    "ApiLimits",
    "ApiServer",
    "EventHub",
    "Principal",
    "create_app",
    "default_hosts",
    "is_loopback",
    "parse_listen",
    "parse_time",
    "serve_api",
]

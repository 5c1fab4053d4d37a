"""A small OpenADR 3 VTN for the tests: FastAPI on a free loopback port, in the test's loop.

No installable open OpenADR 3 VTN exists (docs/openadr-plan.md, section 3), so this one
checks every request body **and** every response body with the pydantic models of the
installed ``openadr3`` library (no specification files are copied here), strictly:
``model_validate`` for types and required fields, then a round trip
(``model_dump(by_alias=True, exclude_unset=True)`` must equal the body) so unknown,
misspelt or retyped fields at any depth are refused (400). The library's models lack a few
spec fields; those are allowed by name (:data:`ALLOWED_EXTRA`) and checked here instead.

Routes: ``GET /auth/server``, ``POST /auth/token`` (client credentials → bearer token with
the client's scopes: ``openadr3.VEN_SCOPES`` or ``BL_SCOPES``), ``GET/POST /programs``,
``GET/PUT/DELETE /programs/{id}``, ``GET/POST /events`` (query ``programID``, ``targets``,
``skip``, ``limit``), ``GET/PUT/DELETE /events/{id}``, ``GET/POST /vens``,
``GET/POST /reports``. Every route but the two auth routes wants a bearer token (401
without a valid one, 403 without the scope).
Ids and ``createdDateTime``/``modificationDateTime`` are stamped by the VTN on ``clock``
(the EMS clock, team decision 1). Tests read :attr:`Oa3Vtn.requests` (every request and its
status) and :attr:`Oa3Vtn.errors` (every refusal, in words).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qs

import httpx
import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from openadr3 import BL_SCOPES, VEN_SCOPES
from openadr3.entities.raw import RawEvent, RawProgram, RawReport, RawVen
from pydantic import BaseModel, ValidationError
from starlette.middleware.base import RequestResponseEndpoint

ALLOWED_EXTRA: dict[type[BaseModel], frozenset[str]] = {
    # OpenADR 3 reports carry programID (string); openadr3 0.5.0's RawReport has no such field
    RawReport: frozenset({"programID"}),
}
"""Spec fields the library's models lack, allowed by name (their values must be strings)."""

MAX_PAGE = 50
"""The most objects one list answer holds (``limit`` is clipped to it)."""

VEN_CLIENT = ("ven-1", "ven-secret")
BL_CLIENT = ("bl-1", "bl-secret")


def iso(time_s: float) -> str:
    """Unix s → RFC 3339 UTC."""
    return datetime.fromtimestamp(time_s, UTC).isoformat().replace("+00:00", "Z")


def limit_event(program_id: str, start_s: float, **extra: Any) -> dict[str, Any]:
    """An IMPORT_CAPACITY_LIMIT event: 12.5 / 10 / 14 kW, 15 + 15 + 60 min, randomize 5 min."""
    return {
        "programID": program_id,
        "eventName": "feeder limit",
        "targets": ["north"],
        "payloadDescriptors": [
            {
                "objectType": "EVENT_PAYLOAD_DESCRIPTOR",
                "payloadType": "IMPORT_CAPACITY_LIMIT",
                "units": "KW",
            }
        ],
        "reportDescriptors": [{"payloadType": "USAGE", "readingType": "DIRECT_READ"}],
        "intervalPeriod": {"start": iso(start_s), "duration": "PT15M", "randomizeStart": "PT5M"},
        "intervals": [
            {"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [12.5]}]},
            {"id": 1, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [10.0]}]},
            {
                "id": 2,
                "intervalPeriod": {"duration": "PT1H"},
                "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [14.0]}],
            },
        ],
        **extra,
    }


class Refused(Exception):
    """A request the VTN refuses: HTTP ``status`` with ``detail``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _difference(sent: Any, back: Any, path: str = "") -> str:
    """Where two JSON values first differ (for the refusal text)."""
    if isinstance(sent, dict) and isinstance(back, dict):
        for key in sorted(set(sent) | set(back)):
            if key not in back:
                return f"unknown field {path}{key}"
            if key not in sent:
                return f"field {path}{key} added"
            if sent[key] != back[key]:
                return _difference(sent[key], back[key], f"{path}{key}.")
    if isinstance(sent, list) and isinstance(back, list) and len(sent) == len(back):
        for index, (a, b) in enumerate(zip(sent, back, strict=True)):
            if a != b:
                return _difference(a, b, f"{path}{index}.")
    return f"{path.rstrip('.') or 'body'} reshaped: {sent!r} -> {back!r}"


def strict(model: type[BaseModel], body: Any) -> dict[str, Any]:
    """``body`` checked against the library's ``model``: types, required fields, and a round
    trip that refuses any field the model does not know (except :data:`ALLOWED_EXTRA`).

    Raises:
        Refused: 400 with the first problem.
    """
    if not isinstance(body, dict):
        raise Refused(400, f"{model.__name__}: body is not a JSON object")
    allowed = ALLOWED_EXTRA.get(model, frozenset())
    for name in allowed & set(body):
        if not isinstance(body[name], str):
            raise Refused(400, f"{model.__name__}: {name} must be a string")
    core = {key: value for key, value in body.items() if key not in allowed}
    try:
        checked = model.model_validate(core)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise Refused(400, f"{model.__name__}: {where}: {first['msg']}") from exc
    back = checked.model_dump(by_alias=True, exclude_unset=True)
    if back != core:
        raise Refused(400, f"{model.__name__}: {_difference(core, back)}")
    return body


@dataclass(frozen=True)
class Logged:
    """One request the VTN answered."""

    method: str
    path: str
    query: str
    status: int


class Oa3Vtn:
    """The test VTN; :meth:`start` serves it, :meth:`stop` ends it (the store stays, so a
    restart on the same :attr:`port` simulates an outage)."""

    def __init__(self, now: Any, *, clients: dict[str, tuple[str, frozenset[str]]] | None = None):
        """``now()``: the clock (Unix s) the VTN stamps objects with. ``clients``: client id →
        (secret, scopes); default :data:`VEN_CLIENT` with ``VEN_SCOPES`` and
        :data:`BL_CLIENT` with ``BL_SCOPES``."""
        self.now = now
        self.clients = clients or {
            VEN_CLIENT[0]: (VEN_CLIENT[1], VEN_SCOPES),
            BL_CLIENT[0]: (BL_CLIENT[1], BL_SCOPES),
        }
        self.tokens: dict[str, frozenset[str]] = {}
        self.programs: dict[str, dict[str, Any]] = {}
        self.events: dict[str, dict[str, Any]] = {}
        self.reports: dict[str, dict[str, Any]] = {}
        self.vens: dict[str, dict[str, Any]] = {}
        self.unchecked: set[str] = set()
        """Ids stored by :meth:`put_raw_event`: their responses are not checked."""
        self.requests: list[Logged] = []
        self.errors: list[str] = []
        self.port = 0
        self._last_stamp = 0.0
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._bl: httpx.AsyncClient | None = None
        self.app = self._build()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- serving -----------------------------------------------------------------------

    async def start(self) -> Oa3Vtn:
        """Serve on :attr:`port` (a free one the first time)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        sock.setblocking(False)
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False)
        server = _Server(config)
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name="oa3-vtn")
        while not server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        """Stop serving (the store is kept)."""
        if self._bl is not None:
            await self._bl.aclose()
            self._bl = None
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.gather(self._task, return_exceptions=True), 5)
        except TimeoutError:
            self._task.cancel()
        self._server = self._task = None

    # -- helpers for tests ---------------------------------------------------------------

    def stamp(self) -> str:
        """Now on the VTN's clock as RFC 3339 (strictly increasing)."""
        value = max(self.now(), self._last_stamp + 1e-6)
        self._last_stamp = value
        return datetime.fromtimestamp(value, UTC).isoformat().replace("+00:00", "Z")

    def put_raw_event(self, raw: dict[str, Any]) -> str:
        """Store ``raw`` as an event without any check (a misbehaving VTN); returns its id."""
        event_id = str(raw.get("id") or uuid.uuid4())
        self.events[event_id] = {**raw, "id": event_id}
        self.unchecked.add(event_id)
        return event_id

    async def bl(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """A request as the business logic (BL scopes), over HTTP."""
        if self._bl is None:
            self._bl = httpx.AsyncClient(base_url=self.url, timeout=10)
            token = await self._bl.post(
                "/auth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": BL_CLIENT[0],
                    "client_secret": BL_CLIENT[1],
                },
            )
            self._bl.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        return await self._bl.request(method, path, json=body)

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` as the BL; the created object (asserts 201)."""
        answer = await self.bl("POST", path, body)
        assert answer.status_code == 201, answer.text
        created: dict[str, Any] = answer.json()
        return created

    # -- the app -------------------------------------------------------------------------

    def _auth(self, request: Request, scope: str) -> None:
        header = request.headers.get("authorization", "")
        kind, _, token = header.partition(" ")
        if kind.lower() != "bearer" or token not in self.tokens:
            raise Refused(401, "missing or unknown bearer token")
        if scope not in self.tokens[token]:
            raise Refused(403, f"token lacks scope {scope}")

    def _out(self, model: type[BaseModel], obj: dict[str, Any]) -> dict[str, Any]:
        """A response object, checked like a request (a failure is the VTN's own bug)."""
        if obj.get("id") in self.unchecked:
            return obj
        try:
            return strict(model, obj)
        except Refused as exc:
            raise Refused(500, f"response: {exc.detail}") from exc

    def _stamped(
        self, body: dict[str, Any], kind: str, old: dict[str, Any] | None
    ) -> dict[str, Any]:
        stamp = self.stamp()
        return {
            **body,
            "id": old["id"] if old else str(uuid.uuid4()),
            "createdDateTime": old["createdDateTime"] if old else stamp,
            "modificationDateTime": stamp,
            "objectType": kind,
        }

    async def _json(self, request: Request) -> Any:
        try:
            return await request.json()
        except ValueError as exc:
            raise Refused(400, "body is not JSON") from exc

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.exception_handler(Refused)
        async def refused(request: Request, exc: Refused) -> Response:
            self.errors.append(f"{exc.status} {request.method} {request.url.path}: {exc.detail}")
            problem = {"type": "about:blank", "title": exc.detail, "status": exc.status}
            return JSONResponse(problem, status_code=exc.status)

        @app.middleware("http")
        async def log(request: Request, call_next: RequestResponseEndpoint) -> Response:
            answer = await call_next(request)
            self.requests.append(
                Logged(request.method, request.url.path, request.url.query, answer.status_code)
            )
            return answer

        @app.get("/auth/server")
        async def auth_server(request: Request) -> dict[str, str]:
            return {"tokenURL": f"{self.url}/auth/token"}

        @app.post("/auth/token")
        async def token(request: Request) -> Response:
            form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
            if form.get("grant_type") != "client_credentials":
                raise Refused(400, "unsupported_grant_type")
            known = self.clients.get(form.get("client_id", ""))
            if known is None or known[0] != form.get("client_secret"):
                raise Refused(401, "invalid_client")
            scopes = known[1]
            if "scope" in form:
                scopes = scopes & frozenset(form["scope"].split())
                if not scopes:
                    raise Refused(400, "invalid_scope")
            issued = uuid.uuid4().hex
            self.tokens[issued] = scopes
            body = {"access_token": issued, "token_type": "Bearer", "expires_in": 3600}
            return JSONResponse(body)

        def listing(items: list[dict[str, Any]], skip: int, limit: int) -> list[dict[str, Any]]:
            if skip < 0 or limit < 0:
                raise Refused(400, "skip and limit must be >= 0")
            return items[skip : skip + min(limit, MAX_PAGE)]

        @app.get("/programs")
        async def get_programs(
            request: Request, skip: int = 0, limit: int = MAX_PAGE
        ) -> list[dict[str, Any]]:
            self._auth(request, "read_all")
            found = listing(list(self.programs.values()), skip, limit)
            return [self._out(RawProgram, p) for p in found]

        @app.post("/programs", status_code=201)
        async def post_program(request: Request) -> dict[str, Any]:
            self._auth(request, "write_programs")
            body = strict(RawProgram, await self._json(request))
            program = self._stamped(body, "PROGRAM", None)
            self.programs[program["id"]] = program
            return self._out(RawProgram, program)

        @app.get("/programs/{program_id}")
        async def get_program(request: Request, program_id: str) -> dict[str, Any]:
            self._auth(request, "read_all")
            if program_id not in self.programs:
                raise Refused(404, f"no program {program_id}")
            return self._out(RawProgram, self.programs[program_id])

        @app.delete("/programs/{program_id}")
        async def delete_program(request: Request, program_id: str) -> dict[str, Any]:
            self._auth(request, "write_programs")
            if program_id not in self.programs:
                raise Refused(404, f"no program {program_id}")
            return self._out(RawProgram, self.programs.pop(program_id))

        @app.get("/events")
        async def get_events(
            request: Request,
            program_id: Annotated[str | None, Query(alias="programID")] = None,
            targets: Annotated[list[str] | None, Query()] = None,
            skip: int = 0,
            limit: int = MAX_PAGE,
        ) -> list[dict[str, Any]]:
            self._auth(request, "read_all")
            found = [
                e
                for e in self.events.values()
                if (program_id is None or e.get("programID") == program_id)
                and (not targets or not e.get("targets") or set(targets) & set(e["targets"]))
            ]
            return [self._out(RawEvent, e) for e in listing(found, skip, limit)]

        @app.post("/events", status_code=201)
        async def post_event(request: Request) -> dict[str, Any]:
            self._auth(request, "write_events")
            body = strict(RawEvent, await self._json(request))
            if body["programID"] not in self.programs:
                raise Refused(400, f"no program {body['programID']}")
            event = self._stamped(body, "EVENT", None)
            self.events[event["id"]] = event
            return self._out(RawEvent, event)

        @app.get("/events/{event_id}")
        async def get_event(request: Request, event_id: str) -> dict[str, Any]:
            self._auth(request, "read_all")
            if event_id not in self.events:
                raise Refused(404, f"no event {event_id}")
            return self._out(RawEvent, self.events[event_id])

        @app.put("/events/{event_id}")
        async def put_event(request: Request, event_id: str) -> dict[str, Any]:
            self._auth(request, "write_events")
            if event_id not in self.events:
                raise Refused(404, f"no event {event_id}")
            body = strict(RawEvent, await self._json(request))
            event = self._stamped(body, "EVENT", self.events[event_id])
            self.events[event_id] = event
            return self._out(RawEvent, event)

        @app.delete("/events/{event_id}")
        async def delete_event(request: Request, event_id: str) -> dict[str, Any]:
            self._auth(request, "write_events")
            if event_id not in self.events:
                raise Refused(404, f"no event {event_id}")
            return self._out(RawEvent, self.events.pop(event_id))

        @app.get("/vens")
        async def get_vens(
            request: Request, skip: int = 0, limit: int = MAX_PAGE
        ) -> list[dict[str, Any]]:
            self._auth(request, "read_all")
            found = listing(list(self.vens.values()), skip, limit)
            return [self._out(RawVen, v) for v in found]

        @app.post("/vens", status_code=201)
        async def post_ven(request: Request) -> dict[str, Any]:
            self._auth(request, "write_vens")
            body = strict(RawVen, await self._json(request))
            if any(v["venName"] == body["venName"] for v in self.vens.values()):
                raise Refused(409, f"VEN {body['venName']} exists")
            ven = self._stamped(body, "VEN", None)
            self.vens[ven["id"]] = ven
            return self._out(RawVen, ven)

        @app.post("/reports", status_code=201)
        async def post_report(request: Request) -> dict[str, Any]:
            self._auth(request, "write_reports")
            body = strict(RawReport, await self._json(request))
            if body["eventID"] not in self.events:
                raise Refused(400, f"no event {body['eventID']}")
            report = self._stamped(body, "REPORT", None)
            self.reports[report["id"]] = report
            return self._out(RawReport, report)

        @app.get("/reports")
        async def get_reports(
            request: Request, skip: int = 0, limit: int = MAX_PAGE
        ) -> list[dict[str, Any]]:
            self._auth(request, "read_all")
            found = listing(list(self.reports.values()), skip, limit)
            return [self._out(RawReport, r) for r in found]

        return app


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers (the test owns the process)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

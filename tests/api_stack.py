"""The API test stack: real Mosquitto, an EMS with a store (SQLite or PostgreSQL) or none,
three in-process agents, and the API served by uvicorn on a free port with authentication
on: one token per role (in the store when there is one, else in memory); the stack's HTTP
client sends the admin's."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from sef.agents import Agent, method
from sef.clock import Clock
from sef.ems import EMS
from sef.ems.api import ApiAuth, ApiServer, serve_api
from sef.ems.store import ApiRole, Store, TokenStore
from sef.interface import DEMO_INTERFACE, Variant
from support import wait_for

T0 = math.floor(time.time() / 3600) * 3600 - 7200
"""Start of the test telemetry, Unix s: a whole hour, two hours ago."""


class ManualClock(Clock):
    """A clock that reads what the test set (agents' telemetry times)."""

    def __init__(self, start: float) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return time.monotonic()

    def spec(self) -> str:
        return "real"


class MeterAgent(Agent):
    """Implements the demo interface; records executed sequences; publishes telemetry."""

    interfaces = (DEMO_INTERFACE,)

    def __init__(self, agent_id: str, broker: str, **kwargs: Any) -> None:
        super().__init__(agent_id, broker, **kwargs)
        self.executed: list[list[tuple[str, int, int]]] = []

    async def on_start(self) -> None:
        self.set_property(DEMO_INTERFACE, "AssetName", self.agent_id)
        self.publish(-1, 50.0)

    def publish(self, timestamp: int, soc: float) -> None:
        self.set_property(
            DEMO_INTERFACE,
            "Telemetry",
            {
                "TimeStamp": Variant("u", max(timestamp, 0)),
                "Sys_SOC": Variant("d", soc),
                "Sys_Rated_Energy": Variant("d", 60.0),
            },
        )

    @method(DEMO_INTERFACE, "EnergyMethod")
    def energy_method(self, cmds: list[tuple[str, int, int]]) -> None:
        self.executed.append(cmds)


@dataclass
class Stack:
    ems: EMS
    store: Store | None
    agents: dict[str, MeterAgent]
    clocks: dict[str, ManualClock]
    server: ApiServer
    http: httpx.AsyncClient
    broker: str
    tokens: dict[str, str] = field(default_factory=dict)
    """Token by role: ``viewer`` (name ``victor``), ``operator`` (``olivia``), ``admin``
    (``ada``)."""

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, role: str | None) -> httpx.AsyncClient:
        """A new HTTP client of the API sending the token of ``role`` (``None``: none);
        close it after use."""
        headers = {} if role is None else {"Authorization": f"Bearer {self.tokens[role]}"}
        return httpx.AsyncClient(base_url=self.url, timeout=10.0, headers=headers)


TOKEN_NAMES: dict[ApiRole, str] = {"viewer": "victor", "operator": "olivia", "admin": "ada"}
"""The stack's token names by role."""


def make_tokens(store: Store | None) -> tuple[ApiAuth, dict[str, str]]:
    """The API's authentication with one token per role (:data:`TOKEN_NAMES`): kept in
    ``store`` (hashes) when there is one, else in memory."""
    auth = ApiAuth.of_store(store)
    tokens: dict[str, str] = {}
    for role, name in TOKEN_NAMES.items():
        if store is not None:
            tokens[role] = TokenStore(store).create(name, role)
        else:
            tokens[role] = f"{name}-{role}-token-for-tests-only-0123456789"
            auth.add_token(name, role, tokens[role])
    return auth, tokens


async def start_stack(broker: str, db: str | None) -> Stack:
    store = Store.open(db) if db is not None else None
    clocks = {name: ManualClock(T0 - 1000) for name in ("bat-1", "bat-2", "wh-9")}
    groups = {"bat-1": ["feeder-1"], "bat-2": ["feeder-1"], "wh-9": ["feeder-2"]}
    agents = {
        name: MeterAgent(name, broker, groups=groups[name], clock=clocks[name], keepalive_s=2)
        for name in clocks
    }
    for agent in agents.values():
        await agent.start()
    ems = EMS(broker, "ems-api", keepalive_s=2, store=store)
    await ems.start()
    await wait_for(
        lambda: (
            len([a for a in ems.agents() if a.online and a.groups]) == 3
            and all(a.properties for a in ems.agents())
        ),
        5.0,
    )
    auth, tokens = make_tokens(store)
    server = await serve_api(ems, "127.0.0.1", 0, auth=auth)
    http = httpx.AsyncClient(
        base_url=server.url,
        timeout=10.0,
        headers={"Authorization": f"Bearer {tokens['admin']}"},
    )
    return Stack(ems, store, agents, clocks, server, http, broker, tokens)


async def stop_stack(stack: Stack) -> None:
    await stack.http.aclose()
    await stack.server.stop()
    await stack.ems.stop()
    for agent in stack.agents.values():
        if agent.bus.connected:
            await agent.stop()
    if stack.store is not None:
        stack.store.close()

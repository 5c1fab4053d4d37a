"""The dashboard test stack: real Mosquitto, an EMS with a SQLite store and its API on a
free port, three virtual batteries and three water heaters (UCM agent ⇄ SGD emulator over a
pseudo-terminal, in-process), all on one scaled clock; and headless Debian Chromium driven
by Playwright. The API authenticates: the stack holds an operator token (``olga``, for the
browser) and an admin token (``adam``, for its HTTP client)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Page

from sef.agents import Agent
from sef.agents.ucm import UCMAgent
from sef.agents.virtual_battery import VirtualBatteryAgent
from sef.clock import ScaledClock
from sef.ems import EMS, AgentRecord
from sef.ems.api import ApiServer, serve_api
from sef.ems.store import Store, TokenStore
from sef.emulators.waterheater import SGDEmulator, run_sgd_emulator
from sef.protocols.cta2045 import LinkTiming
from support import wait_for

CHROMIUM = os.environ.get("SEF_CHROMIUM", "/usr/bin/chromium")
"""Debian's Chromium (``apt-get install chromium``); Playwright drives it, no download."""

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
"""Flags that work on the sandboxed test machines (no network beyond localhost)."""

ARTIFACTS = (
    Path(os.environ.get("SEF_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts"))
    / "web"
)
"""Screenshots are kept here (and in the test's tmp_path)."""

SPEED = 20.0
"""Clock speed of the stack: a battery telemetry step of 10 clock s is 0.5 s real, and a
600 s event lasts 30 s real (longer than a test needs to see it)."""

#: Link timing of the in-process CTA-2045 links: quick gaps, tolerant timeouts (several
#: browsers and stacks may share a loaded machine; a link that drops fails the test).
LINK_TIMING = LinkTiming(
    ack_delay_s=0.005,
    ack_timeout_s=1.0,
    response_delay_s=0.01,
    response_timeout_s=3.0,
    inter_message_s=0.01,
    retry_delay_s=0.1,
)

BATTERIES = {"bat-1": 0.35, "bat-2": 0.55, "bat-3": 0.75}
WATER_HEATERS = ("wh-1", "wh-2", "wh-3")


@dataclass
class WebStack:
    clock: ScaledClock
    store: Store
    ems: EMS
    batteries: dict[str, VirtualBatteryAgent]
    heaters: dict[str, UCMAgent]
    server: ApiServer
    http: httpx.AsyncClient
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stopped: set[str] = field(default_factory=set)
    tokens: dict[str, str] = field(default_factory=dict)
    """Token by role: ``operator`` (name ``olga``) and ``admin`` (``adam``)."""

    @property
    def url(self) -> str:
        return self.server.url

    def agents(self) -> list[Agent]:
        """The batteries and the water heaters."""
        return [*self.batteries.values(), *self.heaters.values()]

    async def stop_agent(self, name: str) -> None:
        """Stop an agent cleanly (it announces its shutdown)."""
        agent = self.batteries.get(name) or self.heaters[name]
        self.stopped.add(name)
        await agent.stop()


async def start_web_stack(broker: str, db_path: Path) -> WebStack:
    clock = ScaledClock(speed=SPEED)
    store = Store.open(f"sqlite:///{db_path}")
    ems = EMS(broker, "ems-web", clock=clock, store=store, keepalive_s=5)
    await ems.start()
    tokens = {
        "operator": TokenStore(store).create("olga", "operator"),
        "admin": TokenStore(store).create("adam", "admin"),
    }
    server = await serve_api(ems, "127.0.0.1", 0)
    http = httpx.AsyncClient(
        base_url=server.url,
        timeout=10.0,
        headers={"Authorization": f"Bearer {tokens['admin']}"},
    )
    stack = WebStack(clock, store, ems, {}, {}, server, http, tokens=tokens)
    try:
        for name, soc in BATTERIES.items():
            stack.batteries[name] = VirtualBatteryAgent(
                name,
                broker,
                soc=soc,
                step_s=10.0,
                clock=clock,
                groups=["batteries", "feeder-1"],
                keepalive_s=5,
            )
        for i, name in enumerate(WATER_HEATERS):
            sgd = SGDEmulator(clock, timing=LINK_TIMING, serial=f"SEF-WH-{i + 1:04d}")
            ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            stack.tasks.append(
                asyncio.create_task(
                    run_sgd_emulator(pty=True, emulator=sgd, on_ready=ready.set_result)
                )
            )
            path = await asyncio.wait_for(ready, 5.0)
            stack.heaters[name] = UCMAgent(
                name,
                broker,
                serial_port=path,
                poll_s=0.3,
                clock=clock,
                keepalive_s=5,
                timing=LINK_TIMING,
                link_timeout_s=5.0,
                groups=["waterheaters", "feeder-1"],
            )
        for agent in stack.agents():
            await agent.start()

        def ready_all() -> bool:
            agents = ems.agents()
            return len(agents) == 6 and all(a.online and a.groups and _telemetry(a) for a in agents)

        await wait_for(ready_all, 10.0)
    except BaseException:
        await stop_web_stack(stack)
        raise
    return stack


def _telemetry(record: AgentRecord) -> bool:
    """Whether the EMS has telemetry of the agent (a water heater's once its link is up)."""
    for key, entry in record.properties.items():
        if key.endswith(".Telemetry"):
            value = entry.value
            return "Sys_SOC" in value or value.get("Link", ["s", ""])[1] == "up"
    return False


async def bounded(name: str, awaitable: Awaitable[Any], timeout_s: float = 15.0) -> None:
    """Await a teardown step; a step that hangs fails the test by name instead of
    running into the suite's timeout."""
    try:
        await asyncio.wait_for(awaitable, timeout_s)
    except TimeoutError:
        raise AssertionError(f"teardown: {name} did not finish in {timeout_s} s") from None


async def stop_web_stack(stack: WebStack) -> None:
    await bounded("http client", stack.http.aclose())
    await bounded("API server", stack.server.stop())
    for agent in stack.agents():
        # every agent, connected or not: a running UCM keeps reopening its port
        if agent.agent_id not in stack.stopped:
            await bounded(agent.agent_id, stack.stop_agent(agent.agent_id))
    await bounded("EMS", stack.ems.stop())
    for task in stack.tasks:
        task.cancel()
    results = await asyncio.wait_for(asyncio.gather(*stack.tasks, return_exceptions=True), 15)
    assert all(isinstance(r, asyncio.CancelledError | None) for r in results), results
    stack.store.close()


def keep_screenshot(path: Path) -> Path:
    """Copy a screenshot into :data:`ARTIFACTS`; return the kept path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    kept = ARTIFACTS / path.name
    shutil.copyfile(path, kept)
    return kept


async def screenshot(page: Page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"dashboard-{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return keep_screenshot(path)


async def points(page: Page, chart: str) -> int:
    return int(await page.get_attribute(f"#{chart}", "data-points") or 0)


async def wait_growth(page: Page, chart: str, more: int, timeout_s: float = 8.0) -> int:
    """Wait until the chart has ``more`` points more than now; return the new count."""
    start = await points(page, chart)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = await points(page, chart)
        if now >= start + more:
            return now
        await page.wait_for_timeout(100)
    raise AssertionError(f"{chart}: {start} points, not {more} more in {timeout_s} s")


def row(page: Page, agent: str) -> str:
    return f"#agents tbody tr[data-agent='{agent}']"

"""Homes from a real ``sef.gateway.Gateway``: its local Mosquitto and uplink relay (through
a cuttable TCP link) to the control Mosquitto, an agent behind it and an EMS with its API.
``/homes`` shows the home up with its agent and the relay's stats, ``/agents?home=`` the
agent; cutting the uplink (the relay's will ``0``) turns the home down, restoring it up."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import httpx

from sef.agents.virtual_battery import VirtualBatteryAgent
from sef.bus import BrokerURL
from sef.ems import EMS
from sef.ems.api import ApiAuth, serve_api
from sef.gateway import Gateway
from support import wait_for
from tcp_cut import CuttableLink


async def test_home_of_a_real_gateway(broker_url: str, tmp_path: Path) -> None:
    (tmp_path / "gateway").mkdir()
    link = CuttableLink(BrokerURL.parse(broker_url).port)
    await link.restore()
    gateway = Gateway(
        BrokerURL("127.0.0.1", link.port),
        "home-a",
        advertise=False,
        keepalive_s=2,
        restart_s=(1, 1),
        workdir=tmp_path / "gateway",
    )
    ems = EMS(broker_url, f"ems-homes-{time.monotonic_ns() % 10**9}", keepalive_s=2)
    async with contextlib.AsyncExitStack() as running:
        running.push_async_callback(link.cut)
        await gateway.start()
        running.push_async_callback(gateway.stop)
        await ems.start()
        running.push_async_callback(ems.stop)
        agent = VirtualBatteryAgent("bat-a", gateway.url, step_s=1.0, keepalive_s=2)
        await agent.start()
        running.push_async_callback(agent.stop)
        server = await serve_api(ems, "127.0.0.1", 0, auth=ApiAuth.open())
        running.push_async_callback(server.stop)
        http = httpx.AsyncClient(base_url=server.url, timeout=10.0)
        running.push_async_callback(http.aclose)
        await check_home(ems, http, link)


async def check_home(ems: EMS, http: httpx.AsyncClient, link: CuttableLink) -> None:
    """The home's course through an uplink cut, as the API shows it."""

    async def home() -> dict[str, Any]:
        answer = await http.get("/homes/home-a")
        return dict(answer.json()) if answer.status_code == 200 else {}

    async def until(check: Any, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = await home()
            if found and check(found):
                return found
            await ems.settle(0.05, 0.2)
        raise AssertionError(f"home-a never matched: {await home()}")

    up = await until(
        lambda h: h["uplink"] == "up" and h["agent_ids"] == ["bat-a"] and h["online_agents"],
        15.0,
    )
    listed = (await http.get("/agents", params={"home": "home-a"})).json()
    assert [(a["id"], a["home"]) for a in listed] == [("bat-a", "home-a")]

    await link.cut()
    down = await until(lambda h: h["uplink"] == "down", 10.0)
    assert down["since"] > up["since"]
    await link.restore()
    back = await until(lambda h: h["uplink"] == "up", 20.0)
    assert back["since"] > down["since"]
    with_stats = await until(lambda h: h["stats"] is not None, 15.0)
    stats = with_stats["stats"]
    assert stats["queue_limit"] > 0 and stats["forwarded"] > 0 and stats["dropped"] == 0
    await wait_for(lambda: ems.homes.home_of.get("bat-a") == "home-a", 1.0)

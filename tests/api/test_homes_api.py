"""Homes in the API, end to end with real Mosquitto, an EMS and three agents: gateway
agent lists, uplink status and relay stats published as raw MQTT messages show in
``GET /agents`` (``home``, ``?home=``), ``GET /homes`` and ``GET /homes/{home}``; an
uplink whose connection dies (its will ``0``) turns its home down, and back up."""

from __future__ import annotations

import json
import time
from typing import Any

from api_stack import Stack
from sef.bus import BrokerURL, BusClient, GatewayAgents, Topics, Will
from support import wait_for
from tcp_cut import CuttableLink

T = Topics()


def stats_payload(home: str, **fields: Any) -> bytes:
    body = {
        "v": 1,
        "home": home,
        "ts": int(time.time()),
        "queued": 4,
        "queue_limit": 1000,
        "dropped": 2,
        "forwarded": 99,
        "high_water": 12,
        "uplink_down_s": 0,
    }
    return json.dumps({**body, **fields}).encode()


async def publisher(broker: str, name: str) -> BusClient:
    client = BusClient(broker, f"{name}-{time.monotonic_ns() % 10**9}")
    await client.start()
    return client


async def homes_of(stack: Stack) -> dict[str, dict[str, Any]]:
    answer = await stack.http.get("/homes")
    assert answer.status_code == 200, answer.text
    return {h["home"]: h for h in answer.json()}


async def wait_homes(stack: Stack, check: Any, timeout_s: float = 5.0) -> dict[str, Any]:
    """Poll ``GET /homes`` until ``check(homes)`` holds; the last answer."""
    homes: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        homes = await homes_of(stack)
        if check(homes):
            return homes
        await stack.ems.settle(0.05, 0.2)
    raise AssertionError(f"homes never matched: {homes}")


async def test_homes_and_agents_by_home(stack_no_store: Stack) -> None:
    stack = stack_no_store
    gw = await publisher(stack.broker, "gateways")
    try:
        gw.publish(
            T.gateway_agents("h1"),
            GatewayAgents("h1", ["bat-1", "bat-2"]).to_payload(),
            retain=True,
        )
        gw.publish(T.gateway_status("h1"), b"1", retain=True)
        gw.publish(T.gateway_stats("h1"), stats_payload("h1"), retain=True)
        gw.publish(T.gateway_agents("h2"), GatewayAgents("h2", ["wh-9"]).to_payload(), retain=True)
        gw.publish(T.gateway_status("h2"), b"0", retain=True)
        homes = await wait_homes(
            stack, lambda h: set(h) == {"h1", "h2"} and h["h1"]["stats"] is not None
        )
    finally:
        await gw.stop()
    before = time.time()
    h1, h2 = homes["h1"], homes["h2"]
    assert h1["uplink"] == "up" and h1["agents"] == 2 and h1["online_agents"] == 2
    assert h1["stats"]["queued"] == 4 and h1["stats"]["dropped"] == 2
    assert h1["stats"]["queue_limit"] == 1000 and h1["stats"]["received"] <= before
    assert h2["uplink"] == "down" and h2["agents"] == 1 and h2["stats"] is None
    assert 0 < h2["since"] <= before
    # the down uplink took its agent offline (registry), which the count shows
    assert h2["online_agents"] == 0

    agents = {a["id"]: a for a in (await stack.http.get("/agents")).json()}
    assert {k: a["home"] for k, a in agents.items()} == {
        "bat-1": "h1",
        "bat-2": "h1",
        "wh-9": "h2",
    }
    only = await stack.http.get("/agents", params={"home": "h1"})
    assert [a["id"] for a in only.json()] == ["bat-1", "bat-2"]
    assert only.headers["X-Total-Count"] == "2"
    none = await stack.http.get("/agents", params={"home": "nowhere"})
    assert none.status_code == 200 and none.json() == []
    too_long = await stack.http.get("/agents", params={"home": "x" * 65})
    assert too_long.status_code == 422
    both = await stack.http.get("/agents", params={"home": "h2", "status": "online"})
    assert both.json() == []
    assert (await stack.http.get("/agents/bat-1")).json()["home"] == "h1"

    one = await stack.http.get("/homes/h1")
    assert one.status_code == 200
    assert one.json()["agent_ids"] == ["bat-1", "bat-2"] and one.json()["uplink"] == "up"
    metrics = (await stack.http.get("/metrics")).text
    assert 'sef_homes{uplink="up"} 1.0' in metrics
    assert 'sef_homes{uplink="down"} 1.0' in metrics
    assert "sef_home_relay_queued 4.0" in metrics and "sef_home_relay_dropped 2.0" in metrics
    assert "sef_homes_dropping 1.0" in metrics
    missing = await stack.http.get("/homes/nowhere")
    assert missing.status_code == 404
    assert missing.json() == {"error": "unknown home 'nowhere'", "detail": {"home": "nowhere"}}

    # read endpoints: a viewer may, no token may not
    async with stack.client("viewer") as viewer:
        assert (await viewer.get("/homes")).status_code == 200
        assert (await viewer.get("/homes/h1")).status_code == 200
    async with stack.client(None) as anonymous:
        assert (await anonymous.get("/homes")).status_code == 401
        assert (await anonymous.get("/homes/h1")).status_code == 401


async def test_uplink_will_turns_home_down_then_up(stack_no_store: Stack) -> None:
    """A real uplink connection (through a TCP relay) whose will is ``0``: cutting it makes
    the broker publish the will; the home goes down with a new since, then up again when
    the uplink reconnects and publishes ``1``."""
    stack = stack_no_store
    broker = BrokerURL.parse(stack.broker)
    link = CuttableLink(broker.port)
    await link.restore()
    uplink: BusClient | None = None

    async def announce() -> None:
        assert uplink is not None
        uplink.publish(
            T.gateway_agents("h3"), GatewayAgents("h3", ["bat-1"]).to_payload(), retain=True
        )
        uplink.publish(T.gateway_status("h3"), b"1", retain=True)

    uplink = BusClient(
        f"mqtt://127.0.0.1:{link.port}",
        f"uplink-h3-{time.monotonic_ns() % 10**9}",
        will=lambda: Will(T.gateway_status("h3"), b"0"),
        on_connect=announce,
        keepalive_s=2,
    )
    await uplink.start()
    try:
        homes = await wait_homes(stack, lambda h: h.get("h3", {}).get("uplink") == "up")
        up_since = homes["h3"]["since"]
        assert homes["h3"]["agents"] == 1

        await link.cut()
        homes = await wait_homes(stack, lambda h: h["h3"]["uplink"] == "down")
        down_since = homes["h3"]["since"]
        assert down_since > up_since
        await wait_for(lambda: stack.ems.registry.agents["bat-1"].offline_reason == "gateway", 3)
        gone = (await stack.http.get("/agents", params={"home": "h3"})).json()
        assert [(a["id"], a["status"]) for a in gone] == [("bat-1", "offline")]

        await link.restore()
        homes = await wait_homes(stack, lambda h: h["h3"]["uplink"] == "up", timeout_s=15)
        assert homes["h3"]["since"] > down_since
    finally:
        await uplink.stop()
        await link.cut()

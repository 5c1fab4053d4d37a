"""GET /agents, /agents/{id}, /health, /docs, and telemetry history with range and every=."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from api_stack import T0, Stack
from sef.interface import DEMO_INTERFACE

TELEMETRY = f"{DEMO_INTERFACE}.Telemetry"


async def test_list_and_show_agents(stack: Stack) -> None:
    response = await stack.http.get("/agents")
    assert response.status_code == 200
    agents = {a["id"]: a for a in response.json()}
    assert sorted(agents) == ["bat-1", "bat-2", "wh-9"]
    bat = agents["bat-1"]
    assert bat["status"] == "online"
    assert bat["groups"] == ["feeder-1"]
    assert DEMO_INTERFACE in bat["interfaces"] and "sef.Agent" in bat["interfaces"]
    assert bat["properties"][TELEMETRY]["value"]["Sys_SOC"] == ["d", 50.0]
    assert bat["online_since"] > 0 and bat["bdseq"] > 0

    only = (await stack.http.get("/agents", params={"group": "feeder-2"})).json()
    assert [a["id"] for a in only] == ["wh-9"]

    body: dict[str, Any] = {}
    for _ in range(100):  # the recorder commits presence events within ~20 ms
        detail = await stack.http.get("/agents/bat-2")
        assert detail.status_code == 200
        body = detail.json()
        if body["events"]:
            break
        await asyncio.sleep(0.02)
    assert body["id"] == "bat-2" and body["status"] == "online"
    assert [e["kind"] for e in body["events"]] == ["online"], body["events"]

    missing = await stack.http.get("/agents/nope")
    assert missing.status_code == 404
    assert missing.json() == {"error": "unknown agent 'nope'", "detail": {"agent": "nope"}}

    groups = (await stack.http.get("/groups")).json()
    assert groups == {"feeder-1": ["bat-1", "bat-2"], "feeder-2": ["wh-9"]}


async def test_health_and_openapi_docs(stack: Stack) -> None:
    health = (await stack.http.get("/health")).json()
    assert health == {
        "status": "ok",
        "broker_connected": True,
        "store": stack.store.dialect if stack.store else None,
        "agents": 3,
        "online": 3,
        "agents_incomplete": 0,
        "agents_birth_pending": 0,
        # one EMS: no election, it leads (several workers on PostgreSQL: tests/ems/test_leader*)
        "leader": True,
        "worker": stack.ems.host_id,
        "election": "none",
    }
    docs = await stack.http.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    schema = (await stack.http.get("/openapi.json")).json()
    for path in (
        "/agents",
        "/agents/{agent_id}",
        "/agents/{agent_id}/telemetry",
        "/agents/{agent_id}/commands",
        "/groups/{group}/commands",
        "/commands",
        "/events",
        "/metrics",
    ):
        assert path in schema["paths"], path


async def test_telemetry_history_range_and_downsampling(stack: Stack) -> None:
    agent, clock = stack.agents["bat-1"], stack.clocks["bat-1"]
    for i in range(10):  # one value a minute from T0 (a whole hour)
        clock.t = T0 + 60 * i
        agent.publish(T0 + 60 * i, float(i))

    async def count(**params: str | int) -> int:
        response = await stack.http.get("/agents/bat-1/telemetry", params=params)
        assert response.status_code == 200, response.text
        return int(response.json()["count"])

    since: dict[str, str | int] = {"key": TELEMETRY, "since": T0}
    deadline_ok = False
    for _ in range(200):
        if await count(**since) == 10:
            deadline_ok = True
            break
        await stack.ems.settle(0.05, 0.1)
    assert deadline_ok, "10 telemetry rows were not stored"

    body = (
        await stack.http.get(
            "/agents/bat-1/telemetry",
            params={"key": "Telemetry", "since": T0 + 120, "until": T0 + 300},
        )
    ).json()
    assert body["key"] == TELEMETRY
    assert [p["value"]["Sys_SOC"][1] for p in body["points"]] == [2.0, 3.0, 4.0, 5.0]
    assert [p["ts"] for p in body["points"]] == [T0 + 60 * i for i in range(2, 6)]

    iso = datetime.fromtimestamp(T0 + 300, tz=UTC).isoformat().replace("+00:00", "Z")
    assert await count(key=TELEMETRY, since=iso) == 5
    thinned = (
        await stack.http.get(
            "/agents/bat-1/telemetry", params={"key": TELEMETRY, "since": T0, "every": 300}
        )
    ).json()
    assert thinned["count"] == 2 and thinned["every_s"] == 300
    assert [p["value"]["Sys_SOC"][1] for p in thinned["points"]] == [4.0, 9.0]
    # all properties: AssetName (birth) and Telemetry (birth + 10)
    everything = (await stack.http.get("/agents/bat-1/telemetry")).json()
    assert {p["key"] for p in everything["points"]} == {TELEMETRY, f"{DEMO_INTERFACE}.AssetName"}
    assert await count(key=TELEMETRY, since=T0, limit=3) == 3

    for params, code, text in (
        ({"since": "yesterday-ish"}, 400, "since: 'yesterday-ish' is not a time"),
        ({"since": T0 + 10, "until": T0}, 400, "is after until"),
        ({"every": -5}, 422, "every"),
        ({"limit": "many"}, 422, "limit"),
    ):
        response = await stack.http.get("/agents/bat-1/telemetry", params=params)
        assert response.status_code == code, response.text
        assert text in response.json()["error"], response.json()
    unknown = await stack.http.get("/agents/ghost/telemetry")
    assert unknown.status_code == 404 and "unknown agent 'ghost'" in unknown.json()["error"]


async def test_history_needs_a_store(stack_no_store: Stack) -> None:
    http = stack_no_store.http
    for path in ("/agents/bat-1/telemetry", "/commands"):
        response = await http.get(path)
        assert response.status_code == 503
        assert "without a store" in response.json()["error"]
    ok = await http.post("/agents/bat-1/commands", json={"cmds": [["idle", 0, 60]]})
    assert ok.status_code == 200 and ok.json()["status"] == "ok"
    detail = (await http.get("/agents/bat-1")).json()
    assert detail["events"] == []

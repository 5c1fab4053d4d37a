"""POST commands to agents and groups, the command log, and the bad-request table: every
bad request gets a 4xx with a clear message and nothing reaches any agent."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from api_stack import Stack
from sef.interface import DEMO_INTERFACE
from support import wait_for


async def test_commands_reach_agent_and_group_and_are_logged(stack: Stack) -> None:
    agents = stack.agents
    one = await stack.http.post(
        "/agents/bat-1/commands", json={"cmds": [["charge", 4, 1800], ["discharge", 8, 1800]]}
    )
    assert one.status_code == 200, one.text
    result = one.json()
    assert result["status"] == "ok" and result["target"] == "bat-1"
    assert result["replies"] == [
        {
            "agent": "bat-1",
            "ok": True,
            "result": [],
            "error": None,
            "message": None,
            "outcome": "accepted",
            "fault": None,
            "fault_message": None,
        }
    ]
    assert result["missing"] == []
    assert agents["bat-1"].executed == [[("charge", 4, 1800), ("discharge", 8, 1800)]]

    group = await stack.http.post(
        "/groups/feeder-1/commands", json={"cmds": [["idle", 0, 0]], "timeout_s": 3}
    )
    assert group.status_code == 200, group.text
    body = group.json()
    assert body["status"] == "ok" and body["target"] == "group:feeder-1"
    assert sorted(r["agent"] for r in body["replies"]) == ["bat-1", "bat-2"]
    await wait_for(lambda: agents["bat-2"].executed == [[("idle", 0, 0)]], 2.0)
    assert agents["bat-1"].executed[-1] == [("idle", 0, 0)]
    assert agents["wh-9"].executed == [], "another group's member must not execute"

    log = (await stack.http.get("/commands")).json()
    assert [e["call_id"] for e in log] == [body["call_id"], result["call_id"]]
    newest, oldest = log
    assert newest["target"] == "group:feeder-1" and newest["status"] == "ok"
    assert sorted(r["agent"] for r in newest["replies"]) == ["bat-1", "bat-2"]
    assert oldest["args"] == [[["charge", 4, 1800], ["discharge", 8, 1800]]]
    assert oldest["interface"] == DEMO_INTERFACE and oldest["method"] == "EnergyMethod"
    only = (await stack.http.get("/commands", params={"target": "bat-1"})).json()
    assert [e["call_id"] for e in only] == [result["call_id"]]
    assert (await stack.http.get("/commands", params={"since": "now"})).json() == []

    # no reply asked: sent, returns at once
    quiet = (
        await stack.http.post(
            "/agents/wh-9/commands", json={"cmds": [["shed", 0, 60]], "reply": False}
        )
    ).json()
    assert quiet["status"] == "sent" and quiet["replies"] == []
    await wait_for(lambda: agents["wh-9"].executed == [[("shed", 0, 60)]], 2.0)

    metrics = await stack.http.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.text)
        for s in family.samples
    }
    assert samples[("sef_agents", (("status", "online"),))] == 3
    assert samples[("sef_agents", (("status", "offline"),))] == 0
    assert samples[("sef_commands_total", (("status", "ok"),))] == 2
    assert samples[("sef_commands_total", (("status", "sent"),))] == 1
    assert samples[("sef_command_replies_total", (("result", "ok"),))] == 3
    assert samples[("sef_command_replies_total", (("result", "error"),))] == 0
    assert samples[("sef_calls_sent_total", ())] == 3
    assert samples[("sef_messages_ingested_total", ())] >= 3 * 4  # status, about, 2 props
    assert samples[("sef_bad_messages_total", ())] == 0
    assert samples[("sef_store_rows_total", ())] >= 6  # 2 properties x 3 agents
    assert samples[("sef_store_commit_seconds_count", ())] >= 1
    assert 0 < samples[("sef_store_commit_seconds_sum", ())] < 10
    assert samples[("sef_broker_connected", ())] == 1


VALID = [["charge", 4, 1800]]

BAD_REQUESTS: list[tuple[str, str, Any, int, str]] = [
    ("unknown agent", "/agents/nope/commands", {"cmds": VALID}, 404, "unknown agent 'nope'"),
    ("unknown group", "/groups/nogroup/commands", {"cmds": VALID}, 404, "unknown group 'nogroup'"),
    ("bad agent id", "/agents/a%20b/commands", {"cmds": VALID}, 404, "unknown agent 'a b'"),
    (
        "cmds not a list",
        "/agents/bat-1/commands",
        {"cmds": {"charge": 4}},
        422,
        "cmds: expected array 'a(snn)', got object",
    ),
    (
        "cmds a string",
        "/agents/bat-1/commands",
        {"cmds": "charge:4:1800"},
        422,
        "cmds: expected array",
    ),
    (
        "event of 2 items",
        "/agents/bat-1/commands",
        {"cmds": [["charge", 4]]},
        422,
        "cmds[0]: expected struct '(snn)' with 3 fields, got 2",
    ),
    ("empty sequence", "/agents/bat-1/commands", {"cmds": []}, 422, "at least one event"),
    (
        "unknown command",
        "/agents/bat-1/commands",
        {"cmds": [["charge", 4, 60], ["explode", 1, 60]]},
        422,
        "cmds[1][0]: unknown command 'explode'",
    ),
    (
        "rate out of int16",
        "/agents/bat-1/commands",
        {"cmds": [["charge", 40000, 1800]]},
        422,
        "cmds[0][1]: 40000 out of range for int16",
    ),
    (
        "negative rate",
        "/groups/feeder-1/commands",
        {"cmds": [["charge", -4, 1800]]},
        422,
        "cmds[0][1]: rate must be >= 0 kW, got -4",
    ),
    (
        "negative duration",
        "/agents/bat-1/commands",
        {"cmds": [["charge", 4, -5]]},
        422,
        "cmds[0][2]: duration must be >= 0 s, got -5",
    ),
    (
        "rate as a string",
        "/agents/bat-1/commands",
        {"cmds": [["charge", "4", 1800]]},
        422,
        "cmds[0][1]: expected int16 'n', got str '4'",
    ),
    (
        "rate as a float",
        "/agents/bat-1/commands",
        {"cmds": [["charge", 4.5, 1800]]},
        422,
        "cmds[0][1]: expected an integer",
    ),
    (
        "rate as a bool",
        "/agents/bat-1/commands",
        {"cmds": [["charge", True, 1800]]},
        422,
        "cmds[0][1]",
    ),
    (
        "command as a number",
        "/agents/bat-1/commands",
        {"cmds": [[1, 4, 1800]]},
        422,
        "cmds[0][0]: expected string",
    ),
    (
        "open-ended not last",
        "/agents/bat-1/commands",
        {"cmds": [["charge", 4, 0], ["idle", 0, 60]]},
        422,
        "cmds[0][2]: only the last event may be open-ended",
    ),
    ("no cmds", "/agents/bat-1/commands", {}, 422, "cmds: Field required"),
    (
        "unknown field",
        "/agents/bat-1/commands",
        {"cmds": VALID, "rate": 4},
        422,
        "rate: Extra inputs are not permitted",
    ),
    (
        "timeout as a string",
        "/agents/bat-1/commands",
        {"cmds": VALID, "timeout_s": "5"},
        422,
        "timeout_s",
    ),
    (
        "timeout too long",
        "/agents/bat-1/commands",
        {"cmds": VALID, "timeout_s": 1e6},
        422,
        "timeout_s",
    ),
    ("body not an object", "/agents/bat-1/commands", [["charge", 4, 1800]], 422, "body"),
    ("body not JSON", "/agents/bat-1/commands", b"{cmds: nope", 400, "not valid JSON"),
]


async def test_bad_requests_are_refused_and_nothing_is_sent(stack: Stack) -> None:
    failures = []
    for name, path, body, status, message in BAD_REQUESTS:
        if isinstance(body, bytes):
            response = await stack.http.post(
                path, content=body, headers={"content-type": "application/json"}
            )
        else:
            response = await stack.http.post(path, json=body)
        try:
            answer = response.json()
        except ValueError:
            answer = {"error": f"not JSON: {response.text!r}"}
        if (
            response.status_code != status
            or set(answer) != {"error", "detail"}
            or message not in answer["error"]
        ):
            failures.append(f"{name}: {response.status_code} {answer}")
    assert not failures, "\n".join(failures)

    await asyncio.sleep(0.3)  # anything wrongly sent would have arrived by now
    assert all(agent.executed == [] for agent in stack.agents.values()), {
        k: a.executed for k, a in stack.agents.items()
    }
    log = (await stack.http.get("/commands")).json()
    assert [e for e in log if e["status"] != "refused"] == []
    metrics = (await stack.http.get("/metrics")).text
    assert f'sef_commands_total{{status="rejected"}} {float(len(BAD_REQUESTS))}' in metrics
    assert "sef_calls_sent_total 0.0" in metrics


async def test_offline_agent_is_refused_and_stream_reports_presence(stack: Stack) -> None:
    seen: list[tuple[str, str]] = []
    hello = asyncio.Event()

    async def listen() -> None:
        async with stack.http.stream("GET", "/events", params={"agent": "bat-2"}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            kind = ""
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    kind = line[len("event: ") :]
                elif line.startswith("data: "):
                    seen.append((kind, line[len("data: ") :]))
                    if kind == "hello":
                        hello.set()

    reader = asyncio.create_task(listen())
    await asyncio.wait_for(hello.wait(), 5.0)
    agent = stack.agents["bat-2"]
    agent.publish(1, 42.0)
    await agent.stop()
    await wait_for(lambda: any(k == "offline" for k, _ in seen), 5.0)
    kinds = [k for k, _ in seen]
    assert kinds.index("property") < kinds.index("offline")
    assert '"value":{"TimeStamp":["u",1],"Sys_SOC":["d",42.0]' in dict(seen)["property"]
    assert '"status":"offline"' in dict(seen)["offline"]

    refused = await stack.http.post("/agents/bat-2/commands", json={"cmds": VALID})
    assert refused.status_code == 409
    assert refused.json()["error"] == "agent 'bat-2' is offline; command not sent"

    back = type(agent)("bat-2", stack.broker, groups=["feeder-1"], keepalive_s=2)
    stack.agents["bat-2"] = back
    await back.start()
    await wait_for(lambda: any(k == "online" for k, _ in seen), 5.0)
    assert all('"agent":"bat-2"' in data for k, data in seen if k != "hello")
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    assert agent.executed == [] and back.executed == []

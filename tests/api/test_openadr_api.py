"""``/openadr/...`` over the real API stack (Mosquitto, EMS, store on SQLite and PostgreSQL,
uvicorn, tokens per role): status, the event history newest first with filters, one
event's versions, the opt-out policy and an operator's opt override (operator role,
audited), hostile input answered 4xx, and the history kept in the store across a restart
of the bridge. The bridge is a stand-in DrOperator with a real DrHistory
(tests/dr_operator_standin.py): the API and the store are under test."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import pytest

from api_stack import Stack
from dr_operator_standin import StandInOperator, event
from sef.ems._dr_board import set_dr_board
from sef.ems.store import DrEventStore
from sef.openadr import OperatorBoard, Opt, install_operator


async def put_10_mb_policy(stack: Stack) -> int:
    """Announce a 10-MB ``PUT /openadr/policy`` (operator token), send its first bytes
    only, and return the HTTP status of the answer."""
    host, port = stack.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            (
                f"PUT /openadr/policy HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {stack.tokens['operator']}\r\n"
                "Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n"
                '{"opt_out_programs": ["xxxx'
            ).encode()
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10.0)
        return int(status_line.split()[1])
    finally:
        writer.close()


@pytest.fixture
async def dr(stack: Stack) -> AsyncIterator[tuple[StandInOperator, OperatorBoard]]:
    """A stand-in bridge on the stack's EMS with four events: one active, one upcoming
    (two versions), one completed, one opted out by the policy."""
    now = stack.ems.clock.now()
    operator = StandInOperator(now)
    operator.history.add(event("done", now, start_in_s=-7200, status="completed",
                               received_s=now - 9000, delivered_kw=-9.5))  # fmt: skip
    operator.history.add(event("act", now, start_in_s=-600, received_s=now - 700))
    operator.history.add(event("soon", now, start_in_s=1800, received_s=now - 300))
    operator.history.add(event("soon", now, start_in_s=1800, received_s=now - 200,
                               modification=1, requested_kw=-14.0))  # fmt: skip
    operator.history.add(event("eco-1", now, start_in_s=900, program="eco", opt="optOut",
                               status="opted_out", reason="program eco is opted out",
                               received_s=now - 100))  # fmt: skip
    board = install_operator(stack.ems, operator, flush_s=0.2)
    board.start()
    yield operator, board
    await board.stop()
    set_dr_board(stack.ems, None)


async def test_without_a_bridge_status_says_so_and_the_rest_is_404(stack: Stack) -> None:
    async with stack.client("viewer") as viewer:
        status = await viewer.get("/openadr/status")
        assert status.status_code == 200
        assert status.json()["configured"] is False and status.json()["adapters"] == []
        for path in ("/openadr/events", "/openadr/events/oadr2b/e1"):
            answer = await viewer.get(path)
            assert answer.status_code == 404
            assert answer.json()["error"].startswith("OpenADR is not configured")
    async with stack.client("operator") as operator:
        assert (await operator.put("/openadr/policy", json={})).status_code == 404
        opt = await operator.post("/openadr/events/oadr2b/e1/opt", json={"opt": "optOut"})
        assert opt.status_code == 404


async def test_history_newest_first_with_filters(
    stack: Stack, dr: tuple[StandInOperator, OperatorBoard]
) -> None:
    operator, _ = dr
    async with stack.client(None) as anonymous:
        assert (await anonymous.get("/openadr/events")).status_code == 401
    async with stack.client("viewer") as viewer:
        status = (await viewer.get("/openadr/status")).json()
        assert status["configured"] is True
        (adapter,) = status["adapters"]
        assert adapter["registered"] is True and adapter["programs"] == ["peak", "eco"]
        assert status["policy"]["opt_out_programs"] == []
        rows = (await viewer.get("/openadr/events")).json()
        assert [(r["event_id"], r["modification"]) for r in rows] == [
            ("eco-1", 0), ("soon", 1), ("soon", 0), ("act", 0), ("done", 0)
        ]  # fmt: skip
        assert rows[0]["opt"] == "optOut" and rows[0]["reason"] == "program eco is opted out"
        assert rows[-1]["delivered_kw"] == -9.5 and rows[1]["requested_kw"] == -14.0
        got = await viewer.get("/openadr/events", params={"status": "active,scheduled"})
        assert [r["event_id"] for r in got.json()] == ["soon", "soon", "act"]
        got = await viewer.get("/openadr/events", params={"program": "eco"})
        assert [r["event_id"] for r in got.json()] == ["eco-1"]
        got = await viewer.get("/openadr/events", params={"limit": 2, "source": "oadr2b"})
        assert [r["event_id"] for r in got.json()] == ["eco-1", "soon"]
        # the bridge changes a record: the next read shows it (and the store has it)
        operator.history.update(("oadr2b", "act", 0), delivered_kw=-8.25)
        one = (await viewer.get("/openadr/events/oadr2b/act")).json()
        assert one["delivered_kw"] == -8.25 and [v["modification"] for v in one["versions"]] == [0]
        soon = (await viewer.get("/openadr/events/oadr2b/soon")).json()
        assert soon["modification"] == 1 and [v["modification"] for v in soon["versions"]] == [
            1, 0
        ]  # fmt: skip
    if stack.store is not None:
        stored = DrEventStore(stack.store).events(event_id="act")
        assert stored[0]["delivered_kw"] == -8.25


async def test_policy_and_opt_override_need_the_operator_role_and_are_audited(
    stack: Stack, dr: tuple[StandInOperator, OperatorBoard]
) -> None:
    operator, _ = dr
    policy = {"opt_out_programs": ["eco"], "max_shortfall_kw": 2.5}
    async with stack.client("viewer") as viewer:
        refused = await viewer.put("/openadr/policy", json=policy)
        assert refused.status_code == 403
        assert refused.json()["detail"] == {"role": "viewer", "needed": "operator"}
        refused = await viewer.post("/openadr/events/oadr2b/act/opt", json={"opt": "optOut"})
        assert refused.status_code == 403
    assert operator.overrides == [] and operator.policy["opt_out_programs"] == []
    async with stack.client("operator") as olivia:
        answer = await olivia.put("/openadr/policy", json=policy)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {**policy, "opt_out_signals": []}
        assert (await olivia.get("/openadr/status")).json()["policy"] == answer.json()
        bad = await olivia.put("/openadr/policy", json={"max_shortfall_kw": -1})
        assert bad.status_code == 422 and "max_shortfall_kw must be 0..1e6" in bad.json()["error"]
        bad = await olivia.put("/openadr/policy", json={"opt_out_everything": True})
        assert bad.status_code == 422 and "unknown key 'opt_out_everything'" in bad.json()["error"]
        bad = await olivia.put("/openadr/policy", json=["eco"])
        assert bad.status_code == 422 and "must be a JSON object" in bad.json()["error"]
        assert operator.policy["max_shortfall_kw"] == 2.5  # the refusals changed nothing

        out = await olivia.post(
            "/openadr/events/oadr2b/act/opt", json={"opt": "optOut", "reason": "feeder work"}
        )
        assert out.status_code == 200, out.text
        assert out.json()["opt"] == "optOut" and out.json()["status"] == "opted_out"
        assert out.json()["reason"] == "operator: olivia: feeder work"
        assert operator.overrides == [("oadr2b", "act", Opt.OUT, "operator: olivia: feeder work")]
        listed = (await olivia.get("/openadr/events", params={"status": "opted_out"})).json()
        assert {r["event_id"] for r in listed} == {"act", "eco-1"}
        back = await olivia.post("/openadr/events/oadr2b/eco-1/opt", json={"opt": "optIn"})
        assert back.status_code == 200 and back.json()["status"] == "scheduled"
        over = await olivia.post("/openadr/events/oadr2b/done/opt", json={"opt": "optOut"})
        assert over.status_code == 409 and "the event is completed" in over.json()["error"]
        ghost = await olivia.post("/openadr/events/oadr2b/ghost/opt", json={"opt": "optOut"})
        assert ghost.status_code == 404 and "no event 'ghost'" in ghost.json()["error"]
    if stack.store is not None:
        log = (await stack.http.get("/commands", params={"target": "openadr"})).json()
        assert [(r["method"], r["sent_by"]) for r in log] == [
            ("OptOverride", "olivia"), ("OptOverride", "olivia"), ("SetOptPolicy", "olivia")
        ]  # fmt: skip
        assert log[1]["args"] == ["oadr2b", "act", "optOut", "feeder work"]
        assert log[2]["args"] == [{**policy, "opt_out_signals": []}]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_hostile_input_is_refused_with_4xx(
    stack: Stack, dr: tuple[StandInOperator, OperatorBoard]
) -> None:
    operator, _ = dr
    async with stack.client("operator") as olivia:
        for path in (
            "/openadr/events/oadr2b/*",
            "/openadr/events/oadr2b/%25",
            "/openadr/events/*/act",
            "/openadr/events/oadr2b/act%20OR%201=1",
        ):
            answer = await olivia.get(path)
            assert answer.status_code == 404, (path, answer.text)
        assert (await olivia.get("/openadr/events/oadr2b/" + "x" * 256)).status_code == 422
        assert (await olivia.get("/openadr/events/x/y/z")).status_code == 404
        for params in ({"status": "active,exploded"}, {"limit": 0}, {"limit": 1001},
                       {"limit": "lots"}, {"program": "p" * 300}):  # fmt: skip
            answer = await olivia.get("/openadr/events", params=params)
            assert answer.status_code == 422, (params, answer.text)
        wrong = await olivia.get("/openadr/events", params={"status": "exploded"})
        assert "unknown 'exploded'" in wrong.json()["error"]
        nan = await olivia.put(
            "/openadr/policy",
            content=b'{"max_shortfall_kw": NaN}',
            headers={"content-type": "application/json"},
        )
        assert nan.status_code == 400
        nan = await olivia.put(
            "/openadr/policy", content=b'{"max_shortfall_kw": NaN}',
            headers={"content-type": "text/plain"},
        )  # fmt: skip
        assert nan.status_code == 422 and "NaN" in nan.json()["error"]
        huge = await olivia.put("/openadr/policy", json={"max_shortfall_kw": 1e308})
        assert huge.status_code == 422
        assert await put_10_mb_policy(stack) == 413  # refused before the body is read
        for body in ({"opt": "maybe"}, {"opt": "optOut", "reason": "r" * 501},
                     {"opt": "optOut", "extra": 1}, {}):  # fmt: skip
            answer = await olivia.post("/openadr/events/oadr2b/act/opt", json=body)
            assert answer.status_code == 422, (body, answer.text)
        assert operator.overrides == []
        # a record holding NaN and infinity (a bridge's bad day) is served as nulls
        now = stack.ems.clock.now()
        operator.history.add(
            event("odd", now, start_in_s=60, end_s=math.inf, delivered_kw=math.nan,
                  raw={"x": math.inf})
        )  # fmt: skip
        odd = await olivia.get("/openadr/events/oadr2b/odd")
        assert odd.status_code == 200, odd.text
        assert odd.json()["end_s"] is None and odd.json()["delivered_kw"] is None
        assert odd.json()["raw"] == {"x": None}


async def test_history_without_a_store_is_served_from_memory(stack_no_store: Stack) -> None:
    now = stack_no_store.ems.clock.now()
    operator = StandInOperator(now)
    operator.history.add(event("a", now, start_in_s=60, delivered_kw=math.nan))
    operator.history.add(event("b", now, start_in_s=120, received_s=now))
    install_operator(stack_no_store.ems, operator)
    async with stack_no_store.client("viewer") as viewer:
        rows = (await viewer.get("/openadr/events")).json()
        assert [r["event_id"] for r in rows] == ["b", "a"]
        assert rows[1]["delivered_kw"] is None
        assert (await viewer.get("/openadr/events/oadr2b/a")).json()["event_id"] == "a"
    async with stack_no_store.client("operator") as olivia:
        out = await olivia.post("/openadr/events/oadr2b/a/opt", json={"opt": "optOut"})
        assert out.status_code == 200 and out.json()["reason"] == "operator: olivia"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_the_history_outlives_the_bridge(
    stack: Stack, dr: tuple[StandInOperator, OperatorBoard]
) -> None:
    _, board = dr
    await board.stop()  # the bridge stops (a last write) ...
    later = StandInOperator(stack.ems.clock.now())
    again = install_operator(stack.ems, later)  # ... and a new one starts empty
    async with stack.client("viewer") as viewer:
        rows = (await viewer.get("/openadr/events")).json()
        assert len(rows) == 5 and rows[0]["event_id"] == "eco-1"
    assert await again.restore() == 5
    assert later.history.latest("oadr2b", "soon") is not None
    assert math.isfinite(later.history.records()[0].end_s)
    assert await again.flush() == 0  # restored records count as written

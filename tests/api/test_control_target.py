"""PUT / GET /control/target: the live controller's target from the API. Without a token
401, a viewer 403, an operator 200; every change is in the command log under the
operator's name; the live controller (sef.control.live) applies it at its next step."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from api_stack import Stack
from sef.control.controllers import make_controller
from sef.control.live import LiveControl
from sef.control.scenario import scenario_from_dict
from sef.ems import EMS
from sef.ems._target_board import target_board

PATH = "/control/target"


BASE_CSV = Path(str(resources.files("sef.control.scenarios").joinpath("bdew_h0_2023-01-17.csv")))


def live_target_series(ems: EMS, start_s: float, steps: int) -> list[float]:
    """The per-step target a live controller starting at ``start_s`` follows (a scenario
    with a flat 3-kW target, 1-min steps)."""
    scenario = scenario_from_dict(
        {
            "dt_s": 60,
            "duration_h": steps / 60,
            "base_load": {"source": "csv", "csv": str(BASE_CSV)},  # no demandlib needed
            "target": {"kind": "flat", "value_kw": 3.0},
        }
    )
    live = LiveControl(ems, scenario, make_controller("baseline"), start_s=start_s)
    assert live.refresh_target()
    return [float(v) for v in live.current.target_kw]


async def test_target_needs_the_operator_role(stack: Stack) -> None:
    points = [[1000.0, 80.0], [2000.0, 95.5]]
    async with stack.client(None) as anonymous:
        assert (await anonymous.put(PATH, json=points)).status_code == 401
        assert (await anonymous.get(PATH)).status_code == 401
    async with stack.client("viewer") as viewer:
        refused = await viewer.put(PATH, json=points)
        assert refused.status_code == 403
        assert refused.json()["detail"] == {"role": "viewer", "needed": "operator"}
        shown = (await viewer.get(PATH)).json()
        assert shown["points"] == [] and shown["version"] == 0 and shown["now_kw"] is None
    assert target_board(stack.ems).points == []  # nothing changed by the refusals
    async with stack.client("operator") as operator:
        response = await operator.put(PATH, json=points)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["points"] == points
        assert body["set_by"] == "olivia" and body["version"] == 1
        assert body["now_kw"] == 95.5  # the EMS clock is past the last point: it holds on
        assert (await operator.get(PATH)).json() == body
        # audited: the command log names the operator and holds the points
        log = (await operator.get("/commands", params={"target": "control/target"})).json()
        assert len(log) == 1
        assert log[0]["method"] == "SetTarget" and log[0]["sent_by"] == "olivia"
        assert log[0]["args"] == [points]
        assert log[0]["status"] == "ok"


async def test_target_as_csv_and_bad_bodies(stack: Stack) -> None:
    async with stack.client("operator") as operator:
        csv = "time_s,kw\n3000,70\n1000,60.5\n"
        response = await operator.put(PATH, content=csv, headers={"content-type": "text/csv"})
        assert response.status_code == 200, response.text
        assert response.json()["points"] == [[1000.0, 60.5], [3000.0, 70.0]]  # sorted
        bad = await operator.put(
            PATH, content="1000,60\n2000,x\n", headers={"content-type": "text/csv"}
        )
        assert bad.status_code == 422 and "line 2" in bad.json()["error"]
        assert (await operator.put(PATH, json=[[1, 2, 3]])).status_code == 422
        assert (await operator.put(PATH, json=[[1, 2], [1, 3]])).status_code == 422
        assert (await operator.put(PATH, json={"no": "points"})).status_code == 422
        wrong = await operator.put(PATH, content="x", headers={"content-type": "text/xml"})
        assert wrong.status_code == 415
        # the refused bodies changed nothing; [] returns to the scenario's target
        assert (await operator.get(PATH)).json()["points"] == [[1000.0, 60.5], [3000.0, 70.0]]
        cleared = await operator.put(PATH, json=[])
        assert cleared.json()["points"] == [] and cleared.json()["now_kw"] is None
    log = (await stack.http.get("/commands", params={"target": "control/target"})).json()
    assert [row["args"] for row in log] == [[[]], [[[1000.0, 60.5], [3000.0, 70.0]]]]


async def test_live_control_follows_the_target_set_through_the_api(stack: Stack) -> None:
    """The live controller's target for each step is the API's where it applies, the
    scenario's elsewhere."""
    async with stack.client("operator") as operator:
        await operator.put(PATH, json=[[1_000_000.0 + 120.0, 42.0], [1_000_000.0 + 300.0, 7.0]])
    target = live_target_series(stack.ems, start_s=1_000_000.0, steps=8)
    assert target[:2] == [3.0, 3.0]  # before the first point: the scenario's flat 3 kW
    assert target[2:5] == [42.0, 42.0, 42.0]
    assert target[5:] == [7.0, 7.0, 7.0]

"""`sef demo` headless for a short scaled day: every process starts, the control app runs,
the report is written and its metrics make sense."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from sef.ems.store import Store


@pytest.mark.timeout(240)
@pytest.mark.xdist_group("fleet")  # 12 processes: not beside the live-mode test
def test_demo_runs_headless_and_writes_a_report(tmp_path: Path) -> None:
    out = tmp_path / "report"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sef",
            "demo",
            "--hours",
            "1.5",
            "--speed",
            "720",
            "--headless",
            "--no-browser",
            "--out",
            str(out),
            "--api",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "all 7 agents online" in done.stdout  # 3 batteries, 3 heaters, the meter
    summary = json.loads((out / "summary.json").read_text())
    live = summary["controllers"]["mpc-live"]
    assert summary["steps"] == 90
    assert math.isfinite(live["rmse_kw"]) and live["rmse_kw"] < 6.0, live
    assert live["soc_violations"] == 0
    for name in ("load.png", "fleet_state.png", "events.png"):
        assert (out / name).stat().st_size > 10_000, name
    rows = (out / "timeseries.csv").read_text().splitlines()
    assert len(rows) == 1 + 90
    store = Store.open(f"sqlite:///{out / 'ems.db'}")
    try:
        agents = {row.agent_id for row in store.load_agents()}
        assert agents == {
            "battery-1",
            "battery-2",
            "battery-3",
            "waterheater-1",
            "waterheater-2",
            "waterheater-3",
            "meter-1",
        }
        assert store.count_telemetry("battery-1") > 10
        sent = store.commands(target="battery-1", limit=1000)
        plans = [c for c in sent if len(c["args"][0]) == 4]
        assert len(plans) >= 6, "an hour-long plan (4 events) per battery at each re-plan"
    finally:
        store.close()
    logs = sorted(p.name for p in (out / "logs").iterdir())
    assert len(logs) == 14, logs

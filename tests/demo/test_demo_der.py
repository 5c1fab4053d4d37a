"""`sef demo --pv 1 --evs 1`, secure (the default): the PV inverter and the EV charger come
online in the EMS with telemetry, the PV produces in daytime only and the EV charges over
its OCPP link (wss://, client certificate and password)."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sef.ems.store import Store
from sef.interface import DEMO_INTERFACE


def _telemetry(store: Store, agent_id: str) -> list[tuple[float, dict[str, Any]]]:
    rows = store.telemetry(agent_id, key=f"{DEMO_INTERFACE}.Telemetry")
    return [(row["ts"], {k: v[1] for k, v in row["value"].items()}) for row in rows]


@pytest.mark.timeout(360)
@pytest.mark.xdist_group("fleet")  # 10 processes: not beside the other fleet tests
def test_demo_with_pv_and_ev_secure(tmp_path: Path) -> None:
    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "sef", "demo", "--pv", "1", "--evs", "1", "--batteries", "1",
         "--waterheaters", "1", "--hours", "19.5", "--speed", "1440", "--controller",
         "baseline", "--headless", "--no-browser", "--out", str(out), "--api", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=320,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = " ".join(done.stdout.split())  # the console wraps lines
    assert "mutual TLS" in text  # the secure demo
    assert "all 5 agents online" in text
    assert "1 PV inverters, 1 EV chargers" in text
    der = json.loads((out / "summary.json").read_text())["der"]
    assert der["pv_systems"] == 1 and der["ev_chargers"] == 1
    # pv-1: 7.9 kWp / 6.9 kW at 40° N in December (about 30 kWh on a clear day); evse-1:
    # 9.7 kWh into the battery at 89 % (seed 1)
    assert der["pv_energy_kwh"] > 5.0, der
    assert 1.0 < der["ev_energy_kwh"] < 12.0, der

    store = Store.open(f"sqlite:///{out / 'ems.db'}")
    try:
        assert {"pv-1", "evse-1", "meter-1"} <= {row.agent_id for row in store.load_agents()}
        pv = _telemetry(store, "pv-1")
        hour = {ts: datetime.fromtimestamp(ts, UTC).hour for ts, _ in pv}
        day = [t["PV_Power_kW"] for ts, t in pv if 9 <= hour[ts] < 15 and "PV_Power_kW" in t]
        night = [t["PV_Power_kW"] for ts, t in pv if not 6 <= hour[ts] < 18 and "PV_Power_kW" in t]
        assert day and max(day) > 1.0, "the PV produces around noon (UTC: the demo's clock)"
        assert night and max(night) == 0.0, "and nothing at night"
        assert pv[-1][1]["Comm_Fault"] is False
        ev = _telemetry(store, "evse-1")
        charging = [t for _, t in ev if t.get("EV_Plugged") and t.get("EV_Rate_kW", 0) > 1.0]
        assert charging, "the EV plugged in and charged"
        assert max(t["EV_Energy_kWh"] for _, t in ev) > 1.0
    finally:
        store.close()
    # the OCPP link was TLS with a client certificate (Profile 3) and a password (Profile 2)
    agent_log = (out / "logs" / "evse-1.log").read_text()
    assert "OCPP on wss://127.0.0.1:" in agent_log
    passwords = out / "pki" / "ocpp-passwords"
    assert stat.S_IMODE(passwords.stat().st_mode) == 0o600
    assert passwords.read_text().startswith("evse-1-cp:")
    assert "booted at wss://" in (out / "logs" / "evse-emulator-1.log").read_text()
    logs = sorted(p.name for p in (out / "logs").iterdir())
    assert len(logs) == 10, logs

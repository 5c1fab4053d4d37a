"""The project's own protocol spec is enough to pass certification: the vendor-style
agent in ``examples/paho_agent.py`` (paho-mqtt and the standard library, no ``sef``)
passes ``sef certify --insecure`` at level recommended on a real Mosquitto."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from broken_agents import (
    EXAMPLE,
    WITHOUT_SEF,
    agent_command,
    certify_agent,
    kill,
    start,
    wait_online,
)

import sef.interface
from sef.broker import Mosquitto

STANDARD_DEMO_XML = Path(sef.interface.__file__).parent / "data" / "edu.pdx.powerlab.demo.xml"


def test_example_agent_passes_certification(mosquitto: Mosquitto, tmp_path: Path) -> None:
    # the vendor's own copy of the interface is compared with SEF's (--interface)
    run = certify_agent("example", mosquitto.url, tmp_path, ["--interface", str(STANDARD_DEMO_XML)])

    not_passed = {check: outcome for check, outcome in run.outcomes.items() if outcome != "PASS"}
    assert not_passed == {}, run.output
    assert run.exit_code == 0, run.output
    # every suite ran, the restart ones included
    assert {check.split(".")[0] for check in run.outcomes} == {
        "birth", "calls", "demo", "robustness", "sessions",
    }  # fmt: skip
    assert run.outcomes["sessions.restart"] == "PASS"


def imported_modules(source: str) -> set[str]:
    """The top-level names of every module ``source`` imports, anywhere in it."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add((node.module or "").split(".")[0] if node.level == 0 else ".")
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
            names.add("__import__")
    return names


def test_example_imports_only_paho_and_the_standard_library() -> None:
    imported = imported_modules(EXAMPLE.read_text())

    assert "paho" in imported
    assert imported - {"paho"} <= sys.stdlib_module_names, imported
    assert imported_modules("import sef.bus\nfrom sef import x\n") == {"sef"}  # the scan sees it


def test_example_runs_where_sef_cannot_be_imported() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_SEF, str(EXAMPLE), "--help"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert "--broker" in done.stdout and "--group" in done.stdout
    blocked = subprocess.run(
        [sys.executable, "-c", WITHOUT_SEF.replace("runpy.run_path", "import sef; runpy.run_path"),
         str(EXAMPLE), "--help"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert blocked.returncode != 0 and "ModuleNotFoundError" in blocked.stderr  # the guard works


class Controller:
    """A stand-in EMS for the host-status tests: publishes host statuses and calls, and
    records the example agent's Telemetry ``Event`` values as they arrive."""

    def __init__(self, broker_url: str, agent_id: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.agent_id = agent_id
        self.events: list[str] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ems-stand-in")
        self.client.on_message = self._on_message
        topic = f"sef/agents/{agent_id}/props/edu.pdx.powerlab.demo/Telemetry"
        self.client.on_connect = lambda c, *_: c.subscribe(topic, 1)
        url = urlparse(broker_url)
        self.client.connect(url.hostname or "127.0.0.1", url.port or 1883)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, message: Any) -> None:
        value = json.loads(message.payload).get("value", {})
        self.events.append(value.get("Event", ["s", "?"])[1])

    def host_status(self, state: str, bdseq: int) -> None:
        status = {"v": 1, "state": state, "bdseq": bdseq, "ts": time.time(), "seq": 0}
        self.client.publish("sef/hosts/ems/status", json.dumps(status), qos=1, retain=True)

    def energy(self, cmds: list[list[object]]) -> None:
        now = time.time()
        call = {"v": 1, "id": uuid.uuid4().hex, "ts": now, "exp": now + 30, "args": [cmds]}
        topic = f"sef/agents/{self.agent_id}/call/edu.pdx.powerlab.demo/EnergyMethod"
        self.client.publish(topic, json.dumps(call), qos=1)

    def wait_event(self, event: str, timeout_s: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.events and self.events[-1] == event:
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_example_host_loss_policy_and_host_status_rules(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    agent_id = "hl-1"
    argv = agent_command("example", ["--broker", mosquitto.url, "--id", agent_id])
    process = start([*argv, "--host-loss-grace", "1"], tmp_path / "pid", tmp_path / "log")
    ems = Controller(mosquitto.url, agent_id)
    try:
        assert wait_online(mosquitto.url, agent_id), (tmp_path / "log").read_text()
        session = int(time.time() * 1000)
        ems.host_status("online", session)
        ems.energy([["charge", 1, 0]])
        assert ems.wait_event("charge")

        ems.host_status("offline", session + 5)  # a death of a session never announced
        ems.host_status("offline", session - 1)  # the late will of an older session
        ems.host_status("online", 2**63)  # forged: beyond any real bdseq
        ems.host_status("offline", 2**63 + 1)
        time.sleep(2.0)  # past the grace: the agent still sees its controller online
        assert ems.events[-1] == "charge", ems.events

        ems.host_status("offline", session)  # the controller's real will
        assert ems.wait_event("idle", 3.0), ems.events  # open-ended charge ended

        ems.host_status("online", session + 10)
        mark = len(ems.events)
        ems.energy([["charge", 1, 3], ["discharge", 1, 0]])
        assert ems.wait_event("charge")
        ems.host_status("offline", session + 10)
        assert ems.wait_event("idle", 5.0), ems.events  # the timed charge ran to its end
        time.sleep(1.0)
        assert "discharge" not in ems.events[mark:], ems.events  # the rest was dropped
    finally:
        ems.stop()
        kill(tmp_path / "pid")
        process.wait()

"""``sef inverter`` with ``sef emulate inverter`` passes ``sef certify`` at level
recommended, with its own interface ``org.sef.der.Inverter`` checked against the shipped
XML, and a SIGKILL restart through ``--restart-cmd``."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

from certify_support import RestartableAgent, new_agent_id
from rich.console import Console

import sef.interface
from proc_support import SefProcess
from sef.broker import Mosquitto
from sef.certify import CertifyOptions, Level, Outcome, run_certification

DATA = Path(sef.interface.__file__).parent / "data"


@contextlib.contextmanager
def inverter_with_emulator(
    mosquitto: Mosquitto, workdir: Path, groups: tuple[str, ...]
) -> Iterator[RestartableAgent]:
    """``sef inverter`` polling ``sef emulate inverter`` over Modbus TCP."""
    emulator = SefProcess("emulate", "inverter", "--port", "0")
    try:
        port = emulator.wait_line(r"listening on [\d.]+:(\d+)").group(1)
        agent_id = new_agent_id("pv")
        args = ["inverter", "--insecure", "--modbus", f"tcp://127.0.0.1:{port}", "--id", agent_id]
        args += ["--broker", mosquitto.url, "--poll", "0.5", "--dc-kwp", "6"]
        args += [arg for group in groups for arg in ("--group", group)]
        agent = RestartableAgent(workdir, agent_id, args, mosquitto.url)
        try:
            yield agent.start()
        finally:
            agent.stop()
    finally:
        emulator.signal_and_wait(signal.SIGTERM, 5.0)
        emulator.kill()


async def test_inverter_with_emulator_passes(mosquitto: Mosquitto, tmp_path: Path) -> None:
    with (
        inverter_with_emulator(mosquitto, tmp_path / "agent", ("feeder-1",)) as agent,
        (tmp_path / "out.txt").open("w") as log,
    ):
        report = await run_certification(
            CertifyOptions(
                broker=mosquitto.url,
                agent_id=agent.agent_id,
                level=Level.RECOMMENDED,
                restart_cmd=agent.restart_cmd,
                interfaces={
                    name: (DATA / f"{name}.xml").read_bytes()
                    for name in ("edu.pdx.powerlab.demo", "org.sef.der.Inverter")
                },
            ),
            console=Console(file=log, width=200),
        )
    failed = [f"{r.check.id}: {r.evidence}" for r in report.results if r.outcome is Outcome.FAIL]
    assert not failed, failed
    skipped = [f"{r.check.id}: {r.evidence}" for r in report.results if r.outcome is Outcome.SKIP]
    assert not skipped, skipped
    ids = {r.check.id for r in report.results if r.outcome is Outcome.PASS}
    for must in ("birth.order", "sessions.will", "sessions.restart", "demo.commands"):
        assert must in ids
    assert "demo.nameplate" in ids

"""``sef evse`` with ``sef emulate evse`` (OCPP 2.0.1 over wss with Basic auth) passes
``sef certify`` at level recommended, with a SIGKILL restart through ``--restart-cmd``
(the charge point reconnects to the restarted agent by itself).

The EV arrives tomorrow: with an EV plugged in and its departure declared, the suite's
open-ended ``idle`` and ``charge:1`` are refused by the departure guard (as designed:
``docs/evse.md``), so the charger is certified with its connector free."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

from certify_support import RestartableAgent, new_agent_id
from rich.console import Console

import sef.interface
from proc_support import SefProcess
from sef.broker import Mosquitto, free_port
from sef.certify import CertifyOptions, Level, Outcome, run_certification
from sef.security import CertificateAuthority, Role

DATA = Path(sef.interface.__file__).parent / "data"
PASSWORD = "certify-password-0123"


@contextlib.contextmanager
def evse_with_emulator(mosquitto: Mosquitto, workdir: Path) -> Iterator[RestartableAgent]:
    """``sef evse`` (wss, Basic auth) and ``sef emulate evse`` connected to it."""
    ca = CertificateAuthority.init(workdir / "pki", "SEF test CA")
    ca.issue("evse-ocpp", Role.GATEWAY, hosts=("127.0.0.1",))
    passwords = workdir / "ocpp-passwords"
    passwords.write_text(f"CP-1:{PASSWORD}\n")
    os.chmod(passwords, 0o600)
    port = free_port()
    agent_id = new_agent_id("ev")
    args = ["evse", "--insecure", "--listen", f"wss://127.0.0.1:{port}", "--id", agent_id]
    args += ["--charge-point", "CP-1", "--ocpp-passwords", str(passwords)]
    args += ["--ocpp-cert", str(ca.cert_path("evse-ocpp")), "--ocpp-key"]
    args += [str(ca.key_path("evse-ocpp")), "--broker", mosquitto.url, "--poll", "0.5"]
    args += ["--group", "feeder-1"]
    agent = RestartableAgent(workdir / "agent", agent_id, args, mosquitto.url)
    emulator = None
    try:
        agent.start()
        emulator = SefProcess(
            "emulate", "evse", "--ocpp", f"wss://127.0.0.1:{port}/CP-1", "--ocpp-version",
            "2.0.1", "--ca", str(ca.ca_path), "--arrive-in", "86400",
            env={"SEF_OCPP_PASSWORD": PASSWORD},
        )  # fmt: skip
        emulator.wait_line(r"charge point CP-1 booted")
        yield agent
    finally:
        if emulator is not None:
            emulator.signal_and_wait(signal.SIGTERM, 5.0)
            emulator.kill()
        agent.stop()


async def test_evse_with_emulator_passes(mosquitto: Mosquitto, tmp_path: Path) -> None:
    with (
        evse_with_emulator(mosquitto, tmp_path) as agent,
        (tmp_path / "out.txt").open("w") as log,
    ):
        report = await run_certification(
            CertifyOptions(
                broker=mosquitto.url,
                agent_id=agent.agent_id,
                level=Level.RECOMMENDED,
                restart_cmd=agent.restart_cmd,
                interfaces={
                    "edu.pdx.powerlab.demo": (DATA / "edu.pdx.powerlab.demo.xml").read_bytes()
                },
            ),
            console=Console(file=log, width=200),
        )
    print((tmp_path / "out.txt").read_text())
    failed = [f"{r.check.id}: {r.evidence}" for r in report.results if r.outcome is Outcome.FAIL]
    assert not failed, failed
    skipped = [f"{r.check.id}: {r.evidence}" for r in report.results if r.outcome is Outcome.SKIP]
    assert not skipped, skipped
    ids = {r.check.id for r in report.results if r.outcome is Outcome.PASS}
    for must in ("birth.order", "sessions.will", "sessions.restart", "demo.commands"):
        assert must in ids
    assert "demo.nameplate" in ids

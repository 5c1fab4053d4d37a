"""A fleet of emulated devices and their agents, each in its own process.

Battery ``i``: ``sef emulate battery`` (SunSpec Modbus TCP) + ``sef bis``. Water heater
``j``: ``sef emulate waterheater --pty`` (CTA-2045 SGD on a pseudo-terminal) +
``sef ucm`` on that pty. All share one scaled clock through ``SEF_CLOCK``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sef.clock import Clock
from sef.demo._processes import DemoProcesses

__all__ = ["BATTERY_GROUP", "HEATER_GROUP", "Fleet"]

BATTERY_GROUP = "batteries"
HEATER_GROUP = "waterheaters"


@dataclass
class Fleet:
    """Starts and stops the device processes.

    Args:
        broker: broker URL for the agents.
        clock: the shared clock (its spec goes to every process).
        log_dir: one log file per process.
        battery_soc: initial SOC of each battery (fraction); one battery per entry.
        heater_temp_c: initial tank temperature of each water heater (°C).
        bis_poll_s: BIS poll period (real s). ``ucm_poll_s``: UCM poll period (real s).
        agent_args: the security options of agent ``id`` (its ``--cert/--key/--ca``, or
            ``--insecure``).
    """

    broker: str
    clock: Clock
    log_dir: Path
    battery_soc: Sequence[float] = (0.5, 0.5, 0.5)
    heater_temp_c: Sequence[float] = (51.67, 51.67, 51.67)
    bis_poll_s: float = 0.1
    ucm_poll_s: float = 0.1
    agent_args: Callable[[str], list[str]] = field(default=lambda agent_id: ["--insecure"])
    battery_ids: list[str] = field(default_factory=list)
    heater_ids: list[str] = field(default_factory=list)
    processes: DemoProcesses = field(init=False)

    def __post_init__(self) -> None:
        self.processes = DemoProcesses({"SEF_CLOCK": self.clock.spec()}, self.log_dir)

    def _battery(self, i: int) -> str:
        agent_id = f"battery-{i + 1}"
        port = self.processes.start(
            f"battery-emulator-{i + 1}",
            ["emulate", "battery", "--port", "0", "--soc", f"{self.battery_soc[i]:.4f}"],
            r"listening on [\d.]+:(\d+)",
        )
        self.processes.start(
            agent_id,
            [
                "bis",
                "--modbus",
                f"tcp://127.0.0.1:{port}",
                "--id",
                agent_id,
                "--broker",
                self.broker,
                "--group",
                BATTERY_GROUP,
                "--poll",
                str(self.bis_poll_s),
                "--keepalive",
                "5",
                *self.agent_args(agent_id),
            ],
            r"(starting)",
        )
        return agent_id

    def _heater(self, j: int) -> str:
        agent_id = f"waterheater-{j + 1}"
        where = self.processes.start(
            f"sgd-emulator-{j + 1}",
            ["emulate", "waterheater", "--pty", "--start-temp", f"{self.heater_temp_c[j]:.2f}"],
            r"ready on (\S+)",
        )
        self.processes.start(
            agent_id,
            [
                "ucm",
                "--serial",
                where,
                "--id",
                agent_id,
                "--broker",
                self.broker,
                "--group",
                HEATER_GROUP,
                "--poll",
                str(self.ucm_poll_s),
                *self.agent_args(agent_id),
            ],
            r"(starting|ucm)",
        )
        return agent_id

    def start(self) -> None:
        """Start every device and agent (in parallel threads: each takes ~1 s to boot)."""
        with ThreadPoolExecutor(max_workers=4) as pool:
            batteries = [pool.submit(self._battery, i) for i in range(len(self.battery_soc))]
            heaters = [pool.submit(self._heater, j) for j in range(len(self.heater_temp_c))]
            self.battery_ids = [f.result() for f in batteries]
            self.heater_ids = [f.result() for f in heaters]

    def stop(self) -> None:
        self.processes.stop_all()

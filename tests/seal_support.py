"""Helpers of the signed-telemetry tests: a deployment CA with agents, and an agent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sef.agents import Agent, method
from sef.interface import DEMO_INTERFACE, Variant
from sef.security import CertificateAuthority, Role, Security


def make_ca(root: Path, *agents: str) -> tuple[CertificateAuthority, dict[str, Security]]:
    """A CA in ``root`` and credentials for each agent id."""
    ca = CertificateAuthority.init(root)
    out: dict[str, Security] = {}
    for agent_id in agents:
        _, key = ca.issue(agent_id, Role.AGENT)
        out[agent_id] = Security.load(ca.cert_path(agent_id), key, ca.ca_path, ca.crl_path)
    return ca, out


class TelemetryAgent(Agent):
    """Publishes ``AssetName`` and ``Telemetry`` at birth; :meth:`report` publishes more."""

    interfaces = (DEMO_INTERFACE,)

    def __init__(self, agent_id: str, broker: str, **kwargs: Any) -> None:
        super().__init__(agent_id, broker, **kwargs)
        self.reports = 0

    async def on_start(self) -> None:
        self.set_property(DEMO_INTERFACE, "AssetName", self.agent_id)
        self.report()

    def report(self) -> None:
        """One new telemetry value (always a change)."""
        self.reports += 1
        self.set_property(
            DEMO_INTERFACE,
            "Telemetry",
            {"TimeStamp": Variant("u", self.reports), "Sys_SOC": Variant("d", 50.0)},
        )

    @method(DEMO_INTERFACE, "EnergyMethod")
    def energy_method(self, cmds: list[tuple[str, int, int]]) -> None:
        return None

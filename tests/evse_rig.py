"""Test rig for the EV charger: PKI for OCPP Security Profile 2, the agent, an EMS."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sef.agents.evse import EVSEAgent, OcppCharger
from sef.clock import Clock
from sef.ems import EMS, Event
from sef.interface import DEMO_INTERFACE
from sef.protocols.ocpp import client_tls, server_tls
from sef.security import CertificateAuthority, Role

PASSWORD = "correct-horse-battery-01"
CP_ID = "CP-1"
AGENT_ID = "evse-1"


@dataclass
class Tls:
    """A deployment CA, the agent's server context and the charge points' client one."""

    ca: CertificateAuthority
    server: ssl.SSLContext
    client: ssl.SSLContext


OCPP_ID = "evse-1-ocpp"


def make_tls(tmp_path: Path) -> Tls:
    """A CA with the OCPP listener's server certificate for 127.0.0.1 (a server role:
    ``sef pki issue evse-1-ocpp --role gateway --host 127.0.0.1``)."""
    ca = CertificateAuthority.init(tmp_path / "pki", "SEF test CA")
    ca.issue(OCPP_ID, Role.GATEWAY, hosts=("127.0.0.1",))
    server = server_tls(ca.cert_path(OCPP_ID), ca.key_path(OCPP_ID))
    return Tls(ca, server, client_tls(ca.ca_path))


@dataclass
class AgentRig:
    clock: Clock
    agent: EVSEAgent
    ems: EMS
    telemetry: list[dict[str, Any]] = field(default_factory=list)

    @property
    def charger(self) -> OcppCharger:
        return self.agent.device

    @property
    def port(self) -> int:
        return self.charger.listener.port

    def last(self) -> dict[str, Any]:
        return self.telemetry[-1] if self.telemetry else {}

    async def send(self, *events: tuple[str, int, int]) -> Any:
        replies = await self.ems.call(
            AGENT_ID, DEMO_INTERFACE, "EnergyMethod", [[list(e) for e in events]]
        )
        assert replies, "no reply"
        return replies[0]


@contextlib.asynccontextmanager
async def agent_rig(
    broker_url: str,
    clock: Clock,
    *,
    tls: Tls | None,
    port: int = 0,
    unit: str = "W",
    departure_guard: bool = True,
) -> AsyncIterator[AgentRig]:
    """The agent listening (TLS + Basic auth unless ``tls`` is None) and an EMS."""
    charger = OcppCharger(
        CP_ID,
        port=port,
        passwords={CP_ID: PASSWORD} if tls is not None else None,
        ssl_context=tls.server if tls is not None else None,
        unit=unit,
        heartbeat_s=5,
        connect_wait_s=0.2,
    )
    agent = EVSEAgent(
        AGENT_ID,
        broker_url,
        charger,
        poll_s=0.2,
        clock=clock,
        keepalive_s=2,
        departure_guard=departure_guard,
    )
    telemetry: list[dict[str, Any]] = []

    def keep(event: Event) -> None:
        if event.kind == "property" and event.detail == f"{DEMO_INTERFACE}.Telemetry":
            record = ems.registry.get(event.agent_id)
            assert record is not None
            value = record.prop(DEMO_INTERFACE, "Telemetry")
            telemetry.append({k: v[1] for k, v in value.items()})

    ems = EMS(broker_url, "ems-evse", clock=clock, on_event=keep)
    await ems.start()
    await agent.start()
    try:
        await charger.listener.start()
        yield AgentRig(clock, agent, ems, telemetry)
    finally:
        await agent.stop()
        await ems.stop()

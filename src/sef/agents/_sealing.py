"""Signed telemetry of an agent (``docs/protocol.md`` §11): its sealer, and the publishing
of its seals."""

from __future__ import annotations

import asyncio
import logging

from sef.agents._declare import AgentError
from sef.bus import BusClient, BusError
from sef.security import Security, TelemetrySealer

__all__ = ["TelemetrySeals", "make_sealer"]

log = logging.getLogger("sef.agent")


def make_sealer(
    agent_id: str,
    security: Security | None,
    sign: bool | Security,
    window_s: float,
    window_messages: int,
) -> TelemetrySealer | None:
    """The sealer of an agent that signs its telemetry (``sign``), or ``None``.

    ``sign`` is ``True`` (sign with ``security``) or the credentials to sign with;
    ``window_s`` (real s) and ``window_messages`` bound one sealed window. Raises
    :class:`AgentError` for missing credentials or a certificate of another agent.
    """
    if sign is False:
        return None
    credentials = security if sign is True else sign
    if credentials is None:
        raise AgentError(f"agent {agent_id}: sign_telemetry needs credentials (security=)")
    if credentials.identity.id != agent_id:
        raise AgentError(
            f"agent {agent_id}: telemetry would be signed by {credentials.identity.id!r}, "
            "whose seals an EMS refuses (the certificate must be the agent's own)"
        )
    try:
        return TelemetrySealer(credentials, window_s=window_s, window_messages=window_messages)
    except ValueError as exc:
        raise AgentError(f"agent {agent_id}: {exc}") from None


class TelemetrySeals:
    """Seals an agent's telemetry windows and publishes the seals on ``topic``.

    Every telemetry message the agent publishes goes through :meth:`add`; a window is
    sealed when it is full, when :meth:`run` finds it ``window_s`` old, before each birth
    (:meth:`new_session`) and before a clean shutdown (:meth:`publish`).
    """

    def __init__(self, sealer: TelemetrySealer, bus: BusClient, topic: str, agent_id: str):
        self.sealer = sealer
        self.bus = bus
        self.topic = topic
        self.agent_id = agent_id

    def add(self, topic: str, seq: int, payload: bytes) -> None:
        """Hash one published telemetry message into the window (sealing a full one)."""
        if self.sealer.add(topic, seq, payload):
            self.publish()

    def new_session(self, bdseq: int) -> None:
        """Seal the previous birth's window, then start the chain of session ``bdseq``."""
        self.publish()
        self.sealer.start_session(bdseq)

    def publish(self) -> None:
        """Seal the open telemetry window (if it holds messages)."""
        if not self.sealer.count:
            return
        seal = self.sealer.seal()
        try:
            if seal is not None:
                self.bus.publish(self.topic, seal)
        except BusError as exc:  # the EMS reports that window unverified
            log.warning("agent %s: telemetry seal not published: %s", self.agent_id, exc)

    async def run(self) -> None:
        """Seal a window once it is ``window_s`` old (real s); runs until cancelled."""
        while True:
            await asyncio.sleep(self.sealer.window_s / 4)
            try:
                if self.sealer.due():
                    self.publish()
            except Exception:  # keep sealing later windows; the EMS reports this one
                log.exception("agent %s: sealing telemetry failed", self.agent_id)

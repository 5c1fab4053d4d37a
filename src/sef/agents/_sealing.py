"""The telemetry sealer of an agent that signs its telemetry (``docs/protocol.md`` §11)."""

from __future__ import annotations

from sef.agents._declare import AgentError
from sef.security import Security, TelemetrySealer

__all__ = ["make_sealer"]


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

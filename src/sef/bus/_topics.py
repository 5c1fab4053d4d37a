"""The SEF topic tree (see ``docs/protocol.md``).

All topics live under one root (default ``sef``)::

    {root}/agents/{agent_id}/status                       retained  presence, birth/death
    {root}/agents/{agent_id}/about                        retained  About announcement
    {root}/agents/{agent_id}/interfaces/{interface}       retained  interface XML (text, v1)
    {root}/interfaces/{sha256}                            retained  interface XML, once per hash
    {root}/agents/{agent_id}/props/{interface}/{property} retained  property value
    {root}/agents/{agent_id}/signals/{interface}/{signal}           signal emission
    {root}/agents/{agent_id}/call/{interface}/{method}              method call to one agent
    {root}/agents/{agent_id}/seal                                   seal of a telemetry window
    {root}/groups/{group}/call/{interface}/{method}                 method call to a group
    {root}/hosts/{host_id}/status                         retained  EMS (primary host) status
    {root}/gateways/{home}/status                         retained  home uplink: 1 up, 0 down
    {root}/gateways/{home}/agents                         retained  agents behind a home
    {root}/gateways/{home}/stats                          retained  home relay statistics
    {root}/clients/{client_id}/reply                                replies to a caller
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["InvalidName", "ParsedTopic", "TopicKind", "Topics", "check_id"]

_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")
_DOTTED_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_MEMBER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class InvalidName(ValueError):
    """An agent, group, host or client id, or an interface/member name, is not allowed."""


def check_id(kind: str, value: str) -> str:
    """Return ``value`` if it is a valid id (1–64 of ``A-Z a-z 0-9 _ . -``, not leading ``.-``)."""
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise InvalidName(
            f"invalid {kind} id {value!r}: use 1-64 characters from A-Z a-z 0-9 _ . - "
            "(not starting with . or -)"
        )
    return value


def _check_interface(name: str) -> str:
    if not _DOTTED_RE.fullmatch(name) or len(name) > 255:
        raise InvalidName(f"invalid interface name {name!r}")
    return name


def _check_member(name: str) -> str:
    if not _MEMBER_RE.fullmatch(name) or len(name) > 255:
        raise InvalidName(f"invalid member name {name!r}")
    return name


class TopicKind(StrEnum):
    """What a topic carries."""

    STATUS = "status"
    ABOUT = "about"
    INTERFACE = "interfaces"
    PROPERTY = "props"
    SIGNAL = "signals"
    CALL = "call"
    GROUP_CALL = "group_call"
    HOST_STATUS = "host_status"
    REPLY = "reply"
    GATEWAY_STATUS = "gateway_status"
    GATEWAY_AGENTS = "gateway_agents"
    GATEWAY_STATS = "gateway_stats"
    SEAL = "seal"
    INTERFACE_BLOB = "interface_blob"
    """``{root}/interfaces/{sha256}``: an interface XML retained once for every agent that
    announces it (owner: the lowercase hex SHA-256 of the payload)."""


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    """A topic split into its parts; ``owner`` is the agent, group, host or client id."""

    kind: TopicKind
    owner: str
    interface: str | None = None
    member: str | None = None


@dataclass(frozen=True)
class Topics:
    """Builds and parses the topics under ``root``."""

    root: str = "sef"

    def __post_init__(self) -> None:
        if not self.root or any(c in self.root for c in "+#") or self.root.endswith("/"):
            raise InvalidName(f"invalid topic root {self.root!r}")

    # -- builders -----------------------------------------------------------------
    def agent_prefix(self, agent_id: str) -> str:
        return f"{self.root}/agents/{check_id('agent', agent_id)}"

    def status(self, agent_id: str) -> str:
        return f"{self.agent_prefix(agent_id)}/status"

    def about(self, agent_id: str) -> str:
        return f"{self.agent_prefix(agent_id)}/about"

    def interface_xml(self, agent_id: str, interface: str) -> str:
        return f"{self.agent_prefix(agent_id)}/interfaces/{_check_interface(interface)}"

    def prop(self, agent_id: str, interface: str, prop: str) -> str:
        return (
            f"{self.agent_prefix(agent_id)}/props/{_check_interface(interface)}/"
            f"{_check_member(prop)}"
        )

    def signal(self, agent_id: str, interface: str, signal: str) -> str:
        return (
            f"{self.agent_prefix(agent_id)}/signals/{_check_interface(interface)}/"
            f"{_check_member(signal)}"
        )

    def interface_blob(self, sha256: str) -> str:
        """An interface XML retained once per hash (``sha256``: lowercase hex of the XML)."""
        if not _SHA256_RE.fullmatch(sha256):
            raise InvalidName(f"invalid interface hash {sha256!r}: 64 lowercase hex digits")
        return f"{self.root}/interfaces/{sha256}"

    def seal(self, agent_id: str) -> str:
        """Seals of an agent's telemetry windows (signed telemetry, protocol version 2)."""
        return f"{self.agent_prefix(agent_id)}/seal"

    def call(self, agent_id: str, interface: str, method: str) -> str:
        return (
            f"{self.agent_prefix(agent_id)}/call/{_check_interface(interface)}/"
            f"{_check_member(method)}"
        )

    def group_call(self, group: str, interface: str, method: str) -> str:
        return (
            f"{self.root}/groups/{check_id('group', group)}/call/{_check_interface(interface)}/"
            f"{_check_member(method)}"
        )

    def host_status(self, host_id: str) -> str:
        return f"{self.root}/hosts/{check_id('host', host_id)}/status"

    def reply(self, client_id: str) -> str:
        return f"{self.root}/clients/{check_id('client', client_id)}/reply"

    def gateway_status(self, home_id: str) -> str:
        """Bridge state of a home gateway: ``1`` up, ``0`` down (Mosquitto notification)."""
        return f"{self.root}/gateways/{check_id('home', home_id)}/status"

    def gateway_agents(self, home_id: str) -> str:
        """Retained list of the agents behind a home gateway."""
        return f"{self.root}/gateways/{check_id('home', home_id)}/agents"

    def gateway_stats(self, home_id: str) -> str:
        """Retained statistics of a home gateway's relay (queue, drops; JSON)."""
        return f"{self.root}/gateways/{check_id('home', home_id)}/stats"

    # -- subscription patterns ----------------------------------------------------
    def all_agents(self) -> list[str]:
        """Patterns an EMS subscribes to for discovery and telemetry: the interface XML
        retained once per hash first (protocol version 2: a fresh subscriber then holds
        the XML before the Abouts that refer to it arrive), then each agent's topics
        (with the per-agent XML of protocol version 1)."""
        base = f"{self.root}/agents/+"
        return [
            self.all_interface_blobs(),
            f"{base}/status",
            f"{base}/about",
            f"{base}/interfaces/+",
            f"{base}/props/#",
            f"{base}/signals/#",
        ]

    def all_interface_blobs(self) -> str:
        """Pattern of the interface XML retained once per hash."""
        return f"{self.root}/interfaces/+"

    def all_seals(self) -> str:
        """Pattern an EMS that checks signed telemetry subscribes to."""
        return f"{self.root}/agents/+/seal"

    def all_gateways(self) -> list[str]:
        """Patterns an EMS subscribes to for home gateways' bridge state and agent lists."""
        return [f"{self.root}/gateways/+/status", f"{self.root}/gateways/+/agents"]

    def all_gateway_stats(self) -> str:
        """Pattern an EMS subscribes to for home gateways' relay statistics."""
        return f"{self.root}/gateways/+/stats"

    def all_hosts(self) -> str:
        return f"{self.root}/hosts/+/status"

    # -- parser -------------------------------------------------------------------
    def parse(self, topic: str) -> ParsedTopic | None:
        """Split a topic of this tree, or return ``None`` if it is not one of ours."""
        prefix = self.root + "/"
        if not topic.startswith(prefix):
            return None
        parts = topic[len(prefix) :].split("/")
        parsed = _split(parts)
        if parsed is None:
            return None
        if not _ID_RE.fullmatch(parsed.owner):
            return None
        if parsed.interface is not None and not (
            _DOTTED_RE.fullmatch(parsed.interface) and len(parsed.interface) <= 255
        ):
            return None
        if parsed.member is not None and not _MEMBER_RE.fullmatch(parsed.member):
            return None
        return parsed


_GATEWAY_KINDS = {
    "status": TopicKind.GATEWAY_STATUS,
    "agents": TopicKind.GATEWAY_AGENTS,
    "stats": TopicKind.GATEWAY_STATS,
}


def _split(parts: list[str]) -> ParsedTopic | None:
    """The kind and parts of a topic below the root, unchecked."""
    n = len(parts)
    head = parts[0]
    if head == "agents" and n >= 3:
        owner, kind = parts[1], parts[2]
        if n == 3 and kind in ("status", "about", "seal"):
            return ParsedTopic(TopicKind(kind), owner)
        if n == 4 and kind == "interfaces":
            return ParsedTopic(TopicKind.INTERFACE, owner, parts[3])
        if n == 5 and kind in ("props", "signals", "call"):
            return ParsedTopic(TopicKind(kind), owner, parts[3], parts[4])
    elif head == "interfaces" and n == 2 and _SHA256_RE.fullmatch(parts[1]):
        return ParsedTopic(TopicKind.INTERFACE_BLOB, parts[1])
    elif head == "groups" and n == 5 and parts[2] == "call":
        return ParsedTopic(TopicKind.GROUP_CALL, parts[1], parts[3], parts[4])
    elif head == "hosts" and n == 3 and parts[2] == "status":
        return ParsedTopic(TopicKind.HOST_STATUS, parts[1])
    elif head == "clients" and n == 3 and parts[2] == "reply":
        return ParsedTopic(TopicKind.REPLY, parts[1])
    elif head == "gateways" and n == 3 and parts[2] in _GATEWAY_KINDS:
        return ParsedTopic(_GATEWAY_KINDS[parts[2]], parts[1])
    return None

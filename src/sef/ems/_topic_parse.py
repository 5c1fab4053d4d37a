"""Topic parsing for the EMS registry without a bounded per-topic cache (issue 16).

The registry used to remember the parse of the last 65 536 topics; with more agents than
that every message missed the cache and the churn cost a full garbage collection now and
then (ingest fell to a third). :class:`AgentTopicParser` parses an agent topic
(``{root}/agents/{id}/...``) with one ``str.split`` and cheap checks instead:

* the agent id is taken as valid without a regex when the registry knows it already (it
  was checked when its record was made); otherwise it is checked as
  :meth:`sef.bus.Topics.parse` does;
* the ``{interface}/{member}`` part of a property, signal or call topic is checked once
  per distinct pair and remembered: a fleet has a few hundred such pairs, not one per
  agent (the memo is bounded by :data:`PAIR_MEMO_SIZE`; past it the pair is checked
  every time, never cleared).

Every other topic (interface blobs, groups, hosts, clients, gateways) goes to
:meth:`sef.bus.Topics.parse`. The result is the same :class:`~sef.bus.ParsedTopic` as
``Topics.parse`` (a test compares both on generated topics).
"""

from __future__ import annotations

import re
from collections.abc import Container

from sef.bus import ParsedTopic, TopicKind, Topics

__all__ = ["PAIR_MEMO_SIZE", "AgentTopicParser", "Split"]

PAIR_MEMO_SIZE = 65_536
"""Distinct ``(interface, member)`` pairs whose check is remembered."""

# the rules of sef.bus._topics (kept equal by tests/ems/test_registry_parse.py)
_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")
_DOTTED_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_MEMBER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Split = tuple[TopicKind, str, str | None, str | None]
"""A parsed topic as ``(kind, owner, interface, member)``."""
_INTERFACE = TopicKind.INTERFACE
_SHORT = {"status": TopicKind.STATUS, "about": TopicKind.ABOUT, "seal": TopicKind.SEAL}
_PAIR_KINDS = {
    "props": TopicKind.PROPERTY,
    "signals": TopicKind.SIGNAL,
    "call": TopicKind.CALL,
}


class AgentTopicParser:
    """Parses topics of ``topics``' tree; agent topics fast (module docstring).

    Args:
        topics: the topic tree.
        known: agent ids already checked (the registry's agents), taken as valid.
    """

    def __init__(self, topics: Topics, known: Container[str]) -> None:
        self.topics = topics
        self.known = known
        self._prefix = f"{topics.root}/agents/"
        self._cut = len(self._prefix)
        self._pairs: dict[tuple[str, str], bool] = {}
        self._interfaces: dict[str, bool] = {}

    def parse(self, topic: str) -> ParsedTopic | None:
        """The parts of ``topic``, or ``None`` if it is not a valid topic of the tree."""
        split = self.split(topic)
        return None if split is None else ParsedTopic(*split)

    def split(self, topic: str) -> Split | None:
        """:meth:`parse` as a plain tuple ``(kind, owner, interface, member)`` (a frozen
        dataclass costs ~10 times a tuple to make, per message)."""
        if not topic.startswith(self._prefix):
            parsed = self.topics.parse(topic)
            if parsed is None:
                return None
            return (parsed.kind, parsed.owner, parsed.interface, parsed.member)
        parts = topic[self._cut :].split("/")
        owner = parts[0]
        if owner not in self.known and not _ID_RE.fullmatch(owner):
            return None
        n = len(parts)
        if n == 4:
            kind = _PAIR_KINDS.get(parts[1])
            if kind is None:
                return None
            interface, member = parts[2], parts[3]
            if not self._pair_ok(interface, member):
                return None
            return (kind, owner, interface, member)
        if n == 2:
            short = _SHORT.get(parts[1])
            return None if short is None else (short, owner, None, None)
        if n == 3 and parts[1] == "interfaces":
            interface = parts[2]
            if not self._interface_ok(interface):
                return None
            return (_INTERFACE, owner, interface, None)
        return None

    def _pair_ok(self, interface: str, member: str) -> bool:
        key = (interface, member)
        ok = self._pairs.get(key)
        if ok is None:
            ok = self._interface_ok(interface) and _MEMBER_RE.fullmatch(member) is not None
            if len(self._pairs) < PAIR_MEMO_SIZE:
                self._pairs[key] = ok
        return ok

    def _interface_ok(self, interface: str) -> bool:
        ok = self._interfaces.get(interface)
        if ok is None:
            ok = len(interface) <= 255 and _DOTTED_RE.fullmatch(interface) is not None
            if len(self._interfaces) < PAIR_MEMO_SIZE:
                self._interfaces[interface] = ok
        return ok

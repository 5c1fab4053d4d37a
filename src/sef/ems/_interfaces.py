"""Interface definitions the registry pins and learns from agents.

The definitions SEF ships (:func:`sef.interface.builtin_names`) and the ones the operator
pinned cannot be redefined by an agent, and the first definition learned of any other name
stays the EMS-wide one: a conflicting XML is a bad message of that agent only.

:class:`InterfaceRules` holds the registry's interface steps;
:class:`~sef.ems._registry.Registry` inherits them and keeps their state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sef.bus import InterfaceRef, PayloadError
from sef.ems._events import Event, InterfaceLoaded
from sef.ems._records import AgentRecord
from sef.interface import Interface, InterfaceError, is_earlier_revision, load_xml
from sef.logthrottle import LogThrottle

__all__ = [
    "MAX_LEARNED_INTERFACES",
    "MAX_WANTED_BLOBS",
    "MAX_XML_BYTES",
    "XML_CACHE_SIZE",
    "InterfaceRules",
]

MAX_XML_BYTES = 256 * 1024
XML_CACHE_SIZE = 1024
"""Parsed interface XML documents the registry keeps by SHA-256 (official ones always)."""
MAX_LEARNED_INTERFACES = 1000
"""Interface names the registry learns from agents (besides the pinned ones)."""
MAX_WANTED_BLOBS = 1024
"""Announced interface hashes whose XML the registry waits for."""


class InterfaceRules:
    """The registry's pinned and learned interface definitions (a mixin of
    :class:`~sef.ems._registry.Registry`, which sets the state below)."""

    interfaces_by_hash: dict[str, Interface]
    interfaces_by_name: dict[str, Interface]
    pinned: dict[str, Interface]
    bad_messages: int
    log_bad: LogThrottle
    _wanted_blobs: dict[str, set[str]]
    """Hashes an admitted agent's About announced whose XML the registry has not seen yet
    -> the interface names announced with them (bounded, :data:`MAX_WANTED_BLOBS`)."""

    def interface(self, name: str) -> Interface | None:
        """The EMS-wide definition of interface ``name``: learned from agents' XML (which
        for a pinned or shipped interface must equal it), else the pinned one."""
        return self.interfaces_by_name.get(name) or self.pinned.get(name)

    def _learn_announced(self, refs: Iterable[InterfaceRef]) -> None:
        """Learn the interfaces an About announces whose XML is cached already; remember
        the others' hashes, so that their XML retained once per hash
        (``{root}/interfaces/{sha256}``) is learned when it arrives."""
        for ref in refs:
            known = self.interfaces_by_hash.get(ref.sha256)
            if known is None and ref.name not in self.interfaces_by_name:
                wanted = self._wanted_blobs
                if ref.sha256 in wanted or len(wanted) < MAX_WANTED_BLOBS:
                    wanted.setdefault(ref.sha256, set()).add(ref.name)
            if (
                known is not None
                and known.name == ref.name  # the hash may be another interface's XML
                and ref.name not in self.interfaces_by_name
                and len(self.interfaces_by_name) < MAX_LEARNED_INTERFACES
                and self._conflict(ref.name, known) is None
            ):
                self.interfaces_by_name[ref.name] = self._definition(ref.name, known)

    def _interface_blob(self, digest: str, payload: bytes) -> list[Event]:
        """An interface XML retained once per hash (protocol version 2): parsed and cached
        when its SHA-256 is ``digest``; its interface is learned only if an admitted
        agent's About announced it under this hash (so that no client can define an
        interface name first by publishing a blob). A payload whose hash is not the
        topic's, or that does not load, is a bad message; an empty one (cleared) is
        nothing."""
        if not payload:
            return []
        if len(payload) > MAX_XML_BYTES:
            return self._bad_blob(digest, f"{len(payload)} bytes exceeds {MAX_XML_BYTES}")
        if hashlib.sha256(payload).hexdigest() != digest:
            return self._bad_blob(digest, "payload's SHA-256 is not the topic's")
        iface = self.interfaces_by_hash.get(digest)
        if iface is None:
            try:
                node = load_xml(payload, source=f"interfaces/{digest[:12]}")
            except InterfaceError as exc:
                return self._bad_blob(digest, f"does not load: {exc}")
            if len(node.interfaces) != 1:
                return self._bad_blob(
                    digest, f"defines {len(node.interfaces)} interfaces (exactly 1 expected)"
                )
            iface = next(iter(node.interfaces.values()))
            self._cache_xml(digest, iface)
        names = self._wanted_blobs.pop(digest, set())
        if iface.name in names:
            self._learn_announced([InterfaceRef(iface.name, digest)])
        return []

    def _bad_blob(self, digest: str, reason: str) -> list[Event]:
        """Count and log (throttled) a refused interface XML of ``{root}/interfaces/``."""
        self.bad_messages += 1
        self.log_bad.warn(
            "interfaces",
            reason.split(":", 1)[0][:60],
            "interface XML %s refused: %s",
            digest[:12],
            reason,
        )
        return []

    def _interface(self, record: AgentRecord, name: str, payload: bytes) -> list[Event]:
        if not payload:
            return []
        if len(payload) > MAX_XML_BYTES:
            raise PayloadError(f"interface XML of {len(payload)} bytes exceeds {MAX_XML_BYTES}")
        digest = hashlib.sha256(payload).hexdigest()
        iface = self.interfaces_by_hash.get(digest)
        if iface is None or iface.name != name:  # cached XML must define this name too
            try:
                node = load_xml(payload, source=f"{record.agent_id}:{name}")
            except InterfaceError as exc:
                raise PayloadError(f"interface XML does not load: {exc}") from None
            if name not in node.interfaces:
                raise PayloadError(f"interface XML published for {name} does not define it")
            iface = node.interfaces[name]
            self._cache_xml(digest, iface)
        conflict = self._conflict(name, iface)
        if conflict is not None:
            record.rejected_interfaces[name] = conflict
            raise PayloadError(conflict)
        if (
            name not in self.interfaces_by_name
            and name not in self.pinned
            and len(self.interfaces_by_name) >= MAX_LEARNED_INTERFACES
        ):
            raise PayloadError(
                f"interface {name} not learned: the EMS knows {MAX_LEARNED_INTERFACES} "
                "interfaces already"
            )
        record.rejected_interfaces.pop(name, None)
        self.interfaces_by_name.setdefault(name, self._definition(name, iface))
        return [InterfaceLoaded(record.agent_id, name)]

    def _definition(self, name: str, iface: Interface) -> Interface:
        """What the EMS takes as ``name``'s definition from an accepted ``iface``: the
        pinned one when ``iface`` is an earlier revision of it, else ``iface`` itself
        (equal to the pinned one, parsed once per XML)."""
        pinned = self.pinned.get(name)
        return pinned if pinned is not None and iface != pinned else iface

    def _conflict(self, name: str, iface: Interface) -> str | None:
        """Why ``iface`` may not be the definition of ``name`` (or ``None``): it differs
        from the pinned (shipped) definition, or from the one learned first."""
        pinned = self.pinned.get(name)
        if (
            pinned is not None
            and iface is not pinned
            and iface != pinned
            and not is_earlier_revision(iface, pinned)  # an agent built before an addition
        ):
            return f"interface {name} differs from the EMS's pinned definition: rejected"
        learned = self.interfaces_by_name.get(name)
        if learned is not None and iface is not learned and iface != learned:
            return (
                f"interface {name} differs from the definition the EMS learned first: rejected "
                "(pin the new definition to change it)"
            )
        return None

    def _cache_xml(self, digest: str, iface: Interface) -> None:
        """Keep a parsed XML by hash; the cache is bounded (official definitions stay)."""
        cache = self.interfaces_by_hash
        if len(cache) >= XML_CACHE_SIZE:
            official = {id(i) for i in self.interfaces_by_name.values()}
            for key in [k for k, v in cache.items() if id(v) not in official][
                : XML_CACHE_SIZE // 4
            ]:
                del cache[key]
        cache[digest] = iface

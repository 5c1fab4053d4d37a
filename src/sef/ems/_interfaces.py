"""Interface definitions the registry pins and learns from agents.

The definitions SEF ships (:func:`sef.interface.builtin_names`) and the ones the operator
pinned cannot be redefined by an agent, and the first definition learned of any other name
stays the EMS-wide one: a conflicting XML is a bad message of that agent only.

An agent's XML comes on its own topic (protocol version 1) or once per hash on
``{root}/interfaces/{sha256}`` (version 2; :mod:`sef.ems._blobs` keeps those): either way
the About's (name, SHA-256) references say which XML defines which of its interfaces.

:class:`InterfaceRules` holds the registry's interface steps;
:class:`~sef.ems._registry.Registry` inherits them and keeps their state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

from sef.bus import InterfaceRef, PayloadError, Topics
from sef.ems._blobs import BlobBook
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
    agents: dict[str, AgentRecord]
    topics: Topics
    monotonic: Callable[[], float]
    bad_messages: int
    log_bad: LogThrottle
    _wanted_blobs: dict[str, set[str]]
    """Hashes an admitted agent's About announced whose XML the registry has not seen yet
    -> the interface names announced with them (bounded, :data:`MAX_WANTED_BLOBS`)."""

    def interface(self, name: str) -> Interface | None:
        """The EMS-wide definition of interface ``name``: learned from agents' XML (which
        for a pinned or shipped interface must equal it), else the pinned one."""
        return self.interfaces_by_name.get(name) or self.pinned.get(name)

    @property
    def blob_book(self) -> BlobBook:
        """The XML retained once per hash that this registry verified (created on first
        use; the EMS sets its :attr:`~sef.ems._blobs.BlobBook.repair`)."""
        book = self.__dict__.get("_blob_book")
        if book is None:
            book = self.__dict__["_blob_book"] = BlobBook()
        return book

    def unresolved_interfaces(self, record: AgentRecord) -> list[str]:
        """Interfaces ``record``'s About announced whose XML the EMS has not seen (neither
        on the hash topic nor on the agent's own topic) and that it does not know
        otherwise (shipped or pinned): an incomplete birth, which a ``Rebirth`` repairs
        (the agent then publishes its XML again)."""
        raw = self.blob_book.raw
        return [
            name
            for name, digest in record.interfaces.items()
            if name not in self.pinned
            and digest not in self.interfaces_by_hash
            and digest not in raw
            and name not in record.rejected_interfaces
        ]

    def _learn_announced(
        self, refs: Iterable[InterfaceRef], record: AgentRecord | None = None
    ) -> None:
        """Learn the interfaces an About announces whose XML the EMS holds already; mark
        the ones whose XML conflicts as rejected for ``record``; remember the others'
        hashes, so that their XML retained once per hash (``{root}/interfaces/{sha256}``)
        is taken when it arrives."""
        for ref in refs:
            iface = self._parsed_blob(ref.sha256)
            if iface is None:
                if ref.sha256 in self.blob_book.unloadable:
                    if record is not None:
                        record.rejected_interfaces[ref.name] = (
                            f"interface {ref.name}: the XML of its hash does not load"
                        )
                    continue
                wanted = self._wanted_blobs
                if ref.sha256 in wanted or len(wanted) < MAX_WANTED_BLOBS:
                    wanted.setdefault(ref.sha256, set()).add(ref.name)
                    if record is not None:
                        self.blob_book.wait(ref.sha256, record.agent_id)
                continue
            self._take_announced(ref.name, iface, record)

    def _take_announced(self, name: str, iface: Interface, record: AgentRecord | None) -> None:
        """``record`` (if given) announced ``name`` with an XML that defines ``iface``:
        learn it, or mark it rejected for ``record``."""
        if iface.name != name:  # the hash is another interface's XML
            why: str | None = f"interface {name}: the XML of its hash defines {iface.name}"
        else:
            why = self._conflict(name, iface)
        if why is None and name not in self.interfaces_by_name:
            if len(self.interfaces_by_name) >= MAX_LEARNED_INTERFACES and name not in self.pinned:
                why = (
                    f"interface {name} not learned: the EMS knows {MAX_LEARNED_INTERFACES} "
                    "interfaces already"
                )
            else:
                self.interfaces_by_name[name] = self._definition(name, iface)
        if record is None:
            return
        if why is None:
            record.rejected_interfaces.pop(name, None)
        else:
            record.rejected_interfaces[name] = why

    def _parsed_blob(self, digest: str) -> Interface | None:
        """The interface of the verified XML held for ``digest`` (parsed now if needed),
        or ``None`` if the EMS has not got it or it does not load (then remembered as
        unloadable, and a bad message)."""
        iface = self.interfaces_by_hash.get(digest)
        if iface is not None:
            return iface
        book = self.blob_book
        xml = book.raw.get(digest)
        if xml is None or digest in book.unloadable:
            return None
        try:
            node = load_xml(xml, source=f"interfaces/{digest[:12]}")
        except InterfaceError as exc:
            reason = f"does not load: {exc}"
        else:
            if len(node.interfaces) == 1:
                iface = next(iter(node.interfaces.values()))
                self._cache_xml(digest, iface)
                return iface
            reason = f"defines {len(node.interfaces)} interfaces (exactly 1 expected)"
        book.mark_unloadable(digest, reason)
        self._bad_blob(digest, reason)
        return None

    def _interface_blob(self, digest: str, payload: bytes) -> list[Event]:
        """An interface XML retained once per hash (protocol version 2). Kept when its
        SHA-256 is ``digest``; parsed, and its interface learned, only when an admitted
        agent's About announced it under this hash (so that no client can define an
        interface name first by publishing a blob, nor make the EMS parse XML nobody
        uses). A payload whose hash is not the topic's or too big is a bad message; an
        empty one (cleared) is nothing. When the broker's copy of an XML the EMS holds is
        overwritten or cleared, the EMS puts it back (:class:`~sef.ems._blobs.BlobBook`)."""
        book = self.blob_book
        known = book.raw.get(digest)
        if known is not None and known == payload:  # a birth that published it again
            book.duplicates += 1
            return []
        if not payload or len(payload) > MAX_XML_BYTES:
            reason = f"{len(payload)} bytes exceeds {MAX_XML_BYTES}" if payload else None
        elif hashlib.sha256(payload).hexdigest() != digest:
            reason = "payload's SHA-256 is not the topic's"
        else:
            book.keep(digest, payload, self._in_use)
            self._resolve_wanted(digest)
            return []
        if known is not None:  # overwritten or cleared: a later EMS could not learn it
            book.put_back(self.topics.interface_blob(digest), digest, self.monotonic())
        return [] if reason is None else self._bad_blob(digest, reason)

    def _resolve_wanted(self, digest: str) -> None:
        """The XML of an awaited hash arrived: learn it, or mark the agents that wait for
        it whose definition conflicts."""
        names = self._wanted_blobs.pop(digest, set())
        agents = self.blob_book.waiting.pop(digest, [])
        if not names:
            return
        iface = self._parsed_blob(digest)
        for agent_id in agents:
            record = self.agents.get(agent_id)
            if record is None:
                continue
            for name, announced in record.interfaces.items():
                if announced == digest:
                    if iface is None:
                        record.rejected_interfaces[name] = (
                            f"interface {name}: the XML of its hash does not load"
                        )
                    else:
                        self._take_announced(name, iface, record)
        if iface is not None:  # agents past MAX_WAITING_AGENTS: learned by name
            for name in names:
                self._take_announced(name, iface, None)

    def _in_use(self, digest: str) -> bool:
        iface = self.interfaces_by_hash.get(digest)
        return iface is not None and self.interfaces_by_name.get(iface.name) is iface

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

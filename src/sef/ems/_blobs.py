"""The registry's book of interface XML retained once per hash (protocol version 2,
``{root}/interfaces/{sha256}``, ``docs/protocol.md`` §4.2).

The book keeps each verified XML as bytes (its SHA-256 is its topic's), parses it only
when an agent's About announces its hash (an XML nobody announced costs a hash, never a
parse), remembers which agents wait for an XML not seen yet, and puts back the broker's
retained copy of an XML it holds when someone overwrites it with other bytes or clears
it (:attr:`BlobBook.repair`, rate-limited), so that an EMS started later still finds it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sef.bus import BusError

__all__ = [
    "MAX_BLOB_BOOK_BYTES",
    "MAX_WAITING_AGENTS",
    "REPAIR_INTERVAL_S",
    "BlobBook",
]

log = logging.getLogger("sef.ems")

MAX_BLOB_BOOK_BYTES = 16 * 1024 * 1024
"""Verified XML bytes the book keeps (oldest unused ones go first beyond it)."""
MAX_WAITING_AGENTS = 256
"""Agents remembered per awaited hash (to mark a conflicting definition as theirs)."""
REPAIR_INTERVAL_S = 30.0
"""Shortest time, monotonic s, between two repairs of one hash's retained copy."""
MAX_BAD_HASHES = 1024
"""Hashes remembered as unloadable (not parsed again)."""


@dataclass
class BlobBook:
    """Verified interface XML by hash, and who waits for which (bounded)."""

    raw: dict[str, bytes] = field(default_factory=dict)
    """Verified XML by SHA-256 (insertion ordered: the oldest is evicted first)."""
    total: int = 0
    """Bytes in :attr:`raw`."""
    waiting: dict[str, list[str]] = field(default_factory=dict)
    """Awaited hash -> agent ids whose About announced it (at most
    :data:`MAX_WAITING_AGENTS` each)."""
    unloadable: dict[str, str] = field(default_factory=dict)
    """Hash -> why its (verified) XML does not define one interface."""
    repair: Callable[[str, bytes], object] | None = None
    """Publishes ``(topic, xml)`` retained; set by the EMS (``None``: no repair)."""
    repaired_at: dict[str, float] = field(default_factory=dict)
    received: int = 0
    """Blobs taken (new hashes)."""
    duplicates: int = 0
    """Blobs received again with the bytes the book holds (cheap: one comparison)."""
    repaired: int = 0
    """Retained copies put back after an overwrite or a clear."""

    def keep(self, digest: str, xml: bytes, in_use: Callable[[str], bool]) -> None:
        """Keep a verified XML; beyond :data:`MAX_BLOB_BOOK_BYTES` drop the oldest ones
        not ``in_use`` (an interface definition the EMS uses)."""
        if digest in self.raw:
            return
        self.raw[digest] = xml
        self.total += len(xml)
        self.received += 1
        if self.total <= MAX_BLOB_BOOK_BYTES:
            return
        for old in list(self.raw):
            if self.total <= MAX_BLOB_BOOK_BYTES * 3 // 4:
                break
            if old != digest and not in_use(old):
                self.total -= len(self.raw.pop(old))

    def wait(self, digest: str, agent_id: str) -> None:
        """``agent_id`` announced ``digest``, whose XML the book has not got."""
        agents = self.waiting.setdefault(digest, [])
        if len(agents) < MAX_WAITING_AGENTS and agent_id not in agents:
            agents.append(agent_id)

    def mark_unloadable(self, digest: str, reason: str) -> None:
        if len(self.unloadable) >= MAX_BAD_HASHES:
            self.unloadable.pop(next(iter(self.unloadable)))
        self.unloadable[digest] = reason

    def put_back(self, topic: str, digest: str, now: float) -> bool:
        """Republish the XML the book holds for ``digest`` (retained) unless it was done
        less than :data:`REPAIR_INTERVAL_S` ago or no repair is set. Returns whether."""
        xml = self.raw.get(digest)
        if xml is None or self.repair is None:
            return False
        last = self.repaired_at.get(digest)
        if last is not None and now - last < REPAIR_INTERVAL_S:
            return False
        if len(self.repaired_at) >= MAX_BAD_HASHES:
            self.repaired_at.clear()
        self.repaired_at[digest] = now
        try:
            self.repair(topic, xml)
        except (BusError, OSError, RuntimeError) as exc:
            log.warning("interface XML %s not put back: %s", digest[:12], exc)
            return False
        self.repaired += 1
        log.warning("interface XML %s put back on the broker (overwritten or cleared)", digest[:12])
        return True

"""An agent's interface XML retained once per hash (protocol version 2, ``docs/protocol.md``
§4.2): ``{root}/interfaces/{sha256}``, shared by every agent that implements the same XML.

At a birth that follows a (re)connection the agent first looks whether the broker already
retains its XML: it subscribes to its hash topics, waits for the SUBACKs and then at most
:data:`BLOB_CHECK_S` for the retained copies, publishes (retained) only the ones that did
not come or came altered, and unsubscribes. Status and About are not delayed by this
check. After a ``sef.Agent.Rebirth`` call it publishes every XML without looking (the
EMS asks for a rebirth when it misses one). The mode ``interface_topics`` chooses the
topics: ``"v2"`` (default) the hash topics only, ``"v1"`` the per-agent topics
``{root}/agents/{id}/interfaces/{name}`` only (what an EMS of SEF < 0.x, protocol
version 1, reads), ``"both"`` both.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Mapping

from sef.bus import BusClient, BusError, Message, Topics

__all__ = ["BLOB_CHECK_S", "INTERFACE_TOPICS", "InterfaceBlobs"]

log = logging.getLogger("sef.agent")

INTERFACE_TOPICS = ("v1", "v2", "both")
"""Values of ``Agent(interface_topics=...)``."""

BLOB_CHECK_S = 0.5
"""Longest wait, real s, after the SUBACKs for the broker's retained copies of the XML."""


class InterfaceBlobs:
    """Publishes one agent's interface XML on the hash topics when the broker lacks it.

    Args:
        agent_id: the agent (for logs).
        bus: the agent's connection.
        topics: the topic tree.
        xml: the agent's interface XML texts by interface name.
        mode: ``"v1"``, ``"v2"`` or ``"both"`` (see the module docstring).
    """

    def __init__(
        self, agent_id: str, bus: BusClient, topics: Topics, xml: Mapping[str, str], mode: str
    ) -> None:
        if mode not in INTERFACE_TOPICS:
            raise ValueError(f"interface_topics {mode!r}: use one of {', '.join(INTERFACE_TOPICS)}")
        self.agent_id = agent_id
        self.bus = bus
        self.topics = topics
        self.mode = mode
        self.xml: dict[str, bytes] = {}
        """XML bytes by SHA-256 (lowercase hex), the hashes the About announces."""
        for text in xml.values():
            data = text.encode()
            self.xml[hashlib.sha256(data).hexdigest()] = data
        self.published = 0
        """XML documents published on a hash topic so far."""
        self.found = 0
        """XML documents the check found retained already (not published again)."""
        self._seen: set[str] = set()
        self._all_seen = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def per_agent(self) -> bool:
        """Publish on ``{root}/agents/{id}/interfaces/{name}`` (protocol version 1)."""
        return self.mode in ("v1", "both")

    @property
    def per_hash(self) -> bool:
        """Publish on ``{root}/interfaces/{sha256}`` (protocol version 2)."""
        return self.mode in ("v2", "both")

    def publish_all(self) -> None:
        """Publish every XML on its hash topic now (retained), without looking."""
        self.cancel()
        for digest in self.xml:
            self._publish(digest)

    def check_and_publish(self) -> None:
        """Start the check of this connection: publish what the broker does not retain."""
        self.cancel()
        self._task = asyncio.create_task(self._check(), name=f"blobs:{self.agent_id}")

    def cancel(self) -> None:
        """Stop a running check (its subscriptions end with the next check or stop)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = None

    async def wait(self) -> None:
        """Wait for the running check, if any, to end (for tests and benches)."""
        task = self._task
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def receive(self, digest: str, message: Message) -> None:
        """A message on ``{root}/interfaces/{digest}``: an intact copy of ours is seen."""
        if self.xml.get(digest) == message.payload:
            self._seen.add(digest)
            if len(self._seen) == len(self.xml):
                self._all_seen.set()

    async def _check(self) -> None:
        self._seen = set()
        self._all_seen = asyncio.Event()
        topics = [self.topics.interface_blob(digest) for digest in self.xml]
        try:
            await asyncio.gather(*(self.bus.subscribe(topic, qos=1) for topic in topics))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_seen.wait(), BLOB_CHECK_S)
            missing = [digest for digest in self.xml if digest not in self._seen]
            self.found += len(self.xml) - len(missing)
            for digest in missing:
                self._publish(digest)
        finally:
            for topic in topics:
                with contextlib.suppress(BusError, OSError, RuntimeError):
                    self.bus.unsubscribe(topic)

    def _publish(self, digest: str) -> None:
        try:
            self.bus.publish(self.topics.interface_blob(digest), self.xml[digest], retain=True)
        except BusError as exc:  # offline: the next birth checks again
            log.debug("agent %s: interface XML %s not published: %s", self.agent_id, digest, exc)
            return
        self.published += 1
        log.debug("agent %s: interface XML published at interfaces/%s", self.agent_id, digest)

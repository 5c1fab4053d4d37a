"""The bus side of ``sef call``: send one call without reading the fleet's state.

``sef call`` needs only the definition of the interface it calls (to check and convert
the arguments). A shipped interface is known here, so nothing is subscribed but the
reply topic. Another interface is learned narrowly (:class:`InterfaceFinder`):

* one agent: its own About and ``interfaces/{name}`` XML (protocol version 1), then the
  XML retained once per hash that its About names (``{root}/interfaces/{sha256}``);
* a group: the XML retained once per hash (one message per interface version, not per
  agent); only when none defines the interface, one agent's version-1 XML
  (``{root}/agents/+/interfaces/{name}``, unsubscribed at the first).

A group's members are not known without reading every agent's About, so a group call
gathers replies until ``timeout_s`` or until ``expect`` replies arrived.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sef.bus import About, BusClient, Message, PayloadError, Reply, Topics, decode_object
from sef.clock import Clock
from sef.ems import CallRefused, CallTarget
from sef.ems._caller import Caller, check_args
from sef.interface import (
    Interface,
    InterfaceError,
    builtin_interface,
    is_valid_interface_name,
    load_xml,
)
from sef.security import Security

__all__ = ["CallOutcome", "InterfaceFinder", "call_once"]

log = logging.getLogger("sef.cli.call")

QUIET_S = 0.3
"""After a subscription, retained messages stop arriving for this long: nothing more is
retained there (real s)."""
MAX_XML_BYTES = 256 * 1024


@dataclass
class InterfaceFinder:
    """Learns one interface's definition from the few retained messages that carry it."""

    name: str
    topics: Topics
    found: Interface | None = None
    received: int = 0
    """Messages taken (every message but the caller's replies)."""
    wanted_blobs: set[str] = field(default_factory=set)
    _last: float = 0.0

    def take(self, message: Message) -> str | None:
        """Use a retained message; returns a blob topic to subscribe to when an About
        names the interface under a hash, else ``None``."""
        self.received += 1
        self._last = asyncio.get_running_loop().time()
        if self.found is not None or not message.payload:
            return None
        parsed = self.topics.parse(message.topic)
        if parsed is None:
            return None
        topic = message.topic
        if topic.endswith("/about"):
            try:
                about = About.from_object(decode_object(message.payload))
            except PayloadError:
                return None
            for ref in about.interfaces:
                if ref.name == self.name and ref.sha256 not in self.wanted_blobs:
                    self.wanted_blobs.add(ref.sha256)
                    try:
                        return self.topics.interface_blob(ref.sha256)
                    except ValueError:
                        return None
            return None
        if len(message.payload) > MAX_XML_BYTES:
            return None
        blob_prefix = f"{self.topics.root}/interfaces/"
        if topic.startswith(blob_prefix):
            digest = topic[len(blob_prefix) :]
            if hashlib.sha256(message.payload).hexdigest() != digest:
                return None
        elif not topic.endswith(f"/interfaces/{self.name}"):
            return None
        try:
            node = load_xml(message.payload, source=topic)
        except InterfaceError as exc:
            log.info("interface XML on %s ignored: %s", topic, exc)
            return None
        self.found = node.interfaces.get(self.name)
        return None

    async def quiet(self, max_s: float) -> None:
        """Wait until the interface is found, or no message came for :data:`QUIET_S`,
        at most ``max_s`` real s."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        self._last = max(self._last, start)
        while self.found is None and loop.time() - start < max_s:
            idle = loop.time() - self._last
            if idle >= QUIET_S:
                return
            await asyncio.sleep(min(QUIET_S - idle, 0.05))


@dataclass
class CallOutcome:
    """What :func:`call_once` did: the replies and how much of the bus it read."""

    replies: list[Reply]
    interface: Interface
    subscriptions: list[str]
    """Topics subscribed to besides the reply topic."""
    received: int
    """Messages received besides replies."""


def shipped(name: str) -> Interface | None:
    """The shipped definition of interface ``name``, if SEF ships it."""
    try:
        return builtin_interface(name)
    except KeyError:
        return None


async def _learn(
    bus: BusClient, finder: InterfaceFinder, target: CallTarget, learn_s: float
) -> list[str]:
    """Subscribe narrowly until ``finder`` knows its interface; the topics subscribed."""
    topics = finder.topics
    subscribed: list[str] = []

    async def subscribe(pattern: str) -> None:
        subscribed.append(pattern)
        await bus.subscribe(pattern, qos=1)

    if not target.group:
        await subscribe(topics.about(target.name))
        await subscribe(topics.interface_xml(target.name, finder.name))
    else:
        await subscribe(topics.all_interface_blobs())
    await finder.quiet(learn_s)
    if finder.found is None and target.group:
        fallback = f"{topics.root}/agents/+/interfaces/{finder.name}"
        await subscribe(fallback)
        await finder.quiet(learn_s)
        bus.unsubscribe(fallback)
    return subscribed


async def call_once(
    broker: str,
    identity: str | None,
    target: CallTarget,
    interface: str,
    method: str,
    args: Sequence[Any],
    *,
    security: Security | None = None,
    harden: Callable[[BusClient], None] | None = None,
    clock: Clock,
    reply: bool = True,
    timeout_s: float = 5.0,
    expect: int | None = None,
    learn_s: float = 3.0,
    topics: Topics | None = None,
) -> CallOutcome:
    """Connect, learn ``interface`` if SEF does not ship it, send one call, gather the
    replies, disconnect.

    Args:
        broker: broker URL.
        identity: our identity (client id prefix; ``None``: ``cli``).
        target: the agent or ``group:NAME``.
        interface: the interface called.
        method: its method.
        args: the in-arguments, as a JSON array's items.
        security: credentials (``None``: plaintext, unsigned).
        harden: called with the bus client before it connects (TLS peer checks).
        clock: the deployment's clock (call timestamps and expiry).
        reply: ask for replies.
        timeout_s: longest wait for replies, real s.
        expect: a group call ends after this many replies (default: at ``timeout_s``).
        learn_s: longest wait for an interface's definition, real s.
        topics: the topic tree (default root ``sef``).

    Raises:
        CallRefused: the interface is not known (not shipped, no agent announced it) or
            the arguments do not fit it; nothing was sent.
    """
    topics = topics or Topics()
    if not is_valid_interface_name(interface):
        raise CallRefused(f"invalid interface name {interface!r}")
    finder = InterfaceFinder(interface, topics)
    pending: list[str] = []

    def on_message(message: Message) -> None:
        if caller.handle(message):
            return
        blob = finder.take(message)
        if blob is not None:
            pending.append(blob)

    bus = BusClient(
        broker,
        f"{identity or 'cli'}-{uuid.uuid4().hex[:8]}",
        on_message=on_message,
        tls=security.client_tls() if security is not None else None,
    )
    if harden is not None:
        harden(bus)
    caller = Caller(bus, clock, topics, sender=bus.client_id, security=security)
    await caller.start()
    await bus.start()
    try:
        iface = shipped(interface)
        subscribed: list[str] = []
        if iface is None:
            subscribed = await _learn(bus, finder, target, learn_s)
            while finder.found is None and pending:
                blob = pending.pop()
                subscribed.append(blob)
                await bus.subscribe(blob, qos=1)
                await finder.quiet(learn_s)
            iface = finder.found
        if iface is None:
            raise CallRefused(f"unknown interface {interface!r}: no agent announced it")
        checked = check_args(iface, interface, method, list(args))
        replies = await caller.call(
            target, checked, reply=reply, timeout_s=timeout_s, expect=expect
        )
        return CallOutcome(replies, iface, subscribed, finder.received)
    finally:
        await bus.stop()

"""Calling methods on agents and groups over the bus, with replies by correlation id."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sef.bus import (
    BusClient,
    Call,
    Message,
    PayloadError,
    Reply,
    Topics,
    check_id,
    decode_object,
)
from sef.clock import Clock
from sef.interface import Interface, Method, TypeMismatch, args_from_json

__all__ = ["CallRefused", "CallTarget", "Caller"]

log = logging.getLogger("sef.ems.caller")


class CallRefused(ValueError):
    """A call was not sent: bad target, unknown method, or arguments that do not fit."""


@dataclass(frozen=True)
class CallTarget:
    """An agent id, or a group (``group:NAME``)."""

    name: str
    group: bool = False

    @classmethod
    def parse(cls, text: str) -> CallTarget:
        try:
            if text.startswith("group:"):
                return cls(check_id("group", text[len("group:") :]), True)
            return cls(check_id("agent", text))
        except ValueError as exc:
            raise CallRefused(str(exc)) from None

    def __str__(self) -> str:
        return f"group:{self.name}" if self.group else self.name


def validate_call(iface: Interface | None, interface: str, method: str,
                  args: Any) -> Method | None:
    """Check a call against its interface; ``None`` if the interface is not known here."""
    if iface is None:
        return None
    spec = iface.methods.get(method)
    if spec is None:
        raise CallRefused(f"interface {interface} has no method {method!r} "
                          f"(methods: {', '.join(sorted(iface.methods)) or 'none'})")
    try:
        args_from_json(spec.in_args, args)
    except TypeMismatch as exc:
        raise CallRefused(f"invalid arguments for {interface}.{method}: {exc}") from None
    return spec


class Caller:
    """Sends calls on a :class:`BusClient` and gathers the replies addressed to it.

    Feed every received message to :meth:`handle` (the owner's message handler does it).
    """

    def __init__(self, bus: BusClient, clock: Clock, topics: Topics, sender: str,
                 default_ttl_s: float = 30.0) -> None:
        self.bus = bus
        self.clock = clock
        self.topics = topics
        self.sender = check_id("client", sender)
        self.reply_topic = topics.reply(self.sender)
        self.default_ttl_s = default_ttl_s
        self._pending: dict[str, asyncio.Queue[Reply]] = {}
        self.calls_sent = 0

    async def start(self) -> None:
        await self.bus.subscribe(self.reply_topic, qos=1)

    def handle(self, message: Message) -> bool:
        """Route a reply to its waiting call; return whether the message was a reply."""
        if message.topic != self.reply_topic:
            return False
        try:
            reply = Reply.from_object(decode_object(message.payload))
        except PayloadError as exc:
            log.warning("bad reply on %s: %s", message.topic, exc)
            return True
        queue = self._pending.get(reply.id)
        if queue is None:
            log.debug("late or unknown reply %s from %s", reply.id, reply.agent)
        else:
            queue.put_nowait(reply)
        return True

    async def call(
        self,
        target: CallTarget | str,
        interface: str,
        method: str,
        args: Sequence[Any],
        *,
        iface: Interface | None = None,
        reply: bool = True,
        timeout_s: float = 5.0,
        expect: int | None = None,
        ttl_s: float | None = None,
        call_id: str | None = None,
    ) -> list[Reply]:
        """Send one call; return the replies received within ``timeout_s`` (real s).

        For one agent the first reply ends the wait. For a group, the wait ends after
        ``expect`` replies (e.g. the known members) or at the timeout. ``ttl_s`` (clock s)
        sets the expiry; the default is :attr:`default_ttl_s` real seconds on the clock's
        scale. With ``iface`` the arguments are validated before anything is sent.
        """
        dest = target if isinstance(target, CallTarget) else CallTarget.parse(target)
        args = list(args)
        validate_call(iface, interface, method, args)
        try:
            topic = (self.topics.group_call(dest.name, interface, method) if dest.group
                     else self.topics.call(dest.name, interface, method))
        except ValueError as exc:
            raise CallRefused(str(exc)) from None
        now = self.clock.now()
        ttl = ttl_s if ttl_s is not None else self.clock.to_clock(self.default_ttl_s)
        call = Call(call_id or uuid.uuid4().hex, args, now, now + ttl,
                    self.reply_topic if reply else None, self.sender)
        queue: asyncio.Queue[Reply] = asyncio.Queue()
        if reply:
            self._pending[call.id] = queue
        try:
            self.bus.publish(topic, call.to_payload(), qos=1, expiry_s=self.clock.to_real(ttl))
            self.calls_sent += 1
            if not reply:
                return []
            wanted = expect if dest.group else 1
            replies: list[Reply] = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            while wanted is None or len(replies) < wanted:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    replies.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            return replies
        finally:
            self._pending.pop(call.id, None)

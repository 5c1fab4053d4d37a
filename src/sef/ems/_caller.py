"""Calling methods on agents and groups over the bus, with replies by correlation id."""

from __future__ import annotations

import asyncio
import logging
import uuid
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
from sef.interface import Interface, TypeMismatch, args_from_json, is_valid_interface_name

__all__ = ["CallRefused", "CallTarget", "Caller", "CheckedArgs", "check_args"]

log = logging.getLogger("sef.ems.caller")


class CallRefused(ValueError):
    """A call was not sent: bad target, unknown method, or arguments that do not fit.

    ``mismatch`` is the :class:`~sef.interface.TypeMismatch` (with the offending item's
    path) when the arguments did not fit the method's in-signature.
    """

    def __init__(self, message: str, mismatch: TypeMismatch | None = None) -> None:
        super().__init__(message)
        self.mismatch = mismatch


@dataclass(frozen=True, slots=True)
class CallTarget:
    """Where a call goes: one agent, or (``group``) every member of a group.

    The id is checked when the target is made (:class:`CallRefused` otherwise), so a
    ``CallTarget`` is always valid. ``str()`` gives the text form, ``NAME`` or
    ``group:NAME`` (command log, API answers); :meth:`parse` reads it.
    """

    name: str
    group: bool = False

    def __post_init__(self) -> None:
        try:
            check_id("group" if self.group else "agent", self.name)
        except ValueError as exc:
            raise CallRefused(str(exc)) from None

    @classmethod
    def parse(cls, text: str) -> CallTarget:
        """An agent id, or ``group:NAME``."""
        if text.startswith("group:"):
            return cls(text[len("group:") :], group=True)
        return cls(text)

    def __str__(self) -> str:
        return f"group:{self.name}" if self.group else self.name


@dataclass(frozen=True, slots=True)
class CheckedArgs:
    """Arguments of ``interface.method`` checked against its in-signature.

    Made by :func:`check_args` only; the EMS and the :class:`Caller` send them without
    looking again. ``args`` is the JSON mapping that goes on the bus, ``values`` the same
    arguments decoded (structs as tuples, variants as :class:`~sef.interface.Variant`).
    """

    interface: str
    method: str
    args: list[Any]
    values: list[Any]


def check_args(iface: Interface, interface: str, method: str, args: Any) -> CheckedArgs:
    """Check a call of ``interface.method`` (defined by ``iface``) with ``args`` (a JSON
    array, one item per in-argument): the one place call arguments are validated.

    Raises:
        CallRefused: the interface has no such method, or the arguments do not fit (then
            with ``mismatch``, whose path names the offending item, e.g. ``cmds[0][1]``).
    """
    if not is_valid_interface_name(interface):
        raise CallRefused(f"invalid interface name {interface!r}")
    spec = iface.methods.get(method)
    if spec is None:
        raise CallRefused(
            f"interface {interface} has no method {method!r} "
            f"(methods: {', '.join(sorted(iface.methods)) or 'none'})"
        )
    try:
        values = args_from_json(spec.in_args, args)
    except TypeMismatch as exc:
        raise CallRefused(f"invalid arguments for {interface}.{method}: {exc}", exc) from None
    return CheckedArgs(interface, method, list(args), values)


class Caller:
    """Sends calls on a :class:`BusClient` and gathers the replies addressed to it.

    Feed every received message to :meth:`handle` (the owner's message handler does it).
    """

    def __init__(
        self, bus: BusClient, clock: Clock, topics: Topics, sender: str, default_ttl_s: float = 30.0
    ) -> None:
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
        target: CallTarget,
        call: CheckedArgs,
        *,
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
        scale.
        """
        if target.group:
            topic = self.topics.group_call(target.name, call.interface, call.method)
        else:
            topic = self.topics.call(target.name, call.interface, call.method)
        now = self.clock.now()
        ttl = ttl_s if ttl_s is not None else self.clock.to_clock(self.default_ttl_s)
        message = Call(
            call_id or uuid.uuid4().hex,
            call.args,
            now,
            now + ttl,
            self.reply_topic if reply else None,
            self.sender,
        )
        queue: asyncio.Queue[Reply] = asyncio.Queue()
        if reply:
            self._pending[message.id] = queue
        try:
            self.bus.publish(topic, message.to_payload(), qos=1, expiry_s=self.clock.to_real(ttl))
            self.calls_sent += 1
            if not reply:
                return []
            wanted = expect if target.group else 1
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
            self._pending.pop(message.id, None)

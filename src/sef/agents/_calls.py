"""How an agent serves calls: check, de-duplicate, queue, execute, reply.

A call is refused (counted in :attr:`CallServer.rejected`, logged, answered with a named
error when a valid reply topic was given) when it cannot be read, has expired, names an
unknown interface or method, carries arguments that do not fit the method's signature or
rules, or when its ``reply_to`` is not a reply topic. A call is executed at most once per
``(sender, id)``; replies go only to validated reply topics.

With credentials (``security``) the agent speaks protocol version 2: it executes only
signed envelopes (:func:`sef.security.verify_call`: signed by an EMS of the deployment
CA, addressed to this agent or one of its certificate's groups on the topic it arrived
on, for this method, not expired, not replayed; the inner call's ``sender`` is the
signer) and signs every reply. A refused envelope is logged and counted; it is answered
(``sef.Error.Unauthorized``) only when its signature verified under a valid certificate
of the CA and it is neither a replay nor expired, so an outsider learns nothing.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from sef.agents._declare import CallError, Outcome
from sef.bus import (
    BusClient,
    BusError,
    Call,
    ErrorName,
    Message,
    PayloadError,
    Reply,
    TopicKind,
    Topics,
    check_object,
    decode_envelope,
    decode_object,
    encode_envelope,
)
from sef.clock import Clock
from sef.interface import Interface, TypeMismatch, args_from_json, args_to_json
from sef.logthrottle import LogThrottle
from sef.security import (
    EnvelopeRefused,
    ReplayCache,
    Security,
    SecurityError,
    call_audience,
    sign_reply,
    verify_call,
)

__all__ = ["CallServer"]

log = logging.getLogger("sef.agent")


class CallServer:
    """The call side of an agent (see the module docstring).

    Args:
        agent_id: the agent's id (replies carry it).
        bus: the agent's bus client (replies are published on it).
        topics: the topic tree (reply topics are validated against it).
        clock: for expiry checks and reply time stamps.
        interfaces: the agent's interfaces by name.
        handlers: method handlers by ``(interface, method)``.
        max_seen_calls: how many ``(sender, id)`` pairs are remembered for de-duplication.
        queue_size: calls waiting to execute before new ones are refused.
        security: the agent's credentials: only signed calls are executed and replies
            are signed (``None``: protocol version 1, unsigned). Its identity must be
            ``agent_id``.
        replay: the nonces of envelopes taken (default: a new :class:`ReplayCache`).
        on_arrival: called with ``(interface, method)`` when a call message arrives,
            before anything is checked; when it returns true (it started device reads
            that the call will need) the checks run on the next turn of the event loop,
            so that the reads' requests are on the wire while the envelope is verified.
    """

    def __init__(
        self,
        agent_id: str,
        bus: BusClient,
        topics: Topics,
        clock: Clock,
        interfaces: Mapping[str, Interface],
        handlers: Mapping[tuple[str, str], Callable[..., Any]],
        *,
        max_seen_calls: int = 4096,
        queue_size: int = 1000,
        security: Security | None = None,
        replay: ReplayCache | None = None,
        on_arrival: Callable[[str, str], bool] | None = None,
    ) -> None:
        if security is not None and security.identity.id != agent_id:
            raise SecurityError(
                f"agent {agent_id!r} has the certificate of {security.identity.id!r}: "
                "the certificate's common name must be the agent id"
            )
        self.agent_id = agent_id
        self.security = security
        # a restarted agent forgot its nonces: envelopes issued before it started are
        # refused (a captured call replayed after a restart would run again otherwise)
        self.replay = replay if replay is not None else ReplayCache(memory_since=time.time())
        self.bus = bus
        self.topics = topics
        self.clock = clock
        self._interfaces = interfaces
        self._handlers = handlers
        self.max_seen_calls = max_seen_calls
        self.rejected = 0
        self._rejections = LogThrottle(log, "rejected calls")
        self._seen_calls: OrderedDict[tuple[str | None, str], float] = OrderedDict()
        self._queue: asyncio.Queue[tuple[str, str, Call]] = asyncio.Queue(maxsize=queue_size)
        self._on_arrival = on_arrival
        self._deferred = 0  # checks waiting for the next turn of the loop (see receive)

    def reject(self, reason: str, topic: str) -> None:
        """Count and log a refused call (aggregated beyond a few per 10 s)."""
        self.rejected += 1
        self._rejections.warn(
            topic, reason.split(":")[0][:80], "agent %s rejected call on %s: %s", self.agent_id,
            topic, reason,
        )  # fmt: skip

    def receive(self, interface: str, member: str, message: Message) -> None:
        """Check a call message and queue it for execution (or refuse it)."""
        if self._on_arrival is not None:
            try:
                started = self._on_arrival(interface, member)
            except Exception:
                log.exception("agent %s: arrival hook of %s.%s", self.agent_id, interface, member)
                started = False
            if started or self._deferred:  # behind a deferred check: keep the arrival order
                self._deferred += 1
                asyncio.get_running_loop().call_soon(
                    self._check_deferred, interface, member, message
                )
                return
        self._check(interface, member, message)

    def _check_deferred(self, interface: str, member: str, message: Message) -> None:
        self._deferred -= 1
        self._check(interface, member, message)

    def _check(self, interface: str, member: str, message: Message) -> None:
        if self.security is not None:
            verified = self._verified(interface, member, message, self.security)
            if verified is None:
                return
            obj = verified
        else:
            try:
                obj = decode_object(message.payload)
            except PayloadError as exc:
                self.reject(str(exc), message.topic)
                if exc.name == ErrorName.UNSUPPORTED_VERSION:  # readable JSON, other "v"
                    self._answer_refused(_json_object(message.payload), exc)
                return
        try:
            call = Call.from_object(obj)
        except PayloadError as exc:
            self.reject(str(exc), message.topic)
            self._answer_refused(obj, exc)
            return
        if call.reply_to is not None and not self._is_reply_topic(call.reply_to):
            self.reject(
                f"reply_to {call.reply_to[:80]!r} is not a reply topic "
                f"({self.topics.root}/clients/ID/reply): call not executed",
                message.topic,
            )
            return
        key = (call.sender, call.id)  # no sender: a key of its own, unlike any sender id
        if key in self._seen_calls:
            log.debug("agent %s: duplicate call %s ignored", self.agent_id, key)
            return
        self._seen_calls[key] = call.exp
        while len(self._seen_calls) > self.max_seen_calls:
            self._seen_calls.popitem(last=False)
        try:
            self._queue.put_nowait((interface, member, call))
        except asyncio.QueueFull:
            self.reject("call queue full", message.topic)
            self._error(call, ErrorName.FAILED, "agent busy: call queue full")

    def _answer_refused(self, obj: dict[str, Any] | None, exc: PayloadError) -> None:
        """Answer a call refused at step 1 with ``exc``'s error name (:meth:`_refuse`)."""
        if obj is not None:
            self._refuse(obj, exc.name, str(exc))

    def _refuse(self, obj: dict[str, Any], error: str, message: str) -> None:
        """Answer a refused call with ``error``, when its object names a string ``id`` and
        a valid reply topic (otherwise there is no one to answer)."""
        reply_to, call_id = obj.get("reply_to"), obj.get("id")
        if self._is_reply_topic(reply_to) and isinstance(call_id, str) and call_id:
            assert isinstance(reply_to, str)
            now = self.clock.now()
            reply = Reply(call_id[:128], self.agent_id, False, error=error, message=message, ts=now)
            self._reply(reply, reply_to)

    def _verified(
        self, interface: str, member: str, message: Message, security: Security
    ) -> dict[str, Any] | None:
        """The call object of a signed envelope that passed every check, else ``None``
        (refused: logged, counted, answered only when the signature verified)."""
        parsed = self.topics.parse(message.topic)
        if parsed is None or parsed.kind not in (TopicKind.CALL, TopicKind.GROUP_CALL):
            self.reject("not a call topic", message.topic)
            return None
        try:
            token = decode_envelope(message.payload)
        except PayloadError as exc:
            self.reject(f"call refused, not a signed envelope: {exc}: not executed", message.topic)
            return None
        try:
            envelope = verify_call(
                security,
                token,
                topic=f"{interface}/{member}",
                audience=call_audience(parsed.owner, group=parsed.kind is TopicKind.GROUP_CALL),
                replay=self.replay,
            )
        except EnvelopeRefused as exc:
            self.reject(f"signed call refused ({exc.reason}): {exc}: not executed", message.topic)
            if exc.envelope is not None and exc.reason != "expired":
                # an expired envelope is most likely an old one replayed: not answered
                self._unauthorized(exc.envelope.message, str(exc))
            return None
        try:
            obj = check_object(envelope.message)
        except PayloadError as exc:
            self.reject(f"signed call refused (payload): {exc}: not executed", message.topic)
            return None
        sender = obj.get("sender")
        if sender is not None and sender != envelope.issuer:
            reason = f"call's sender {str(sender)[:64]!r} is not its signer {envelope.issuer!r}"
            self.reject(f"signed call refused (sender): {reason}: not executed", message.topic)
            self._unauthorized(obj, reason)
            return None
        return obj

    def _unauthorized(self, obj: dict[str, Any], reason: str) -> None:
        """Answer a refused but authentic envelope (if it names a reply topic and an id)."""
        self._refuse(obj, ErrorName.UNAUTHORIZED, f"call refused: {reason}")

    async def serve(self) -> None:
        """Execute queued calls one at a time until cancelled."""
        while True:
            interface, member, call = await self._queue.get()
            try:
                await self._execute(interface, member, call)
            except Exception:
                log.exception("agent %s: call %s.%s failed", self.agent_id, interface, member)

    async def _execute(self, interface: str, member: str, call: Call) -> None:
        where = f"{interface}.{member}"
        now = self.clock.now()
        if now > call.exp:
            self.reject(f"{where} expired {now - call.exp:.3f} s ago (call {call.id})", where)
            self._error(call, ErrorName.EXPIRED, f"call expired {now - call.exp:.3f} s ago")
            return
        iface = self._interfaces.get(interface)
        if iface is None:
            self.reject(f"unknown interface {interface}", where)
            self._error(
                call,
                ErrorName.UNKNOWN_INTERFACE,
                f"agent {self.agent_id} does not implement {interface}",
            )
            return
        spec = iface.methods.get(member)
        if spec is None:
            self.reject(f"unknown method {where}", where)
            self._error(call, ErrorName.UNKNOWN_METHOD, f"{interface} has no method {member}")
            return
        try:
            args = args_from_json(spec.in_args, call.args)
        except TypeMismatch as exc:
            self.reject(f"invalid arguments: {exc}", where)
            self._error(call, ErrorName.INVALID_ARGS, str(exc))
            return
        try:
            result = self._handlers[(interface, member)](*args)
            if inspect.isawaitable(result):
                result = await result
        except CallError as exc:
            self.reject(f"refused: {exc}", where)
            self._error(call, exc.name, str(exc))
            return
        except TypeMismatch as exc:  # e.g. parse_events: the arguments break the method's rules
            self.reject(f"invalid arguments: {exc}", where)
            self._error(call, ErrorName.INVALID_ARGS, str(exc))
            return
        except Exception as exc:
            log.exception("agent %s: handler of %s raised", self.agent_id, where)
            self._error(call, ErrorName.FAILED, f"{type(exc).__name__}: {exc}")
            return
        if call.reply_to is None:
            return
        outcome = result if isinstance(result, Outcome) else Outcome(None, result=result)
        result = outcome.result
        outs = spec.out_args
        values = [] if not outs else ([result] if len(outs) == 1 else list(result))
        try:
            out_json = args_to_json(outs, values)
        except TypeMismatch as exc:
            log.error("agent %s: %s returned a bad value: %s", self.agent_id, where, exc)
            self._error(call, ErrorName.FAILED, f"agent returned a bad value: {exc}")
            return
        reply = Reply(
            call.id,
            self.agent_id,
            True,
            out_json,
            ts=self.clock.now(),
            applied=outcome.applied,
            fault=outcome.fault,
            fault_message=outcome.fault_message,
        )
        self._reply(reply, call.reply_to)

    def _error(self, call: Call, name: str, message: str) -> None:
        if call.reply_to is not None:
            self._reply(
                Reply(
                    call.id, self.agent_id, False, error=name, message=message, ts=self.clock.now()
                ),
                call.reply_to,
            )

    def _is_reply_topic(self, topic: object) -> bool:
        """Whether ``topic`` is a valid reply topic (``{root}/clients/{id}/reply``)."""
        if not isinstance(topic, str):
            return False
        parsed = self.topics.parse(topic)
        return parsed is not None and parsed.kind is TopicKind.REPLY

    def _reply(self, reply: Reply, topic: str) -> None:
        if not self._is_reply_topic(topic):  # never publish to a topic not validated
            log.warning("agent %s: reply %s not sent to %r", self.agent_id, reply.id, topic[:80])
            return
        try:
            if self.security is None:
                payload = reply.to_payload()
            else:
                parsed = self.topics.parse(topic)
                assert parsed is not None  # a reply topic
                payload = encode_envelope(
                    sign_reply(self.security, parsed.owner, reply.to_object())
                )
            self.bus.publish(topic, payload)
        except BusError as exc:
            log.warning("agent %s: reply %s lost: %s", self.agent_id, reply.id, exc)


def _json_object(payload: bytes) -> dict[str, Any] | None:
    """``payload`` as a JSON object, ``None`` when it is not one (a payload that
    :func:`~sef.bus.decode_object` already read as JSON, refused for its version)."""
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None

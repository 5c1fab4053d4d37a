"""Calling methods on agents and groups over the bus, with replies by correlation id.

With credentials (``security``) the caller speaks protocol version 2: it signs every call
(:func:`sef.security.sign_call`, addressed to the agent or group) and takes a reply only
as a signed envelope from the agent it addressed (see :class:`Caller`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from sef.bus import (
    BusClient,
    Call,
    ErrorName,
    Message,
    PayloadError,
    Reply,
    Topics,
    check_id,
    check_object,
    decode_envelope,
    decode_object,
    encode_envelope,
)
from sef.clock import Clock
from sef.interface import Interface, TypeMismatch, args_from_json, is_valid_interface_name
from sef.security import (
    MAX_LIFETIME_S,
    EnvelopeRefused,
    ReplayCache,
    Security,
    VerifiedEnvelope,
    call_audience,
    sign_call,
    verify_reply,
)

__all__ = [
    "LATE_GRACE_S",
    "CallRefused",
    "CallTarget",
    "Caller",
    "CheckedArgs",
    "OpenCall",
    "RejectedReplies",
    "check_args",
    "command_status",
    "reply_record",
]

log = logging.getLogger("sef.ems.caller")

LATE_GRACE_S = 5.0
"""Real s after a call's expiry during which its replies are still taken (as late)."""
REJECT_LOG_INTERVAL_S = 10.0
"""Rejected replies are logged as one aggregated warning per this many real s."""
LOG_AT_ONCE = frozenset({"conflicting", "unsigned", "unauthenticated", "not_signer", "not_member"})
"""Reasons whose first rejection in a window is logged at once (someone forges replies)."""


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


def command_status(replies: Iterable[Reply], expected: Collection[str] | None) -> str:
    """The outcome of a call from the replies taken for it (one per member).

    ``timeout`` no reply; ``expired`` every reply says the call came after its expiry;
    ``error`` an agent refused; ``not_applied`` an agent accepted but
    its device did not apply the command; ``partial`` a member of ``expected`` did not
    reply; ``ok`` every expected member accepted (and none reported it not applied).
    """
    replies = list(replies)
    if not replies:
        return "timeout"
    if all(not r.ok and r.error == ErrorName.EXPIRED for r in replies):
        return "expired"  # it reached the agents too late: nothing was executed
    if not all(r.ok for r in replies):
        return "error"
    if any(r.applied is False for r in replies):
        return "not_applied"
    if expected and set(expected) - {r.agent for r in replies}:
        return "partial"
    return "ok"


def reply_record(reply: Reply, *, late: bool = False) -> dict[str, Any]:
    """A reply as the command log keeps it (``late``: taken after the caller's answer)."""
    out: dict[str, Any] = {
        "agent": reply.agent,
        "ok": reply.ok,
        "result": reply.result,
        "error": reply.error,
        "message": reply.message,
        "outcome": reply.outcome,
    }
    if reply.applied is False:
        out["fault"] = reply.fault
        out["fault_message"] = reply.fault_message
    if late:
        out["late"] = True
    return out


@dataclass(eq=False)
class OpenCall:
    """A call whose replies are still taken: until its expiry plus :data:`LATE_GRACE_S`.

    ``expected`` is the agents that may answer (the target, or the group's members as the
    registry knew them), ``None`` when any agent may (a group nobody knows the members of).
    ``replies`` holds one reply per agent, in arrival order; ``answered`` is set once the
    caller returned its replies: those that come after are *late*.
    """

    call_id: str
    target: CallTarget
    expected: frozenset[str] | None
    exp: float
    replies: list[Reply] = field(default_factory=list)
    answered: bool = False
    late_agents: set[str] = field(default_factory=set)
    queue: asyncio.Queue[Reply] | None = None
    _by_agent: dict[str, Reply] = field(default_factory=dict, repr=False)

    def by_agent(self, agent: str) -> Reply | None:
        """The reply taken from ``agent``, if any."""
        if len(self._by_agent) != len(self.replies):  # replies were added directly
            self._by_agent = {r.agent: r for r in self.replies}
        return self._by_agent.get(agent)

    def add(self, reply: Reply) -> None:
        """Take ``reply`` (the first from its agent)."""
        self.replies.append(reply)
        self._by_agent[reply.agent] = reply


@dataclass
class RejectedReplies:
    """Replies that did not count, by reason, logged as one aggregated warning per
    :data:`REJECT_LOG_INTERVAL_S`.

    Reasons: ``malformed`` (not a valid Reply), ``unknown_call`` (no open call has the id:
    forged, or after the call's expiry), ``not_addressed`` (from an agent the call was not
    sent to), ``duplicate`` (a second reply from one agent), ``conflicting`` (a second
    reply from one agent that says something else: someone answers in its name); with
    credentials also ``unsigned`` (not a signed envelope), ``unauthenticated`` (the
    envelope failed verification: forged, another CA, revoked, not an agent, not for this
    caller, expired, replayed), ``not_signer`` (signed by another agent than the one it
    names) and ``not_member`` (for a group call, signed by an agent whose certificate
    does not name the group).
    """

    total: Counter[str] = field(default_factory=Counter)
    _window: Counter[str] = field(default_factory=Counter)
    _examples: list[str] = field(default_factory=list)
    _window_start: float | None = None

    def add(self, reason: str, example: str, now: float) -> None:
        """Count one rejected reply; log the window's summary when it is over."""
        self.total[reason] += 1
        self._window[reason] += 1
        if len(self._examples) < 3:
            self._examples.append(example)
        if self._window_start is None:
            self._window_start = now
            if reason in LOG_AT_ONCE:  # the first of a window goes out at once
                self.flush(now)
        elif now - self._window_start >= REJECT_LOG_INTERVAL_S:
            self.flush(now)

    def tick(self, now: float) -> None:
        """Log the current window if it is over (call it now and then: the window's last
        rejections are logged even when no more come)."""
        if self._window_start is not None and now - self._window_start >= REJECT_LOG_INTERVAL_S:
            self.flush(now)

    def flush(self, now: float) -> None:
        """Log what the current window holds (if anything) and start a new window."""
        if self._window:
            reasons = ", ".join(f"{n} {r}" for r, n in sorted(self._window.items()))
            log.warning(
                "%d replies rejected in the last %.0f s (%s), e.g. %s",
                sum(self._window.values()),
                max(0.0, now - (self._window_start or now)),
                reasons,
                "; ".join(self._examples),
            )
        self._window.clear()
        self._examples.clear()
        self._window_start = None


class Caller:
    """Sends calls on a :class:`BusClient` and gathers the replies addressed to it.

    Feed every received message to :meth:`handle` (the owner's message handler does it).

    A reply counts only when it arrives on this caller's reply topic, carries the id of a
    call still open, comes from an agent the call was sent to (the target; for a group a
    member the caller named) and is the first from that agent; every other reply is
    counted in :attr:`rejected` and logged in aggregate, and changes nothing. With
    ``track_late`` a call stays open until its expiry plus :data:`LATE_GRACE_S`: replies
    that come after :meth:`call` returned go to ``on_late``, and :meth:`expire` hands the
    calls that closed back to the owner.

    With ``security`` every call is signed (``aud`` the agent or group, ``top`` its
    ``<interface>/<method>``, lifetime its time to live, at most
    :data:`~sef.security.MAX_LIFETIME_S` real s) and a reply counts only when it is a
    signed envelope that verifies (an agent of the deployment CA, not revoked, for this
    caller's client id, not expired or replayed), its signer is the agent it names, and
    for a group call that agent's certificate names the group.
    """

    def __init__(
        self,
        bus: BusClient,
        clock: Clock,
        topics: Topics,
        sender: str,
        default_ttl_s: float = 30.0,
        *,
        track_late: bool = False,
        on_late: Callable[[OpenCall, Reply], None] | None = None,
        security: Security | None = None,
        replay: ReplayCache | None = None,
    ) -> None:
        self.bus = bus
        self.clock = clock
        self.topics = topics
        self.sender = check_id("client", sender)
        self.reply_topic = topics.reply(self.sender)
        self.default_ttl_s = default_ttl_s
        self.track_late = track_late
        self.on_late = on_late
        self.security = security
        self.replay = replay if replay is not None else ReplayCache()
        self._open: dict[str, OpenCall] = {}
        self.calls_sent = 0
        self.late_replies = 0
        self.rejected = RejectedReplies()

    async def start(self) -> None:
        """Subscribe to this caller's reply topic."""
        await self.bus.subscribe(self.reply_topic, qos=1)

    def _reject(self, reason: str, example: str) -> None:
        self.rejected.add(reason, example, asyncio.get_running_loop().time())

    def handle(self, message: Message) -> bool:
        """Route a reply to its waiting call; return whether the message was a reply."""
        if message.topic != self.reply_topic:
            return False
        if self.security is not None:
            self._take_signed(message.payload, self.security)
            return True
        try:
            reply = Reply.from_object(decode_object(message.payload))
        except PayloadError as exc:
            self._reject("malformed", str(exc)[:80])
            return True
        self.take(reply)
        return True

    def _take_signed(self, payload: bytes, security: Security) -> None:
        """Verify a signed reply and take it (see the class), or reject it."""
        try:
            token = decode_envelope(payload)
        except PayloadError as exc:
            self._reject("unsigned", str(exc)[:120])
            return
        try:
            envelope = verify_reply(security, token, audience=self.sender, replay=self.replay)
        except EnvelopeRefused as exc:
            self._reject("unauthenticated", f"{exc.reason}: {str(exc)[:120]}")
            return
        try:
            reply = Reply.from_object(check_object(envelope.message))
        except PayloadError as exc:
            self._reject("malformed", str(exc)[:80])
            return
        if not self._signed_by_addressee(reply, envelope):
            return
        self.take(reply)

    def _signed_by_addressee(self, reply: Reply, envelope: VerifiedEnvelope) -> bool:
        """Whether the signer of ``reply`` is the agent it names and, for a group call,
        a member of the group by its certificate (else the reply is rejected)."""
        if envelope.issuer != reply.agent:
            self._reject(
                "not_signer",
                f"call {reply.id[:40]} answered as {reply.agent[:64]!r} but signed by "
                f"{envelope.issuer!r}",
            )
            return False
        open_call = self._open.get(reply.id)
        if (
            open_call is not None
            and open_call.target.group
            and open_call.target.name not in envelope.signer.groups
        ):
            self._reject(
                "not_member",
                f"call {reply.id[:40]} to {open_call.target} answered by {reply.agent!r}, "
                "whose certificate does not name the group",
            )
            return False
        return True

    def take(self, reply: Reply) -> bool:
        """Count ``reply`` for its open call if it may (see the class); return whether it did."""
        open_call = self._open.get(reply.id)
        agent = reply.agent[:64]
        if open_call is None:
            self._reject("unknown_call", f"call {reply.id[:40]!r} from {agent!r}")
            return False
        if open_call.expected is not None and reply.agent not in open_call.expected:
            self._reject(
                "not_addressed", f"call {reply.id} to {open_call.target} answered by {agent!r}"
            )
            return False
        first = open_call.by_agent(reply.agent)
        if first is not None:
            same = (first.ok, first.error, first.applied) == (reply.ok, reply.error, reply.applied)
            self._reject(
                "duplicate" if same else "conflicting",
                f"call {reply.id} answered again by {agent!r}"
                + ("" if same else f" ({reply.outcome} after {first.outcome})"),
            )
            return False
        open_call.add(reply)
        if open_call.answered:
            open_call.late_agents.add(reply.agent)
            self.late_replies += 1
            log.info(
                "late reply to call %s from %s: %s (after the caller's answer)",
                reply.id,
                reply.agent,
                reply.outcome,
            )
            if self.on_late is not None:
                try:
                    self.on_late(open_call, reply)
                except Exception:
                    log.exception("late-reply handler failed for call %s", reply.id)
        elif open_call.queue is not None:
            open_call.queue.put_nowait(reply)
        return True

    def open_call(
        self, call_id: str, target: CallTarget, expected: Collection[str] | None, exp: float
    ) -> OpenCall:
        """Take replies to ``call_id`` from now until ``exp`` (clock s) plus the grace, as
        late replies: for a call sent before (e.g. by an EMS that crashed)."""
        open_call = OpenCall(
            call_id,
            target,
            None if expected is None else frozenset(expected),
            exp,
            answered=True,
        )
        self._open[call_id] = open_call
        return open_call

    def expire(self, now: float | None = None) -> list[OpenCall]:
        """Close the calls whose expiry plus :data:`LATE_GRACE_S` has passed (clock s);
        return them (their replies no longer count)."""
        now = self.clock.now() if now is None else now
        grace = self.clock.to_clock(LATE_GRACE_S)
        closed = [c for c in self._open.values() if c.answered and c.exp + grace < now]
        for open_call in closed:
            del self._open[open_call.call_id]
        return closed

    def get(self, call_id: str) -> OpenCall | None:
        """The open call ``call_id``, if its replies are still taken."""
        return self._open.get(call_id)

    @property
    def open_calls(self) -> int:
        """Calls whose replies are still taken."""
        return len(self._open)

    async def call(
        self,
        target: CallTarget,
        call: CheckedArgs,
        *,
        reply: bool = True,
        timeout_s: float = 5.0,
        expect: int | None = None,
        members: Collection[str] | None = None,
        ttl_s: float | None = None,
        call_id: str | None = None,
    ) -> list[Reply]:
        """Send one call; return the replies received within ``timeout_s`` (real s).

        For one agent only that agent's reply counts, and it ends the wait. For a group,
        ``members`` (e.g. the members the registry knows) are the agents whose replies
        count, one each; the wait ends once each replied (or after ``expect`` replies,
        when no members are named) or at the timeout. ``ttl_s`` (clock s) sets the expiry;
        the default is :attr:`default_ttl_s` real seconds on the clock's scale.
        """
        if target.group:
            topic = self.topics.group_call(target.name, call.interface, call.method)
            expected = None if members is None else frozenset(members)
        else:
            topic = self.topics.call(target.name, call.interface, call.method)
            expected = frozenset((target.name,))
        now = self.clock.now()
        ttl = ttl_s if ttl_s is not None else self.clock.to_clock(self.default_ttl_s)
        message = Call(
            call_id or uuid.uuid4().hex,
            call.args,
            now,
            now + ttl,
            self.reply_topic if reply else None,
            self.sender if self.security is None else self.security.identity.id,
        )
        if self.security is None:
            payload = message.to_payload()
        else:
            payload = encode_envelope(
                sign_call(
                    self.security,
                    f"{call.interface}/{call.method}",
                    call_audience(target.name, group=target.group),
                    message.to_object(),
                    min(MAX_LIFETIME_S, max(1.0, self.clock.to_real(ttl))),
                )
            )
        queue: asyncio.Queue[Reply] = asyncio.Queue()
        open_call = OpenCall(message.id, target, expected, message.exp, queue=queue)
        if reply:
            self._open[message.id] = open_call
        try:
            try:
                self.bus.publish(topic, payload, qos=1, expiry_s=self.clock.to_real(ttl))
            except BaseException:
                self._open.pop(message.id, None)  # never sent: no reply will come
                raise
            self.calls_sent += 1
            if not reply:
                return []
            wanted = len(expected) if expected else expect if target.group else 1
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
            while not queue.empty():  # taken in the same loop turn as the timeout
                replies.append(queue.get_nowait())
            return replies
        finally:
            open_call.answered = True
            open_call.queue = None
            if not self.track_late:
                self._open.pop(message.id, None)

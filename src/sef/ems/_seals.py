"""The EMS side of signed telemetry: checks each agent's telemetry against its seals.

Enabled with ``EMS(..., require_signed_telemetry=True)`` (see
:mod:`sef.security._telemetry_seal` for what an agent seals and ``docs/protocol.md``,
"Signed telemetry", for the rules). Per agent session the checker keeps the hash of every
live telemetry message received (:func:`~sef.security.message_hash`, keyed by ``seq``:
~40 bytes each, for at most about one window) and, on each seal, verifies the signature
and certificate (:class:`~sef.security.SealVerifier`) and compares the window:

* digest and count match: the window is **verified** (``verified_messages``,
  ``verified_windows``);
* they differ: the window **failed**: an ERROR line says what (messages altered,
  injected or dropped between the agent and the EMS, seq ``a..b``);
* telemetry no seal covers within ``max_wait_s`` (the seal was dropped, or the agent
  does not sign), a gap in the chain of seals, two different messages with one seq: the
  window **failed** too;
* a seal that does not verify (forged, another agent's, wrong CA, revoked) is
  **refused** and changes nothing.

Windows the EMS saw only part of (it joined the session mid-window: a restart, a
retained birth) are **unverifiable**, counted, not errors; from the first seal on, the
chain is followed.

Unverified telemetry is *stored as received and flagged*, not held back: each verdict is
written as an agent event (``seal_ok`` / ``seal_failed``, with the seq range and the
reason) in the store, next to the rows it judges. Holding a window back would mean
leaving its messages unacknowledged until its seal arrives (the EMS acknowledges only
what is committed), and the broker's in-flight window (``max_inflight_messages``, 1 000
per client in SEF's broker configuration) is far below one window of a fleet (10 s at
20 000 msg/s is 200 000 messages): ingest would stall. Acknowledging and keeping the
window only in memory would lose it in a crash.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from hashlib import sha256
from typing import TYPE_CHECKING

from sef.bus import Message, TopicKind, Topics
from sef.logthrottle import LogThrottle
from sef.security import (
    SealClaims,
    SealVerifier,
    SecurityError,
    TrustStore,
    topic_prefix,
    window_digest,
)

if TYPE_CHECKING:
    from sef.ems._recorder import Recorder

__all__ = ["MAX_PENDING", "MAX_WAIT_S", "AgentSeals", "SealChecker"]

log = logging.getLogger("sef.ems.seals")

MAX_WAIT_S = 30.0
"""Telemetry that no seal covers this long after it arrived is reported unverified, real
s (an agent seals at least every :data:`~sef.security.WINDOW_S`, 10 s, by default)."""
MAX_PENDING = 20_000
"""Most telemetry messages held for one agent while waiting for its seal."""
PARSE_CACHE = 65_536


@dataclass(slots=True)
class AgentSeals:
    """Seal bookkeeping of one agent (its current session), and its counters.

    Attributes:
        bdseq: the session being followed (``None``: none yet).
        birth_ts: the ``ts`` of the live birth seen for it: a copy of that birth (same
            bdseq, seq 0 and ts: a replay, docs/protocol.md §4.6) starts nothing.
        synced: the EMS saw the session from its birth, or from a seal on: a window it
            cannot match is then a failure, not a partial view.
        next_from: the ``from_seq`` the next seal must have (the chain).
        pending: seq -> message hash, not sealed yet.
        since: monotonic time since when something is pending (at the latest the oldest
            pending message's arrival).
        verified_messages, verified_windows, failed_windows, unverifiable_windows,
        refused_seals: counters since the EMS started.
    """

    bdseq: int | None = None
    birth_ts: object = None
    synced: bool = False
    next_from: int | None = None
    pending: dict[int, bytes] = field(default_factory=dict)
    since: float = 0.0
    conflicts: set[int] = field(default_factory=set)
    verified_messages: int = 0
    verified_windows: int = 0
    failed_windows: int = 0
    unverifiable_windows: int = 0
    refused_seals: int = 0
    last_verified_seq: int | None = None

    def summary(self) -> dict[str, int | None]:
        """JSON-able counters (for the API and tests)."""
        return {
            "bdseq": self.bdseq,
            "verified_messages": self.verified_messages,
            "verified_windows": self.verified_windows,
            "failed_windows": self.failed_windows,
            "unverifiable_windows": self.unverifiable_windows,
            "refused_seals": self.refused_seals,
            "pending": len(self.pending),
            "last_verified_seq": self.last_verified_seq,
        }


class SealChecker:
    """Follows every agent's telemetry and seals (see the module's text).

    Args:
        trust: the deployment CA (and CRL) that agents' certificates must come from.
        topics: the topic tree.
        recorder: where verdicts are stored as agent events (``None``: not stored).
        now: the EMS clock, Unix s (for the events' time).
        max_wait_s: see :data:`MAX_WAIT_S`.
    """

    def __init__(
        self,
        trust: TrustStore,
        topics: Topics,
        *,
        recorder: Recorder | None = None,
        now: Callable[[], float] = time.time,
        max_wait_s: float = MAX_WAIT_S,
    ) -> None:
        self.verifier = SealVerifier(trust)
        self.topics = topics
        self.recorder = recorder
        self._now = now
        self.max_wait_s = max_wait_s
        self.agents: dict[str, AgentSeals] = {}
        self._parsed: dict[str, tuple[TopicKind, str, bytes] | None] = {}
        self.log_failed = LogThrottle(log, "unverified telemetry windows", level=logging.ERROR)
        self.log_refused = LogThrottle(log, "refused seals", level=logging.ERROR)

    # -- totals -----------------------------------------------------------------------
    def totals(self) -> dict[str, int]:
        """Counters over every agent."""
        keys = (
            "verified_messages",
            "verified_windows",
            "failed_windows",
            "unverifiable_windows",
            "refused_seals",
        )
        return {k: sum(getattr(a, k) for a in self.agents.values()) for k in keys}

    # -- messages ---------------------------------------------------------------------
    def _parse(self, topic: str) -> tuple[TopicKind, str, bytes] | None:
        """Kind, agent id and :func:`~sef.security.topic_prefix` of a topic the checker
        looks at (cached), else ``None``."""
        try:
            return self._parsed[topic]
        except KeyError:
            pass
        parsed = self.topics.parse(topic)
        kinds = (TopicKind.PROPERTY, TopicKind.SIGNAL, TopicKind.STATUS, TopicKind.SEAL)
        result = (
            (parsed.kind, parsed.owner, topic_prefix(topic))
            if parsed and parsed.kind in kinds
            else None
        )
        if len(self._parsed) >= PARSE_CACHE:
            self._parsed.clear()
        self._parsed[topic] = result
        return result

    def handle(self, message: Message) -> tuple[bool, asyncio.Future[None] | None]:
        """Look at one received message. Returns whether it was a seal (consumed here:
        the registry must not see it) and the commit future of a stored verdict."""
        parsed = self._parse(message.topic)
        if parsed is None:
            return False, None
        kind, agent_id, prefix = parsed
        if kind is TopicKind.SEAL:
            return True, self.seal(agent_id, message.payload)
        if message.retain or not message.payload:  # old news from the retained store
            if kind is TopicKind.STATUS:
                self._status(agent_id, message.payload, live=False)
            return False, None
        if kind is TopicKind.STATUS:
            return False, self._status(agent_id, message.payload, live=True)
        seq = _seq(message.payload)
        if seq is None:  # the registry refuses it (and nothing of it is stored)
            return False, None
        state = self.agents.get(agent_id)
        if state is None:
            state = self.agents[agent_id] = AgentSeals()
        digest = sha256(prefix + seq.to_bytes(4, "big") + message.payload).digest()
        pending = state.pending
        held = pending.get(seq)
        if held is not None:  # a redelivered duplicate, or two different messages
            if held != digest and len(state.conflicts) < MAX_PENDING:
                state.conflicts.add(seq)  # judged with the window that covers it
            return False, None
        if not pending:
            state.since = time.monotonic()
        elif len(pending) >= MAX_PENDING:  # the oldest goes: no seal will match it now
            del pending[next(iter(pending))]
        pending[seq] = digest
        return False, None

    def _status(self, agent_id: str, payload: bytes, *, live: bool) -> asyncio.Future[None] | None:
        """A birth starts a session: seq counts from 0 again."""
        try:
            obj = json.loads(payload)
        except (ValueError, RecursionError):
            return None
        if not isinstance(obj, dict) or obj.get("state") != "online":
            return None
        bdseq = obj.get("bdseq")
        if type(bdseq) is not int:
            return None
        state = self.agents.get(agent_id)
        if state is None:
            state = self.agents[agent_id] = AgentSeals()
        if state.bdseq is not None and bdseq < state.bdseq:
            return None  # stale
        birth = live and obj.get("seq") == 0
        if not birth and bdseq == state.bdseq:
            return None  # e.g. a repair of the agent's own status: same session
        if birth and bdseq == state.bdseq and obj.get("ts") == state.birth_ts:
            return None  # a replayed copy of the birth already seen (§4.6), not a rebirth
        done = None
        if state.pending:
            done = self._flush(agent_id, state, "no seal arrived before the agent's next birth")
        state.bdseq, state.synced, state.next_from = bdseq, birth, 0 if birth else None
        state.birth_ts = obj.get("ts") if birth else None
        state.conflicts.clear()
        return done

    # -- seals ------------------------------------------------------------------------
    def seal(self, agent_id: str, payload: bytes) -> asyncio.Future[None] | None:
        """Check a seal received on ``agent_id``'s seal topic."""
        state = self.agents.get(agent_id)
        if state is None:
            state = self.agents[agent_id] = AgentSeals()
        try:
            claims = self.verifier.verify(payload, agent_id)
        except SecurityError as exc:
            state.refused_seals += 1
            self.log_refused.warn(
                agent_id, str(exc)[:60], "agent %s: seal refused: %s", agent_id, exc
            )
            return self._event(agent_id, "seal_refused", str(exc))
        if state.bdseq is not None and claims.bdseq < state.bdseq:
            self.log_refused.warn(
                agent_id, "stale", "agent %s: seal of an old session %d ignored (now %d)",
                agent_id, claims.bdseq, state.bdseq,
            )  # fmt: skip
            return None
        if claims.bdseq != state.bdseq:  # a session whose birth the EMS did not see live
            state.bdseq, state.synced, state.next_from = claims.bdseq, False, None
        if state.next_from is not None and claims.from_seq < state.next_from:
            state.refused_seals += 1
            reason = (
                f"seal for seq {claims.from_seq}..{claims.to_seq} overlaps seq already "
                f"sealed (up to {state.next_from - 1}): replayed"
            )
            self.log_refused.warn(
                agent_id, "replay", "agent %s: seal refused: %s", agent_id, reason
            )
            return self._event(agent_id, "seal_refused", reason)
        done = None
        if state.synced and state.next_from is not None and claims.from_seq > state.next_from:
            done = self._fail(
                agent_id, state, state.next_from, claims.from_seq - 1,
                "no seal covers these seqs (a seal was dropped)",
            )  # fmt: skip
        else:
            older = [s for s in state.pending if s < claims.from_seq]
            if older and state.synced:
                done = self._fail(
                    agent_id, state, min(older), max(older),
                    "telemetry no seal covers (injected, or its seal was dropped)",
                )  # fmt: skip
            for s in older:
                del state.pending[s]
            state.since = time.monotonic()  # what is left arrived before now
        return self._window(agent_id, state, claims) or done

    def _window(
        self, agent_id: str, state: AgentSeals, claims: SealClaims
    ) -> asyncio.Future[None] | None:
        lo, hi = claims.from_seq, claims.to_seq
        seqs = sorted(s for s in state.pending if lo <= s <= hi)
        pending = state.pending
        digest = window_digest([pending[s] for s in seqs])
        for s in seqs:
            del pending[s]
        conflicts = sorted(s for s in state.conflicts if lo <= s <= hi)
        state.conflicts.difference_update(conflicts)
        synced, state.synced, state.next_from = state.synced, True, hi + 1
        if conflicts:
            reason = (
                f"two different messages with seq {', '.join(map(str, conflicts[:5]))}: "
                "forged or altered"
            )
            return self._fail(agent_id, state, lo, hi, reason, sealed=True)
        if len(seqs) == claims.count and digest == claims.digest:
            state.verified_windows += 1
            state.verified_messages += len(seqs)
            state.last_verified_seq = hi
            return self._event(agent_id, "seal_ok", f"seq {lo}..{hi}: {len(seqs)} messages")
        if len(seqs) < claims.count and not synced:
            state.unverifiable_windows += 1
            log.info(
                "agent %s: telemetry window seq %d..%d unverifiable: the EMS joined it midway "
                "(%d of %d messages seen)", agent_id, lo, hi, len(seqs), claims.count,
            )  # fmt: skip
            return None
        if len(seqs) > claims.count:
            why = f"{len(seqs) - claims.count} more message(s) than sealed: injected"
        elif len(seqs) < claims.count:
            why = f"{claims.count - len(seqs)} sealed message(s) missing: dropped"
        else:
            why = "same count, different content: altered"
        reason = f"{len(seqs)} received, {claims.count} sealed; {why}"
        return self._fail(agent_id, state, lo, hi, reason, sealed=True)

    def _fail(
        self,
        agent_id: str,
        state: AgentSeals,
        lo: int,
        hi: int,
        reason: str,
        *,
        sealed: bool = False,
    ) -> asyncio.Future[None] | None:
        state.failed_windows += 1
        what = "does not match its seal" if sealed else "is unverified"
        text = f"telemetry seq {lo}..{hi} of session {state.bdseq} {what}: {reason}"
        self.log_failed.warn(agent_id, reason[:60], "agent %s: %s", agent_id, text)
        return self._event(agent_id, "seal_failed", text)

    def _flush(self, agent_id: str, state: AgentSeals, reason: str) -> asyncio.Future[None] | None:
        seqs = list(state.pending)
        state.pending.clear()
        state.conflicts.clear()
        if not state.synced:
            state.unverifiable_windows += 1
            return None
        return self._fail(agent_id, state, min(seqs), max(seqs), reason)

    def sweep(self, now: float | None = None) -> None:
        """Report telemetry that waited more than ``max_wait_s`` for a seal (monotonic s)."""
        limit = (time.monotonic() if now is None else now) - self.max_wait_s
        for agent_id, state in self.agents.items():
            pending = state.pending
            if not pending or state.since > limit:
                continue
            late = list(pending)
            pending.clear()
            state.conflicts.clear()
            self._fail(
                agent_id, state, min(late), max(late),
                f"no seal within {self.max_wait_s:g} s (the seal was dropped, or the agent "
                "does not sign its telemetry)",
            )  # fmt: skip

    def _event(self, agent_id: str, kind: str, detail: str) -> asyncio.Future[None] | None:
        if self.recorder is None:
            return None
        return self.recorder.event(agent_id, float(self._now()), kind, detail[:1000])


_SEQ_AT = b'{"v":1,"seq":'
"""How SEF agents begin a telemetry payload: the seq is read without a JSON parse."""


def _seq(payload: bytes) -> int | None:
    """The ``seq`` of a telemetry payload, or ``None``. (Read from the payload's start
    when it has SEF's layout: a payload crafted to read otherwise only puts its hash, which
    no honest seal contains, at another seq: its window fails either way.)"""
    if payload.startswith(_SEQ_AT):
        end = payload.find(b",", 13, 24)
        digits = payload[13:end]
        if end > 13 and digits.isdigit():
            value = int(digits)
            return value if value < 2**32 else None
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        return None
    seq = obj.get("seq") if isinstance(obj, dict) else None
    return seq if type(seq) is int and 0 <= seq < 2**32 else None

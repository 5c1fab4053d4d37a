"""Session rules of the EMS registry: births, deaths, sequence numbers, gaps, duplicates.

The rules are ``docs/protocol.md`` §4.2 (birth and death), §4.5 (gaps), §4.6 (duplicates
and replays):

* a live message whose ``seq`` is **behind or equal to** the last seq accepted in the
  agent's current session (``(last - seq) mod 2**32 < 2**31``) is a **duplicate** (a
  redelivered QoS 1 publish, a retained message a bridge flushed again with the retain
  flag cleared): no gap, no state change, no event; counted in ``AgentRecord.duplicates``
  and ``Registry.duplicates``, never logged one by one;
* a live online status with the current bdseq and seq 0 is a **rebirth** (accepted: the
  sequence restarts) when its ``ts`` differs from that of the birth accepted for the
  session, and a replayed copy of that birth (a duplicate) when it is the same;
* any other live message whose seq is not the expected one is a **gap**.

A live message dated more than :data:`TS_AHEAD_S` after the EMS clock is not
sequence-checked (as a retained one): no real agent sends it (the store refuses it too,
``max_future_s``), and a forged one with a high seq would otherwise make the agent's real
messages look like duplicates. A forger that dates its messages right and runs its seq
ahead still can, until the agent's next rebirth: on a broker without per-agent ACLs
(``docs/operations.md``, secure by default) or signed telemetry, the seq is not
authenticated.

The last accepted seq outlives a death and a gateway's outage (messages of the session
that come after them are still behind it); a new session (a greater bdseq) forgets it.
Retained deliveries are old news: they are never sequence-checked and never counted as
duplicates (their store rows are made idempotent by the store's identity instead).

:class:`SessionRules` is a mixin of :class:`~sef.ems._registry.Registry`, which keeps the
counters.
"""

from __future__ import annotations

from sef.bus import SEQ_MODULUS, Message, Status
from sef.ems._events import Event, Gap, Offline, Online, StaleStatus
from sef.ems._records import AgentRecord
from sef.logthrottle import LogThrottle

__all__ = ["TS_AHEAD_S", "SessionRules"]

_HALF = SEQ_MODULUS // 2

TS_AHEAD_S = 300.0
"""A live message dated more than this after the EMS clock (s) does not take part in the
sequence checks (the recorder's default ``max_future_s``: the store refuses it too)."""


class SessionRules:
    """The registry's session and sequence checks (a mixin of
    :class:`~sef.ems._registry.Registry`, which sets the state below)."""

    duplicates: int
    log_info: LogThrottle

    def _duplicate(self, record: AgentRecord) -> None:
        """Count one duplicate of ``record``'s agent."""
        record.duplicates += 1
        self.duplicates += 1

    def _sequence(
        self,
        record: AgentRecord,
        seq: int | None,
        ts: float | None,
        message: Message,
        now: float,
        events: list[Event],
    ) -> bool:
        """Check the sequence of a live About, PropertyUpdate or Signal (sender time ``ts``,
        EMS clock ``now``, Unix s): append a :class:`Gap` to ``events`` if messages were
        lost. Returns ``False`` for a duplicate (counted; the caller drops the message),
        ``True`` otherwise."""
        if message.retain or seq is None or (ts is not None and ts > now + TS_AHEAD_S):
            return True
        if _behind(record.last_seq, seq):
            self._duplicate(record)
            return False
        expected = record.expected_seq
        if expected is not None and seq != expected:
            record.gaps += 1
            events.append(Gap(record.agent_id, expected, seq))
        record.expected_seq = (seq + 1) % SEQ_MODULUS
        record.last_seq = seq
        return True

    def _status(
        self, record: AgentRecord, status: Status, message: Message, now: float
    ) -> list[Event]:
        """Apply a birth or a death (§4.2, §4.6); return its events."""
        agent_id = record.agent_id
        same_session = record.bdseq is not None and status.bdseq == record.bdseq
        if status.online:
            if record.bdseq is not None and status.bdseq < record.bdseq:
                return [StaleStatus(agent_id, status.bdseq, birth=True)]
            if same_session and not message.retain and self._replayed(record, status):
                self._duplicate(record)
                return []
            if not same_session:
                record.last_seq = None
                record.birth_ts = None
            if status.seq == 0:
                record.birth_ts = status.ts
            was_online = record.online
            record.online = True
            record.bdseq = status.bdseq
            record.keepalive_s = status.keepalive_s
            record.offline_reason = None
            # a retained birth is old news: later live messages continue from an unknown seq
            if status.seq is None or message.retain:
                record.expected_seq = None
            else:
                record.expected_seq = (status.seq + 1) % SEQ_MODULUS
                record.last_seq = status.seq
            if not was_online:
                record.online_since = status.ts or now
                return [Online(agent_id, status.bdseq)]
            return []
        # a death: only the death of the current (or a newer) session counts
        if record.bdseq is not None and status.bdseq < record.bdseq:
            self.log_info.warn(
                agent_id,
                "stale death",
                "agent %s: stale death (bdseq %d < %d) ignored",
                agent_id,
                status.bdseq,
                record.bdseq,
            )
            return [StaleStatus(agent_id, status.bdseq)]
        if same_session and not message.retain and _behind(record.last_seq, status.seq):
            self._duplicate(record)
            return []
        if not same_session:
            record.last_seq = None
            record.birth_ts = None
        elif not message.retain and status.seq is not None:
            record.last_seq = status.seq
        was_online = record.online
        record.online = False
        record.bdseq = status.bdseq
        record.expected_seq = None
        record.offline_reason = status.reason or "will"
        if was_online is not False:
            record.offline_since = now if not message.retain else (status.ts or now)
            return [Offline(agent_id, record.offline_reason)]
        return []

    @staticmethod
    def _replayed(record: AgentRecord, status: Status) -> bool:
        """Whether a live online status of the current session is a copy of one already
        accepted: the birth (seq 0, same ``ts``) or a status behind the last seq."""
        if status.seq == 0:
            return status.ts is not None and status.ts == record.birth_ts
        return _behind(record.last_seq, status.seq)


def _behind(last: int | None, seq: int | None) -> bool:
    """Whether ``seq`` is behind or equal to ``last`` (mod 2**32, §4.6): a duplicate."""
    return last is not None and seq is not None and (last - seq) % SEQ_MODULUS < _HALF

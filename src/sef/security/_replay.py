"""Replay protection for signed envelopes: each ``(issuer, nonce)`` is taken once.

An envelope's nonce (``jti``) is remembered until the envelope expires (plus the clock
skew the verifier allows); after that its expiry check refuses it anyway. Memory is
bounded: when :attr:`ReplayCache.max_entries` unexpired nonces are held, new envelopes
are refused (fail closed: evicting a live nonce would let its envelope be replayed) and
one clear error is logged until room is free again. Only envelopes whose signature,
certificate and claims verified are recorded, so an attacker without a signing key
cannot fill the cache.
"""

from __future__ import annotations

import heapq
import logging

from sef.security._identity import SecurityError

__all__ = ["DEFAULT_REPLAY_ENTRIES", "ReplayCache", "ReplayError"]

log = logging.getLogger("sef.security.replay")

DEFAULT_REPLAY_ENTRIES = 100_000
"""Unexpired nonces held at most (~150 B each: ~15 MB); with 300 s envelopes that is
over 300 commands per second sustained for one receiver."""


class ReplayError(SecurityError):
    """An envelope was seen before (``reason`` ``replayed``) or the cache is full
    (``reason`` ``replay_cache_full``)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ReplayCache:
    """The nonces seen, each kept until its envelope's expiry plus ``keep_after_s``.

    Args:
        max_entries: unexpired nonces held at most; beyond it new ones are refused.
        keep_after_s: how long after its expiry (Unix s) a nonce is still kept, s: the
            verifier's clock-skew allowance, during which the envelope is still accepted.
        memory_since: when this memory began (Unix s; e.g. the receiver's start), or
            ``None``. A receiver that restarts forgets the nonces it took, so an envelope
            issued before ``memory_since - restart_margin_s`` is refused as a possible
            replay (the sender re-sends with a new envelope: the EMS reconciles an agent
            that comes back). Needs clocks synchronised within the margin (NTP).
        restart_margin_s: clock difference tolerated by that rule, s.
    """

    def __init__(
        self,
        max_entries: int = DEFAULT_REPLAY_ENTRIES,
        *,
        keep_after_s: float = 30.0,
        memory_since: float | None = None,
        restart_margin_s: float = 2.0,
    ) -> None:
        self.memory_since = memory_since
        self.restart_margin_s = restart_margin_s
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.keep_after_s = keep_after_s
        self._until: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, str, str]] = []
        self._full_logged = False
        self.refused_full = 0
        """Envelopes refused because the cache was full."""

    def __len__(self) -> int:
        return len(self._until)

    def __contains__(self, key: object) -> bool:
        return key in self._until

    def purge(self, now: float) -> None:
        """Forget the nonces whose envelopes expired (plus the allowance) before ``now``."""
        heap = self._heap
        while heap and heap[0][0] < now:
            until, issuer, nonce = heapq.heappop(heap)
            if self._until.get((issuer, nonce)) == until:
                del self._until[(issuer, nonce)]

    def add(
        self,
        issuer: str,
        nonce: str,
        expires_at: float,
        now: float,
        *,
        issued_at: float | None = None,
    ) -> None:
        """Record ``nonce`` of ``issuer`` (expiring at ``expires_at``, issued at
        ``issued_at``, Unix s).

        Raises:
            ReplayError: it was recorded before and has not expired (``replayed``), or
                the cache holds :attr:`max_entries` live nonces (``replay_cache_full``).
        """
        key = (issuer, nonce)
        if (
            self.memory_since is not None
            and issued_at is not None
            and issued_at < self.memory_since - self.restart_margin_s
        ):
            raise ReplayError(
                f"envelope of {issuer!r} was issued {self.memory_since - issued_at:.1f} s "
                "before this receiver started (its earlier nonces are forgotten): possibly "
                "replayed",
                "replayed",
            )
        if key in self._until:
            raise ReplayError(f"nonce {nonce[:40]!r} of {issuer!r} was seen before", "replayed")
        self.purge(now)
        if len(self._until) >= self.max_entries:
            self.refused_full += 1
            if not self._full_logged:
                self._full_logged = True
                log.error(
                    "replay cache full: %d unexpired envelope nonces held; signed messages "
                    "are refused until the oldest expire (raise max_entries if this load is "
                    "legitimate)",
                    len(self._until),
                )
            raise ReplayError(
                f"replay cache full ({self.max_entries} unexpired nonces)", "replay_cache_full"
            )
        if self._full_logged:
            self._full_logged = False
            log.warning("replay cache has room again (%d nonces held)", len(self._until))
        until = expires_at + self.keep_after_s
        self._until[key] = until
        heapq.heappush(self._heap, (until, issuer, nonce))

"""Sparkplug-style session numbers: birth/death sequence (bdseq) and message sequence (seq)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["BDSEQ_AHEAD_S", "BDSEQ_LIMIT", "SEQ_MODULUS", "Session", "bdseq_problem"]

_last_bdseq = 0  # strictly increasing within a process, whatever the wall clock does

SEQ_MODULUS = 2**32
"""Message sequence numbers count 0, 1, 2, ... and wrap to 0 after 2**32 - 1."""


@dataclass
class Session:
    """Numbers of one publisher's sessions.

    ``bdseq`` identifies a connection: it is strictly greater than any bdseq this publisher
    used before, also across process restarts, because it starts from the wall clock in
    milliseconds. ``seq`` numbers every message of a session from 0 (the birth).
    """

    bdseq: int = field(default=0)
    seq: int = field(default=0)

    def new_session(self) -> int:
        """Start a new session: a fresh bdseq, and seq back to 0. Returns the bdseq."""
        global _last_bdseq
        self.bdseq = max(self.bdseq + 1, _last_bdseq + 1, time.time_ns() // 1_000_000)
        _last_bdseq = self.bdseq
        self.seq = 0
        return self.bdseq

    def next_seq(self) -> int:
        """The sequence number for the next message of this session."""
        value = self.seq
        self.seq = (self.seq + 1) % SEQ_MODULUS
        return value


BDSEQ_LIMIT = 2**63
"""A bdseq must stay below this (it is stored as a signed 64-bit integer)."""
BDSEQ_AHEAD_S = 86400.0
"""How far a bdseq (wall-clock ms at session start) may run ahead of a receiver's wall
clock, s: more means a forged or broken session number."""


def bdseq_problem(bdseq: int, wall_clock_s: float, ahead_s: float = BDSEQ_AHEAD_S) -> str | None:
    """Why ``bdseq`` cannot be a real session number at ``wall_clock_s`` (Unix s), or None.

    A bdseq is the publisher's wall clock in ms at session start (:class:`Session`), so one
    far in the future can only be forged (it would make every real session look stale).
    """
    if bdseq >= BDSEQ_LIMIT:
        return f"bdseq {bdseq} is 2**63 or more"
    ahead_ms = bdseq - wall_clock_s * 1000.0
    if ahead_ms > ahead_s * 1000.0:
        return (
            f"bdseq {bdseq} runs {ahead_ms / 1000.0:.0f} s ahead of the wall clock "
            f"(at most {ahead_s:g} s allowed)"
        )
    return None

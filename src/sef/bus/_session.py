"""Sparkplug-style session numbers: birth/death sequence (bdseq) and message sequence (seq)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["SEQ_MODULUS", "Session"]

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

"""The relay's queue: the home's messages waiting for the uplink, in order, bounded, with
the counters of what became of them (``forwarded``, ``dropped``, ``high_water``)."""

from __future__ import annotations

import sys
import threading
from collections import deque
from dataclasses import dataclass

__all__ = ["ForwardQueue", "Outgoing"]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message for the control broker."""

    topic: str
    payload: bytes
    retain: bool

    def size_bytes(self) -> int:
        """Memory it holds while queued, bytes (object, topic, payload; rough)."""
        return sys.getsizeof(self) + sys.getsizeof(self.topic) + sys.getsizeof(self.payload)


class ForwardQueue:
    """Messages accepted from the home broker and not yet acknowledged upstream.

    Thread-safe. A message is *kept* from :meth:`put` until the acknowledgement of its
    publish (:meth:`acknowledged`): first waiting here, then handed to the MQTT client
    (at most ``window`` at a time, and only while the gate is open). At most ``limit``
    messages are kept; :meth:`put` refuses (and counts) one more.

    Args:
        limit: messages kept at most.
        window: messages handed over and not yet acknowledged, at most.
    """

    def __init__(self, limit: int, window: int) -> None:
        if limit < 1 or window < 1:
            raise ValueError(f"limit and window must be at least 1, not {limit}, {window}")
        self.limit = limit
        self.window = window
        self.forwarded = 0
        """Messages acknowledged upstream."""
        self.dropped = 0
        """Messages refused because ``limit`` were kept."""
        self.high_water = 0
        """Most messages kept at once."""
        self.cond = threading.Condition()
        """Held while the state changes; notified when a message can be taken."""
        self._waiting: deque[Outgoing] = deque()
        self._handed = 0
        self._gate_open = False
        self._kinds: dict[int, bool] = {}  # packet id → is a queued message, until acked
        self._acked_early: set[int] = set()  # acknowledged before register() knew them

    @property
    def queued(self) -> int:
        """Messages kept: waiting or handed over and not yet acknowledged."""
        with self.cond:
            return len(self._waiting) + self._handed

    def put(self, message: Outgoing) -> bool:
        """Keep ``message`` (``True``) or count it as dropped (``False``: queue full)."""
        with self.cond:
            kept = len(self._waiting) + self._handed
            if kept >= self.limit:
                self.dropped += 1
                return False
            self._waiting.append(message)
            self.high_water = max(self.high_water, kept + 1)
            self.cond.notify_all()
            return True

    def set_gate(self, open_: bool) -> None:
        """Let :meth:`take` hand messages over (the uplink is ready) or not."""
        with self.cond:
            self._gate_open = open_
            self.cond.notify_all()

    def take(self, timeout_s: float) -> Outgoing | None:
        """The oldest waiting message, counted as handed over, once the gate is open and
        the window has room; ``None`` after ``timeout_s`` without one."""
        with self.cond:
            if not self.cond.wait_for(self._can_take, timeout_s):
                return None
            self._handed += 1
            return self._waiting.popleft()

    def _can_take(self) -> bool:
        return self._gate_open and bool(self._waiting) and self._handed < self.window

    def register(self, mid: int, queued: bool) -> None:
        """Note that packet id ``mid`` is a queued message (``queued``) or another publish,
        for its acknowledgement (which may already have come, in another thread)."""
        with self.cond:
            if mid in self._acked_early:
                self._acked_early.discard(mid)
                self._count(queued)
            else:
                self._kinds[mid] = queued

    def acknowledged(self, mid: int) -> None:
        """The publish with packet id ``mid`` was acknowledged."""
        with self.cond:
            queued = self._kinds.pop(mid, None)
            if queued is None:
                self._acked_early.add(mid)
            else:
                self._count(queued)

    def _count(self, queued: bool) -> None:
        if queued:
            self._handed -= 1
            self.forwarded += 1
            self.cond.notify_all()

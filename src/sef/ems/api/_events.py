"""The live stream: registry events (online, offline, property changes...) as server-sent
events (``text/event-stream``), one JSON object per event."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

from sef.ems._events import Event, Offline, Online, PropertyChanged
from sef.ems._service import EMS

__all__ = ["EventHub", "event_json"]

KEEPALIVE_S = 15.0
"""Comment line sent on an idle stream, real s (keeps proxies from closing it)."""


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def event_json(ems: EMS, event: Event) -> dict[str, Any]:
    """The JSON object streamed for one registry event.

    Keys: ``kind``, ``agent``, ``ts`` (EMS clock, Unix s), ``detail``; a ``property`` event
    also has ``key``, ``value`` and ``value_ts`` (sender time); presence events have
    ``status``.
    """
    out: dict[str, Any] = {
        "kind": event.kind,
        "agent": event.agent_id,
        "ts": ems.clock.now(),
        "detail": _jsonable(event.detail),
    }
    record = ems.registry.get(event.agent_id)
    if record is None:
        return out
    match event:
        case PropertyChanged(_, key):
            out["key"] = key
            entry = record.properties.get(key)
            if entry is not None:
                out["value"] = _jsonable(entry.value)
                out["value_ts"] = entry.ts
        case Online() | Offline():
            out["status"] = {None: "unknown", True: "online", False: "offline"}[record.online]
    return out


class EventHub:
    """Fans registry events out to stream subscribers (one bounded queue each).

    :meth:`install` chains itself into ``ems.on_event``; the handler that was there still
    gets every event first. A subscriber that falls more than ``max_queue`` events behind
    loses the oldest ones (counted in :attr:`dropped`).
    """

    def __init__(self, ems: EMS, *, max_queue: int = 1000) -> None:
        self.ems = ems
        self.max_queue = max_queue
        self.dropped = 0
        self.closed = False
        self._subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._previous: Callable[[Event], None] | None = None
        self._installed = False

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def install(self) -> None:
        if not self._installed:
            self._previous = self.ems.on_event
            self.ems.on_event = self._on_event
            self._installed = True

    def uninstall(self) -> None:
        if self._installed and self.ems.on_event == self._on_event:
            self.ems.on_event = self._previous
        self._installed = False

    def _on_event(self, event: Event) -> None:
        if self._previous is not None:
            self._previous(event)  # the EMS logs a failure of it
        if not self._subscribers:
            return
        data = event_json(self.ems, event)
        for queue in self._subscribers:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                self.dropped += 1
            queue.put_nowait(data)

    def close(self) -> None:
        """End every stream (before the server shuts down)."""
        self.closed = True
        for queue in self._subscribers:
            with contextlib.suppress(asyncio.QueueEmpty):
                while queue.full():
                    queue.get_nowait()
            queue.put_nowait(None)

    async def stream(
        self,
        *,
        kinds: Collection[str] = (),
        agent: str | None = None,
        keepalive_s: float = KEEPALIVE_S,
    ) -> AsyncIterator[str]:
        """Server-sent events: a ``hello`` first, then one per matching registry event."""
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(self.max_queue)
        self._subscribers.add(queue)
        number = 0
        try:
            hello = {
                "kind": "hello",
                "ts": self.ems.clock.now(),
                "agents": len(self.ems.registry.agents),
            }
            yield f"event: hello\ndata: {json.dumps(hello)}\n\n"
            while not self.closed:
                try:
                    data = await asyncio.wait_for(queue.get(), keepalive_s)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if data is None:
                    return
                if (kinds and data["kind"] not in kinds) or (agent and data["agent"] != agent):
                    continue
                number += 1
                yield (
                    f"id: {number}\nevent: {data['kind']}\n"
                    f"data: {json.dumps(data, separators=(',', ':'))}\n\n"
                )
        finally:
            self._subscribers.discard(queue)

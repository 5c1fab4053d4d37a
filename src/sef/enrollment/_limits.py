"""Limits of the enrollment server: request body size and per-address request rates."""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from starlette.requests import Request

__all__ = ["BodyTooLarge", "EnrollLimits", "RateLimiter", "read_body"]

DRAIN_MAX = 4 * 1024 * 1024
"""Most bytes of an oversized body read and thrown away before answering 413, so the
client reads the answer instead of a connection reset (bytes)."""


@dataclass(frozen=True)
class EnrollLimits:
    """Resource limits of one enrollment server."""

    max_body: int = 16 * 1024
    """Largest request body, bytes (413 beyond); a CSR is ~0.4 KB."""
    enroll_burst: int = 10
    """Enrollment and renewal requests one address may make at once (429 beyond)."""
    enroll_per_s: float = 1 / 6
    """Enrollment and renewal requests one address may make per second, sustained."""
    poll_burst: int = 30
    """Polls (``GET /enroll/{id}``, ``GET /crl``) one address may make at once."""
    poll_per_s: float = 1.0
    """Polls one address may make per second, sustained."""
    body_timeout_s: float = 10.0
    """Longest time to receive a request body, real s (408 beyond)."""

    def __post_init__(self) -> None:
        for name in ("max_body", "enroll_burst", "poll_burst"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("enroll_per_s", "poll_per_s", "body_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be > 0, got {value}")


class RateLimiter:
    """A token bucket per client address: ``burst`` requests at once, ``per_s`` a second
    after that. At most ``max_clients`` addresses are remembered (the least recently seen
    is forgotten first, which only ever lets a client in earlier)."""

    def __init__(self, burst: int, per_s: float, max_clients: int = 10_000) -> None:
        self.burst = float(burst)
        self.per_s = per_s
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str, now: float | None = None) -> float:
        """Take one request for ``client``: 0 if allowed, else the seconds to wait."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.per_s)
        if tokens >= 1.0:
            self._buckets[client] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[client] = (tokens, now)
            wait = (1.0 - tokens) / self.per_s
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


class BodyTooLarge(Exception):
    """The request body is over the limit (answered 413)."""


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The request body, at most ``limit`` bytes.

    Raises:
        BodyTooLarge: longer (after reading up to :data:`DRAIN_MAX` bytes of it, so the
            client sees the answer), or a ``Content-Length`` over the limit.
        TimeoutError: the body did not arrive within ``timeout_s`` s.
    """

    async def read() -> bytes:
        declared = request.headers.get("content-length")
        too_large = declared is not None and (not declared.isdigit() or int(declared) > limit)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                too_large = True
            if too_large:
                if size > DRAIN_MAX:
                    break
                continue
            chunks.append(chunk)
        if too_large:
            raise BodyTooLarge(f"request body over {limit} bytes")
        return b"".join(chunks)

    return await asyncio.wait_for(read(), timeout_s)

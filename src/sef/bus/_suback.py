"""Refused subscriptions: a SUBACK return code of 0x80 or more.

A broker answers each filter of a SUBSCRIBE with the granted QoS (0-2) or a failure:
0x80 in MQTT 3.1.1, a reason code of 0x80 or more in MQTT 5 (e.g. 0x87 not
authorized, 0x97 quota exceeded). A client that ignores it waits for messages that never
come. :func:`subscribe_with_retry` asks again with a growing delay (:class:`SubackRetry`:
0.5 s doubling, at most 10 s, 4 retries by default), logging a warning that names the
filter and the code each time, and returns the filters still refused; the caller
(:class:`sef.bus.BusClient`) then drops the connection so its reconnection path, with a
broker URL list possibly another broker, runs.

What brokers do (measured here): NATS refuses subscriptions with 0x80 while a cluster
node fails over or under load (``docs/cluster-plan.md`` section 3). Mosquitto 2.0.11
answers 0x80 (3.1.1) and 0x87 (MQTT 5) for a filter its dynamic security plugin denies,
but *grants* (code = requested QoS) a filter an ``acl_file`` denies, for both versions,
and then delivers nothing on it: that case cannot be seen by the client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

__all__ = ["SUBACK_FAILURE", "SubackRetry", "refused_codes", "subscribe_with_retry"]

log = logging.getLogger("sef.bus")

SUBACK_FAILURE = 0x80
"""SUBACK return codes from this value on are failures (3.1.1: 0x80 only; 5: 0x80-0xA2)."""


@dataclass(frozen=True)
class SubackRetry:
    """How a refused subscription is asked for again: after ``first_s``, then twice the
    previous delay, at most ``max_s`` (s), ``tries`` times; then the connection is dropped."""

    first_s: float = 0.5
    max_s: float = 10.0
    tries: int = 4

    def delays(self) -> list[float]:
        """The delays before each retry, s."""
        return [min(self.max_s, self.first_s * 2**n) for n in range(max(0, self.tries))]


SendSubscribes = Callable[[dict[str, int]], Awaitable[dict[str, int | None]]]
"""Sends SUBSCRIBE for each filter (-> QoS) and returns each filter's SUBACK code
(``None``: no SUBACK in time)."""


def refused_codes(codes: Mapping[str, int | None]) -> dict[str, int]:
    """The filters of ``codes`` whose SUBACK code is a failure, with their code."""
    return {p: c for p, c in codes.items() if c is not None and c >= SUBACK_FAILURE}


async def subscribe_with_retry(
    send: SendSubscribes,
    patterns: dict[str, int],
    retry: SubackRetry,
    *,
    alive: Callable[[], bool],
    client_id: str,
) -> dict[str, int]:
    """Subscribe to ``patterns`` (filter -> QoS) with ``send``; ask again for the refused
    ones as ``retry`` says while ``alive()`` (the connection still holds).

    Returns:
        The filters still refused after the last retry, with their last code; empty when
        every filter was granted or the connection ended meanwhile (the reconnection
        resubscribes anyway).
    """
    refused = refused_codes(await send(patterns))
    delays = retry.delays()
    for attempt, delay in enumerate(delays, 1):
        if not refused or not alive():
            return {}
        for pattern, code in refused.items():
            log.warning(
                "%s: the broker refused the subscription %r (SUBACK 0x%02x); "
                "asking again in %.1f s (%d/%d)",
                client_id, pattern, code, delay, attempt, len(delays),
            )  # fmt: skip
        await asyncio.sleep(delay)
        if not alive():
            return {}
        refused = refused_codes(await send({p: patterns[p] for p in refused}))
    return refused if alive() else {}

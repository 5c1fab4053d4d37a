"""An EMS worker on a NATS cluster (issue 16 items 5 and 6, ``docs/cluster-plan.md`` §4.2):
an :class:`sef.ems.EMS` whose agents' messages come from JetStream
(:class:`~sef.cluster._source.ClusterSource`) instead of an MQTT subscription.

Everything else is the EMS's: the registry, the recorder (batched commits, dead letters),
the API, the command log. Calls and replies still go over MQTT, through the EMS's own
:class:`sef.bus.BusClient` to one node of the cluster (a broker URL list, failover).

What differs from a single EMS, and why:

* **No sequence checks in the registry.** A worker sees only its share of each agent's
  property updates (and every worker sees every status and About): the sequence has
  holes that are no gaps, and a redelivered message of a dead worker comes after later
  ones without being a duplicate of anything this worker stored. Dropping it as a
  duplicate, as a single EMS would, would lose it. The store's sample identity (agent,
  property, sender time) absorbs the real duplicates instead; gap detection across
  workers belongs to the store (``docs/cluster-plan.md`` §4.2, not built yet).
* **Births need no property values to count as complete** (``require_properties``
  off): a live property update reaches one worker only, so the others would ask every new
  agent for a rebirth.
* A **store is required**: acknowledging a message means it is committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sef.bus import BrokerURL, Message
from sef.cluster._source import ClusterSource
from sef.ems import EMS
from sef.ems._events import Event
from sef.ems._records import AgentRecord

if TYPE_CHECKING:
    from sef.ems.store import Store

__all__ = ["WorkerEMS"]

log = logging.getLogger("sef.cluster.worker")


def _unsequenced(
    record: AgentRecord,
    seq: int | None,
    ts: float | None,
    message: Message,
    now: float,
    events: list[Event],
) -> bool:
    """The registry's sequence check of a worker: every message passes (see the module)."""
    return True


class WorkerEMS(EMS):
    """An EMS that shares the ingest with other workers of the same cluster.

    Args:
        broker: the cluster's MQTT URLs (a list, or one comma-separated string) for calls
            and replies; the bus starts at a node picked from ``host_id`` and moves on
            along the list when it loses its connection.
        nats_servers: the cluster's NATS URLs (any node will do; all for failover).
        host_id: this worker's id, different for every worker (also its MQTT client id).
        store: the database every worker shares (PostgreSQL).
        ingest_name: the shared durable consumer (the same for every worker of one EMS).
        batch, in_flight, ack_wait_s, max_ack_pending: see
            :class:`~sef.cluster._source.ClusterSource`.
        **options: the other :class:`sef.ems.EMS` options.
    """

    def __init__(
        self,
        broker: str | Sequence[str] | BrokerURL,
        nats_servers: Sequence[str],
        host_id: str,
        *,
        store: Store,
        ingest_name: str = "sef-ems-ingest",
        batch: int = 256,
        in_flight: int = 4,
        ack_wait_s: float = 30.0,
        max_ack_pending: int = 20000,
        **options: Any,
    ) -> None:
        if store is None:
            raise ValueError("an EMS worker needs a store: it acknowledges what it committed")
        if options.get("require_signed_telemetry"):
            raise ValueError("signed telemetry is not supported on a cluster worker yet")
        # a URL list: the bus starts at a node picked from the client id, then fails over
        target = broker if isinstance(broker, BrokerURL | str) else ",".join(broker)
        super().__init__(target, host_id, store=store, **options)
        # a worker sees part of each agent's sequence: no gap or duplicate from it
        self.registry._sequence = _unsequenced  # type: ignore[method-assign]
        self.births.require_properties = False
        self.source = ClusterSource(
            list(nats_servers),
            self._take,
            root=self.topics.root,
            name=ingest_name,
            batch=batch,
            in_flight=in_flight,
            ack_wait_s=ack_wait_s,
            max_ack_pending=max_ack_pending,
        )

    def _ingest_patterns(self) -> list[str]:
        return []  # the agents' and homes' messages come from JetStream

    def _take(self, topic: str, payload: bytes, retained: bool) -> asyncio.Future[None] | None:
        return self._on_message(Message(topic, payload, qos=1, retain=retained))

    async def start(self, *, timeout_s: float | None = 10.0) -> None:
        """Restore from the store, connect for calls, read the births, join the ingest."""
        await super().start(timeout_s=timeout_s)
        try:
            await self.source.start()
        except BaseException:
            await self.source.close()
            await super().stop()
            raise
        log.info(
            "worker %s: %d agents known, sharing ingest %r",
            self.host_id,
            len(self.registry.agents),
            self.source.name,
        )

    async def stop(self) -> None:
        """Stop fetching, commit what was taken (then acknowledge it), disconnect."""
        await self.source.stop_fetching()
        await super().stop()  # the recorder commits first: the acks below follow it
        await self.source.close()

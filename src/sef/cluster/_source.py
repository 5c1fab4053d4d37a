"""Where an EMS worker on a NATS cluster gets the agents' messages (``docs/cluster-plan.md``
§4.2): not an MQTT subscription, three JetStream reads.

1. **Births** (:func:`~sef.cluster._jetstream.read_retained`): at start, every retained
   message under the topic root (statuses, Abouts, interface XML, last property values,
   home gateways) from the replicated stream ``$MQTT_rmsgs``, at the worker's pace: no
   broker queue that could drop part of them (issue 16 item 1).
2. **Presence** (per worker, not shared): a consumer of its own on ``$MQTT_msgs`` for the
   live statuses, Abouts, interface XML and gateway messages, so that every worker knows
   the whole fleet (its API lists every agent, its group calls reach every member). It is
   created *before* the births are read (deliver new) and read after them: what is
   published meanwhile waits in it, so nothing falls between the two. (Not an ordered
   consumer: those are R1, and an interest-retention stream takes only consumers of its
   own replica count.)
3. **Ingest** (shared): the durable pull consumer :class:`~sef.cluster.SharedIngest` on the
   agents' property updates; each message goes to one worker, which hands it to the EMS
   and **acknowledges it only once the store committed it** (the future the EMS's
   recorder gives, as the MQTT path's manual PUBACK does). A worker that dies leaves its
   unacknowledged messages to the others after ``ack_wait_s``; a batch whose commit takes
   longer (the store is down and the recorder retries) is reported in progress every
   third of ``ack_wait_s``, so no other worker gets it while this one lives; a batch the
   recorder could not commit (it stopped) is NAKed (delivered again at once, to any
   worker). The store's sample
   identity (agent, property, sender time) makes a second delivery a no-op: exactly once
   in storage.

Each message reaches the EMS as a :class:`sef.bus.Message` through ``handle`` (the EMS's
own message path), so registry, recorder and events are the single-EMS ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sef.cluster._jetstream import (
    MSGS_STREAM,
    IngestMessage,
    SharedIngest,
    _api,
    _nats,
    read_retained,
    subject_to_topic,
    topic_to_subject,
)

__all__ = ["ClusterSource", "Handler", "SourceStats"]

log = logging.getLogger("sef.cluster.source")

PRESENCE_INACTIVE_S = 300.0
"""A worker's presence consumer is removed this long after its worker stopped fetching
(died), s: until then the stream keeps the presence messages for it."""

Handler = Callable[[str, bytes, bool], "asyncio.Future[None] | None"]
"""``handle(topic, payload, retained)``: the EMS takes one message; the future (if any) is
done once what it changed is committed to the store."""


@dataclass
class SourceStats:
    """Counters of one worker's source (messages)."""

    retained: int = 0
    """Retained messages read at start."""
    presence: int = 0
    """Live presence messages (status, About, interface XML, gateways) handled."""
    fetched: int = 0
    """Shared-ingest messages fetched (this worker's share)."""
    redelivered: int = 0
    """Of those, deliveries after the first (another worker died, or a NAK)."""
    acked: int = 0
    naked: int = 0
    in_progress: int = 0
    """Times a batch waiting for its commit was reported in progress (store slow or down)."""
    errors: int = 0
    """Fetch or acknowledgement errors (a node lost, a timeout); each is retried."""


@dataclass
class ClusterSource:
    """A worker's message source on the cluster (see the module).

    Args:
        servers: NATS URLs of the cluster's nodes.
        handle: the EMS's message path (:data:`Handler`).
        root: the topic root (``sef``).
        name: the shared durable consumer's name (the same for every worker of one EMS).
        batch: messages per fetch.
        in_flight: fetched batches waiting for their commit at once (more: fetching waits).
        ack_wait_s: time a message may stay unacknowledged before JetStream gives it to a
            worker again, s (longer than the slowest commit; it is also how long a dead
            worker's share waits).
        max_ack_pending: unacknowledged messages over all workers.
    """

    servers: Sequence[str]
    handle: Handler
    root: str = "sef"
    name: str = "sef-ems-ingest"
    batch: int = 256
    in_flight: int = 4
    ack_wait_s: float = 30.0
    max_ack_pending: int = 20000
    stats: SourceStats = field(default_factory=SourceStats)
    _nc: Any = None
    _presence: Any = None
    _following: asyncio.Task[None] | None = None
    _shared: SharedIngest | None = None
    _fetching: asyncio.Task[None] | None = None
    _acks: set[asyncio.Task[None]] = field(default_factory=set)
    _window: asyncio.Semaphore | None = None

    @property
    def _agents(self) -> str:
        return f"$MQTT.msgs.{topic_to_subject(self.root)}.agents"

    def presence_subjects(self) -> list[str]:
        """The subjects every worker follows whole (not shared)."""
        root = f"$MQTT.msgs.{topic_to_subject(self.root)}"
        return [
            f"{self._agents}.*.status",
            f"{self._agents}.*.about",
            f"{self._agents}.*.interfaces.>",
            f"{root}.interfaces.>",
            f"{root}.gateways.>",
        ]

    def shared_subjects(self) -> list[str]:
        """The subjects the workers share: the agents' property updates."""
        return [f"{self._agents}.*.props.>"]

    async def start(self) -> None:
        """Follow presence, read the births, then take a share of the ingest."""
        api = _api()
        self._nc = await _nats().connect(
            servers=list(self.servers), max_reconnect_attempts=-1, reconnect_time_wait=0.5
        )
        js = self._nc.jetstream()
        # an interest-retention stream takes consumers of its own replica count only
        replicas = (await js.stream_info(MSGS_STREAM)).config.num_replicas
        # created before the births are read: what comes meanwhile waits in it
        presence = f"{self.name}-presence-{uuid.uuid4().hex[:8]}"
        await js.add_consumer(
            MSGS_STREAM,
            api.ConsumerConfig(
                durable_name=presence,
                filter_subjects=self.presence_subjects(),
                deliver_policy=api.DeliverPolicy.NEW,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=self.ack_wait_s,
                num_replicas=replicas,
                inactive_threshold=PRESENCE_INACTIVE_S,  # a dead worker's goes away
            ),
        )
        self._presence = await js.pull_subscribe_bind(presence, stream=MSGS_STREAM)
        async for topic, payload in read_retained(self.servers, topic_prefix=self.root):
            self.stats.retained += 1
            self._take(topic, payload, True)
        log.info("worker source: %d retained messages read", self.stats.retained)
        self._following = asyncio.create_task(self._presence_loop(), name="cluster presence")
        self._shared = await SharedIngest(
            self.servers,
            name=self.name,
            ack_wait_s=self.ack_wait_s,
            max_ack_pending=self.max_ack_pending,
            subjects=self.shared_subjects(),
        ).start()
        self._window = asyncio.Semaphore(self.in_flight)
        self._fetching = asyncio.create_task(self._fetch_loop(), name="cluster ingest")

    async def _presence_loop(self) -> None:
        """Every live status, About, interface and gateway message, in order."""
        while True:
            try:
                batch = await self._presence.fetch(self.batch, timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # nats TimeoutError (nothing new), a node lost
                if not isinstance(exc, TimeoutError):
                    self.stats.errors += 1
                    log.warning("presence fetch failed (%s); trying again", exc)
                    await asyncio.sleep(0.5)
                continue
            for raw in batch:
                try:
                    topic = subject_to_topic(raw.subject.removeprefix("$MQTT.msgs."))
                except ValueError:
                    log.warning("presence: not a SEF topic, ignored: %s", raw.subject)
                else:
                    self.stats.presence += 1
                    self._take(topic, bytes(raw.data), False)
                with contextlib.suppress(Exception):  # not acknowledged: it comes again
                    await raw.ack()

    def _take(self, topic: str, payload: bytes, retained: bool) -> asyncio.Future[None] | None:
        try:
            return self.handle(topic, payload, retained)
        except Exception:  # the EMS logs and counts bad messages; this is a bug
            log.exception("the EMS failed on a message of %s", topic)
            return None

    async def _fetch_loop(self) -> None:
        assert self._shared is not None and self._window is not None
        while True:
            await self._window.acquire()
            try:
                batch = await self._shared.fetch(self.batch, timeout_s=1.0)
            except asyncio.CancelledError:
                self._window.release()
                raise
            except Exception as exc:  # a node lost, a JetStream timeout: try again
                self._window.release()
                self.stats.errors += 1
                log.warning("ingest fetch failed (%s); trying again", exc)
                await asyncio.sleep(0.5)
                continue
            if not batch:
                self._window.release()
                continue
            self.stats.fetched += len(batch)
            pending = []
            for message in batch:
                if message.deliveries > 1:
                    self.stats.redelivered += 1
                pending.append(self._take(message.topic, message.payload, False))
            task = asyncio.create_task(self._ack_when_stored(batch, pending))
            self._acks.add(task)
            task.add_done_callback(self._acks.discard)

    async def _ack_when_stored(
        self, batch: list[IngestMessage], pending: list[asyncio.Future[None] | None]
    ) -> None:
        """Acknowledge each message once its rows are committed; NAK those whose commit
        failed (the recorder stopped): another worker takes them at once."""
        assert self._window is not None
        try:
            outcome: dict[int, bool] = {}
            for future in pending:
                if future is not None and id(future) not in outcome:
                    outcome[id(future)] = await self._stored(future, batch)
            for message, future in zip(batch, pending, strict=True):
                stored = future is None or outcome[id(future)]
                try:
                    if stored:
                        await message.ack()
                        self.stats.acked += 1
                    else:
                        await message.nak()
                        self.stats.naked += 1
                except Exception as exc:  # connection lost: JetStream delivers it again
                    self.stats.errors += 1
                    log.warning("acknowledgement not sent (%s): delivered again later", exc)
        finally:
            self._window.release()

    async def _stored(self, future: asyncio.Future[None], batch: list[IngestMessage]) -> bool:
        """Wait for a commit; while it takes long (the store is down: the recorder retries)
        tell JetStream every third of ``ack_wait_s`` that ``batch`` is still in progress,
        so that it is not given to another worker while this one lives. Whether stored."""
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(future), self.ack_wait_s / 3)
                return True
            except TimeoutError:
                self.stats.in_progress += 1
                for message in batch:
                    with contextlib.suppress(Exception):  # lost: redelivered, no harm
                        await message.in_progress()
            except Exception as exc:
                log.warning("%s: its messages are delivered again", exc)
                return False

    async def stop_fetching(self) -> None:
        """Take no more messages (those fetched keep their acknowledgement path)."""
        for task in (self._fetching, self._following):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._fetching = self._following = None

    async def close(self, timeout_s: float = 10.0) -> None:
        """Wait (at most ``timeout_s``) for the pending acknowledgements, then disconnect.
        Call after the EMS's recorder stopped, so that every commit future is done."""
        await self.stop_fetching()
        if self._acks:
            _, late = await asyncio.wait(set(self._acks), timeout=timeout_s)
            for task in late:
                task.cancel()
        if self._shared is not None:
            await self._shared.stop()
            self._shared = None
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None

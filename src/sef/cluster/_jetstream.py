"""EMS workers on a NATS cluster read the MQTT traffic from JetStream, not from an MQTT
session (prototype of the spike, ``docs/cluster-plan.md`` §2.3 and §4.2):

* :func:`read_retained`: the whole fleet's retained state (births, last values) from the
  stream ``$MQTT_rmsgs`` (one message per topic, replicated), at the reader's pace: no
  broker queue that could drop births while an EMS (re)starts.
* :class:`SharedIngest`: a durable pull consumer on ``$MQTT_msgs`` (every QoS 1 MQTT
  publish) that several workers bind to: each message goes to one worker, which
  acknowledges it once stored; a worker that dies leaves its unacknowledged messages to
  the others after ``ack_wait_s``.

NATS maps an MQTT topic to a subject: ``/`` -> ``.`` and ``.`` -> ``//``
(:func:`topic_to_subject`, :func:`subject_to_topic`; SEF topics have no empty level, the
only case with other escapes). Needs the ``nats-py`` client (``pip install -e
'.[cluster]'``); it is imported when used.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MSGS_STREAM",
    "RETAINED_STREAM",
    "IngestMessage",
    "SharedIngest",
    "read_retained",
    "subject_to_topic",
    "topic_to_subject",
]

log = logging.getLogger(__name__)

RETAINED_STREAM = "$MQTT_rmsgs"
"""NATS's stream of MQTT retained messages (subjects ``$MQTT.rmsgs.<subject>``)."""
MSGS_STREAM = "$MQTT_msgs"
"""NATS's stream of MQTT QoS 1/2 publishes (subjects ``$MQTT.msgs.<subject>``)."""
TOPIC_HEADER = "Nmqtt-RTopic"
"""Header of a retained message holding its MQTT topic as published."""


def topic_to_subject(topic: str) -> str:
    """The NATS subject of MQTT ``topic`` (``/`` -> ``.``, ``.`` -> ``//``); raises
    :class:`ValueError` for an empty level or a space, which NATS escapes otherwise."""
    levels = topic.split("/")
    if any(not level for level in levels) or " " in topic:
        raise ValueError(f"topic {topic!r} has an empty level or a space")
    return ".".join(level.replace(".", "//") for level in levels)


def subject_to_topic(subject: str) -> str:
    """The MQTT topic of NATS ``subject`` (inverse of :func:`topic_to_subject`)."""
    levels = subject.split(".")
    if any(not level or level.startswith("/") or level.endswith("/") for level in levels):
        raise ValueError(f"subject {subject!r} encodes an empty MQTT level")
    return "/".join(level.replace("//", ".") for level in levels)


def _nats() -> Any:
    try:
        return importlib.import_module("nats")
    except ImportError:
        raise RuntimeError("the nats-py client is missing: pip install -e '.[cluster]'") from None


def _api() -> Any:
    _nats()
    return importlib.import_module("nats.js.api")


async def read_retained(
    servers: Sequence[str], topic_prefix: str = "sef/agents", batch: int = 1000
) -> AsyncIterator[tuple[str, bytes]]:
    """Every retained message under ``topic_prefix`` as ``(topic, payload)``, read from
    the replicated stream (an ephemeral consumer; ends once it has read all there were)."""
    nc = await _nats().connect(servers=list(servers))
    try:
        js = nc.jetstream()
        prefix = f"$MQTT.rmsgs.{topic_to_subject(topic_prefix)}.>"
        sub = await js.pull_subscribe(prefix, stream=RETAINED_STREAM)
        info = await sub.consumer_info()
        left = int(info.num_pending)
        while left > 0:
            messages = await sub.fetch(min(batch, left), timeout=5.0)
            for message in messages:
                headers = message.headers or {}
                topic = headers.get(TOPIC_HEADER) or subject_to_topic(
                    message.subject.removeprefix("$MQTT.rmsgs.")
                )
                await message.ack()
                left -= 1
                yield topic, bytes(message.data)
        await sub.unsubscribe()
    finally:
        await nc.close()


@dataclass
class IngestMessage:
    """One QoS 1 MQTT publish handed to a worker: acknowledge it once it is stored."""

    topic: str
    payload: bytes
    deliveries: int
    """How many times JetStream delivered it (> 1: a redelivery, e.g. after a worker died)."""
    _raw: Any

    async def ack(self) -> None:
        """Stored: JetStream removes it (no other worker will get it)."""
        await self._raw.ack()

    async def in_progress(self) -> None:
        """Still being stored: JetStream restarts its ``ack_wait`` (no redelivery yet)."""
        await self._raw.in_progress()

    async def nak(self, delay_s: float | None = None) -> None:
        """Not stored: deliver it again (to any worker), after ``delay_s`` if given."""
        await self._raw.nak(delay=delay_s)


@dataclass
class SharedIngest:
    """A worker's share of the MQTT QoS 1 traffic under ``topic_prefix``.

    Args:
        servers: NATS URLs of the cluster's nodes (any of them will do).
        name: the durable consumer's name; every worker of one EMS uses the same.
        topic_prefix: MQTT topic prefix taken (``sef/agents``: everything agents send).
        ack_wait_s: how long a delivered message may stay unacknowledged before
            JetStream gives it to a worker again, s (> the longest store commit).
        max_ack_pending: unacknowledged messages over all workers.
    """

    servers: Sequence[str]
    name: str = "sef-ems-ingest"
    topic_prefix: str = "sef/agents"
    ack_wait_s: float = 30.0
    max_ack_pending: int = 20000
    subjects: Sequence[str] = ()
    """NATS subjects of ``$MQTT_msgs`` to take instead of everything under
    ``topic_prefix`` (e.g. ``$MQTT.msgs.sef.agents.*.props.>``: property updates only)."""
    _nc: Any = None
    _sub: Any = None

    async def start(self) -> SharedIngest:
        """Connect, create the durable consumer if missing, and bind to it. The stream
        exists once any MQTT client connected to the cluster (:meth:`sef.cluster.
        BrokerCluster.mqtt_ping`); before that NATS answers "stream not found"."""
        api = _api()
        self._nc = await _nats().connect(
            servers=list(self.servers), max_reconnect_attempts=-1, reconnect_time_wait=0.5
        )
        js = self._nc.jetstream()
        subjects = list(self.subjects)
        config = api.ConsumerConfig(
            durable_name=self.name,
            filter_subject=(
                None if subjects else f"$MQTT.msgs.{topic_to_subject(self.topic_prefix)}.>"
            ),
            filter_subjects=subjects or None,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_wait=self.ack_wait_s,
            max_ack_pending=self.max_ack_pending,
        )
        await js.add_consumer(MSGS_STREAM, config)  # the same config again: no change
        self._sub = await js.pull_subscribe_bind(self.name, stream=MSGS_STREAM)
        return self

    async def fetch(self, batch: int = 256, timeout_s: float = 1.0) -> list[IngestMessage]:
        """Up to ``batch`` messages (fewer, or none, after ``timeout_s``)."""
        if self._sub is None:
            raise RuntimeError("SharedIngest.start() first")
        try:
            raw = await self._sub.fetch(batch, timeout=timeout_s)
        except TimeoutError:  # nats.errors.TimeoutError subclasses it
            return []
        out = []
        for message in raw:
            subject = message.subject.removeprefix("$MQTT.msgs.")
            try:
                topic = subject_to_topic(subject)
            except ValueError:
                log.warning("not a SEF topic, dropped: %s", subject)
                await message.term()
                continue
            out.append(
                IngestMessage(topic, bytes(message.data), message.metadata.num_delivered, message)
            )
        return out

    async def stop(self) -> None:
        """Disconnect (the durable consumer stays for the other workers)."""
        if self._nc is not None:
            await self._nc.close()
        self._nc = self._sub = None

"""The gateway's uplink: a store-and-forward relay between the home broker and the
control broker (it replaces a Mosquitto bridge, see ``docs/gateway.md``).

Two paho-mqtt clients, each with its own network thread, and one worker thread:

* **local** (:class:`~sef.gateway._relay_home.HomeClient`: MQTT 5, to the home
  Mosquitto) subscribes to the ``out`` topics with
  ``retainAsPublished``, so every message keeps its original retain flag, and appends it
  to the relay's queue (:attr:`UplinkRelay.queue_limit` messages at most: past it a new
  message is dropped and counted). It also publishes what comes down.
* **upstream** (MQTT 3.1.1 or 5, to the control broker) keeps a persistent session,
  has a retained will ``0`` on ``{root}/gateways/{home}/status`` and publishes a retained
  ``1`` there on every CONNACK. It subscribes to the ``in`` topics.
* the **worker** hands queued messages to the upstream client in order, at most
  :data:`WINDOW` unacknowledged at a time, and only once the upstream connection is
  ready (see :meth:`UplinkRelay._on_up_publish`); it publishes the statistics.

A message is taken off the queue when the control broker acknowledged it (PUBACK). A cut
uplink loses nothing (up to the queue limit): the window's unacknowledged messages are
re-sent (DUP) by paho on reconnect, the rest follow in order. Nothing is ever re-sent
because the connection came back: no replay of retained state.

Why not paho's own ``max_queued_messages_set``: paho keeps queued messages by packet id,
and there are only 65 535 of them, so it cannot hold a queue of 500 000; and a message
published while paho reconnects can overtake older ones it still has to re-send.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from sef.bus import BrokerURL, Topics
from sef.gateway._relay_home import HomeClient, session_properties
from sef.gateway._relay_queue import ForwardQueue, Outgoing
from sef.gateway._topics import UPLINK_IN
from sef.security import Security

__all__ = ["DEFAULT_QUEUE_LIMIT", "WINDOW", "UplinkRelay"]

log = logging.getLogger("sef.gateway.relay")

DEFAULT_QUEUE_LIMIT = 500_000
"""Messages the relay keeps for a cut uplink (``docs/gateway.md``: memory)."""

WINDOW = 100
"""Messages handed to the upstream client and not yet acknowledged, at most."""

STATS_INTERVAL_S = 10.0
"""The statistics are published this often while the uplink is up, s."""

DROP_LOG_INTERVAL_S = 10.0
"""At most one warning about dropped messages per this many seconds."""


class UplinkRelay:
    """The relay of one home (module docstring).

    Args:
        uplink: the control server's broker (``?version=5`` for MQTT 5, else 3.1.1).
        home_id: the home's id (topics; client id ``sef-gw-{home_id}`` when insecure).
        local_host: address of the home broker's listener.
        local_port: its port.
        root: the SEF topic root.
        keepalive_s: MQTT keepalive of the uplink, s: a silent uplink is noticed within
            about twice this.
        restart_s: (base, cap) of the uplink's reconnection backoff, s: the delay doubles
            from base up to cap.
        queue_limit: messages kept (queued or unacknowledged) for the uplink; a message
            arriving when that many are kept is dropped and counted.
        security: the gateway's credentials: both clients then speak TLS with its
            certificate and use its identity as client id. ``None``: plain text.
        on_local_message: called (in the local client's thread) with the topic and
            payload of every message from the home broker, after it was queued.
        stats_interval_s: period of the statistics while the uplink is up, s.
    """

    def __init__(
        self,
        uplink: BrokerURL,
        home_id: str,
        *,
        local_host: str,
        local_port: int,
        root: str = "sef",
        keepalive_s: int = 10,
        restart_s: tuple[int, int] = (1, 5),
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
        security: Security | None = None,
        on_local_message: Callable[[str, bytes], None] | None = None,
        stats_interval_s: float = STATS_INTERVAL_S,
    ) -> None:
        self.uplink = uplink
        self.home_id = home_id
        self.root = root
        self.keepalive_s = keepalive_s
        self.stats_interval_s = stats_interval_s
        self.status_topic = Topics(root).gateway_status(home_id)
        self.stats_topic = Topics(root).gateway_stats(home_id)
        self.queue = ForwardQueue(queue_limit, WINDOW)
        """The messages waiting for the uplink, and the counters."""
        self.refused = 0
        """Publishes the control broker acknowledged with an error (MQTT 5 only, e.g. not
        authorized by its ACL; a 3.1.1 broker drops such a publish silently). Counted in
        ``forwarded`` too."""
        self.connect_failures = 0
        """Connection attempts to the control broker that failed (TCP or TLS)."""
        self._on_local_message = on_local_message
        self._lock = threading.Lock()
        self._up_connected = False
        self._down_since: float | None = None  # since when the uplink is down (not at first)
        self._last_outage_s = 0.0
        self._stats_due = False
        self._stopping = False
        self._life = threading.Lock()  # start() and stop() never interleave
        self._subscribed = False  # subscribed to the in topics since this relay started
        self._next_drop_log = 0.0
        self._worker: threading.Thread | None = None
        self._local = HomeClient(
            local_host, local_port, root, home_id, security, self._on_local_message_received
        )
        self._up = self._make_upstream(restart_s, security)

    # -- the two clients ---------------------------------------------------------------
    def _make_upstream(self, restart_s: tuple[int, int], security: Security | None) -> mqtt.Client:
        v5 = self.uplink.version == 5
        client_id = security.identity.id if security else f"sef-gw-{self.home_id}"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id,
            clean_session=None if v5 else False,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        )
        if self.uplink.tls:
            context = security.client_tls() if security else ssl.create_default_context()
            client.tls_set_context(context)
        if self.uplink.username and security is None:
            client.username_pw_set(self.uplink.username, self.uplink.password)
        client.will_set(self.status_topic, b"0", qos=1, retain=True)
        client.reconnect_delay_set(restart_s[0], restart_s[1])
        client.max_inflight_messages_set(WINDOW)
        client.on_connect = self._on_up_connect
        client.on_disconnect = self._on_up_disconnect
        client.on_publish = self._on_up_publish
        client.on_connect_fail = self._on_up_connect_fail
        client.on_message = self._on_up_message
        client.connect_async(
            self.uplink.host,
            self.uplink.port,
            self.keepalive_s,
            clean_start=False,
            properties=session_properties() if v5 else None,
        )
        return client

    # -- life cycle --------------------------------------------------------------------
    def start(self, timeout_s: float = 10.0) -> UplinkRelay:
        """Start both clients and the worker; return once the local subscriptions are in
        place (the uplink connects in the background). Blocks: call it in a thread."""
        with self._life:  # a stop() from another thread waits until the threads exist
            self._worker = threading.Thread(
                target=self._work, name=f"sef-relay-{self.home_id}", daemon=True
            )
            self._worker.start()
            self._local.start()
            self._up.loop_start()
        if not self._local.ready.wait(timeout_s):
            self.stop()
            raise TimeoutError(f"the relay could not subscribe at the home broker in {timeout_s} s")
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop: the local client first (nothing more comes in); then, if the uplink is up,
        a retained ``0`` on the gateway status (the home goes offline on purpose), waited
        for up to ``timeout_s``; then a clean DISCONNECT. What is still queued is lost.
        Blocks: call it in a thread. Safe to call from another thread while :meth:`start`
        runs (a cancelled gateway start): it waits until the clients' threads exist."""
        with self._life:
            self._stop(timeout_s)

    def _stop(self, timeout_s: float) -> None:
        self._local.stop()
        self._stopping = True
        self.queue.set_gate(False)  # wakes the worker
        if self._worker is not None:
            self._worker.join()
        if self._up_connected:
            info = self._publish_control(self.status_topic, b"0")
            try:
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError) as exc:  # not sent: the will says it anyway
                log.info("gateway %s: offline status not sent: %s", self.home_id, exc)
        self._up.disconnect()
        self._up.loop_stop()
        left = self.queued
        if left:
            log.warning("gateway %s stopped with %d messages not forwarded", self.home_id, left)

    # -- counters ----------------------------------------------------------------------
    @property
    def forwarded(self) -> int:
        """Messages the control broker acknowledged (PUBACK)."""
        return self.queue.forwarded

    @property
    def dropped(self) -> int:
        """Messages dropped because the queue was full."""
        return self.queue.dropped

    @property
    def high_water(self) -> int:
        """Most messages kept at once."""
        return self.queue.high_water

    @property
    def queued(self) -> int:
        """Messages kept: waiting in the queue or unacknowledged upstream."""
        return self.queue.queued

    @property
    def queue_limit(self) -> int:
        """Messages kept at most."""
        return self.queue.limit

    @property
    def connected(self) -> bool:
        """Whether the uplink is up (CONNACK received, not disconnected since)."""
        return self._up_connected

    @property
    def uplink_down_s(self) -> float:
        """Length of the current outage of the uplink, or of the last one if it is up, s."""
        with self._lock:
            if self._down_since is not None:
                return time.monotonic() - self._down_since
            return self._last_outage_s

    def stats(self) -> dict[str, Any]:
        """The statistics published on ``{root}/gateways/{home}/stats`` (JSON object)."""
        return {
            "v": 1,
            "home": self.home_id,
            "ts": round(time.time(), 3),
            "queued": self.queued,
            "queue_limit": self.queue_limit,
            "dropped": self.dropped,
            "forwarded": self.forwarded,
            "high_water": self.high_water,
            "uplink_down_s": round(self.uplink_down_s, 3),
        }

    # -- home → control ------------------------------------------------------------------
    def forward(self, topic: str, payload: bytes, retain: bool) -> bool:
        """Queue a message for the control broker (in order with the home's messages);
        ``False`` if it was dropped because the queue is full."""
        if self.queue.put(Outgoing(topic, payload, retain)):
            return True
        self._log_drop()
        return False

    def _log_drop(self) -> None:
        now = time.monotonic()
        with self._lock:
            if now < self._next_drop_log:
                return
            self._next_drop_log = now + DROP_LOG_INTERVAL_S
        log.warning(
            "gateway %s: uplink queue full (%d messages): dropping new messages; "
            "uplink down %.0f s, %d dropped so far, %d forwarded",
            self.home_id,
            self.queue_limit,
            self.uplink_down_s,
            self.dropped,
            self.forwarded,
        )

    def _on_local_message_received(self, topic: str, payload: bytes, retain: bool) -> None:
        self.forward(topic, payload, retain)
        if self._on_local_message is not None:
            try:
                self._on_local_message(topic, payload)
            except Exception:
                log.exception("gateway %s: local message handler failed", self.home_id)

    # -- the worker: queue → upstream, statistics ----------------------------------------
    def _work(self) -> None:
        last_stats = 0.0
        last_dropped = 0
        while not self._stopping:
            item = self.queue.take(0.5)
            if item is not None:
                info = self._up.publish(item.topic, item.payload, qos=1, retain=item.retain)
                self.queue.register(info.mid, queued=True)
            now = time.monotonic()
            if self._up_connected and (
                self._stats_due
                or now - last_stats >= self.stats_interval_s
                or (self.dropped != last_dropped and now - last_stats >= 1.0)
            ):
                self._stats_due = False
                last_stats, last_dropped = now, self.dropped
                payload = json.dumps(self.stats(), separators=(",", ":")).encode()
                self._publish_control(self.stats_topic, payload)

    def _publish_control(self, topic: str, payload: bytes) -> mqtt.MQTTMessageInfo:
        """Publish one of the relay's own retained messages (status, statistics)."""
        info = self._up.publish(topic, payload, qos=1, retain=True)
        self.queue.register(info.mid, queued=False)
        return info

    # -- upstream callbacks (paho's network thread) ----------------------------------------
    def _on_up_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.warning("gateway %s: control broker refused the uplink: %s", self.home_id, reason)
            return
        with self._lock:
            self._up_connected = True
            if self._down_since is not None:
                self._last_outage_s = time.monotonic() - self._down_since
                self._down_since = None
            self._stats_due = True
        log.info(
            "gateway %s: uplink to %s up (session %s, %d messages queued)",
            self.home_id,
            self.uplink,
            "kept" if flags.session_present else "new",
            self.queued,
        )
        # Its acknowledgement comes after paho re-sent what it held: see _on_up_publish.
        self._publish_control(self.status_topic, b"1")
        # A kept session has the subscriptions (and queued the calls of the cut); the
        # first connection subscribes anyway: the new home broker needs the retained
        # host statuses.
        if not flags.session_present or not self._subscribed:
            self._subscribed = True
            self._subscribe_in(client)

    def _subscribe_in(self, client: mqtt.Client) -> None:
        topics = [f"{self.root}/{pattern}" for pattern in UPLINK_IN]
        if self.uplink.version == 5:
            options = SubscribeOptions(qos=1, noLocal=True, retainAsPublished=True)
            client.subscribe([(topic, options) for topic in topics])
        else:
            client.subscribe([(topic, 1) for topic in topics])

    def _on_up_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.queue.set_gate(False)
        with self._lock:
            was_up = self._up_connected
            self._up_connected = False
            if self._down_since is None:
                self._down_since = time.monotonic()
        if was_up and not self._stopping:
            log.warning(
                "gateway %s: uplink to %s lost (%s); %d messages queued",
                self.home_id,
                self.uplink,
                reason,
                self.queued,
            )

    def _on_up_publish(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason: ReasonCode,
        properties: Properties,
    ) -> None:
        """A PUBACK. The first one after a CONNACK also opens the gate for new messages:
        paho re-sends the messages it holds right after ``on_connect`` returns, in the
        same thread, so every acknowledgement comes after them, and a new message handed
        over now cannot overtake them."""
        if self._up_connected:
            self.queue.set_gate(True)
        if reason.is_failure:
            self.refused += 1
            log.debug("gateway %s: control broker refused packet %d: %s", self.home_id, mid, reason)
        self.queue.acknowledged(mid)

    def _on_up_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        self.connect_failures += 1

    def _on_up_message(
        self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage
    ) -> None:
        """A call or host status from the control side: published in the home, at QoS 1.
        Host statuses are retained state; with MQTT 3.1.1 the retain flag of a live
        message is lost on the way, so it is set from the topic."""
        topic = message.topic
        prefix = self.root + "/"
        parts = topic[len(prefix) :].split("/") if topic.startswith(prefix) else []
        is_host_status = len(parts) == 3 and parts[0] == "hosts" and parts[2] == "status"
        retain = bool(message.retain) if self.uplink.version == 5 else is_host_status
        self._local.publish(topic, bytes(message.payload), retain)

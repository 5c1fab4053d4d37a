"""The relay's home side: an MQTT 5 client of the home broker that receives every ``out``
message with its original retain flag and publishes what comes down."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from sef.bus import Topics
from sef.gateway._topics import UPLINK_OUT
from sef.security import Security

__all__ = ["SESSION_EXPIRY_S", "HomeClient", "session_properties"]

log = logging.getLogger("sef.gateway.relay")

SESSION_EXPIRY_S = 7 * 24 * 3600
"""MQTT 5 session expiry the relay asks of both brokers, s (3.1.1: the broker's own)."""

HOME_KEEPALIVE_S = 30
"""MQTT keepalive towards the home broker, s (same host: only a hung broker is noticed)."""


def session_properties() -> Properties:
    """CONNECT properties of a persistent MQTT 5 session."""
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = SESSION_EXPIRY_S
    return properties


class HomeClient:
    """The relay's client of the home broker (MQTT 5, persistent session).

    It subscribes at QoS 1 to :data:`UPLINK_OUT` and ``{root}/gateways/{home}/agents``
    with ``retainAsPublished`` (the original retain flag) and ``retainHandling 1`` (a
    reconnection replays no retained message), and calls ``on_message(topic, payload,
    retain)`` in its network thread for each message.

    Args:
        host: address of the home broker's listener (``0.0.0.0`` or empty: 127.0.0.1).
        port: its port.
        root: the SEF topic root.
        home_id: the home's id (client id ``sef-gw-{home_id}-local`` when insecure).
        security: the gateway's credentials: TLS with its certificate, its identity as
            client id (the home ACL's gateway user). ``None``: plain text.
        on_message: what to do with each message.
    """

    def __init__(
        self,
        host: str,
        port: int,
        root: str,
        home_id: str,
        security: Security | None,
        on_message: Callable[[str, bytes, bool], None],
    ) -> None:
        self.root = root
        self.home_id = home_id
        self.ready = threading.Event()
        """Set once the home broker answered the subscriptions."""
        self._on_message = on_message
        client_id = security.identity.id if security else f"sef-gw-{home_id}-local"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id, protocol=mqtt.MQTTv5)
        if security is not None:  # our own listener: its certificate is ours
            client.tls_set_context(security.client_tls(check_hostname=False))
        client.on_connect = self._on_connect
        client.on_message = self._on_message_received
        client.on_subscribe = self._on_subscribe
        client.reconnect_delay_set(1, 5)
        host = "127.0.0.1" if host in ("", "0.0.0.0") else host
        client.connect_async(
            host, port, HOME_KEEPALIVE_S, clean_start=False, properties=session_properties()
        )
        self.client = client

    def start(self) -> None:
        """Start the network thread (it connects and subscribes)."""
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes, retain: bool) -> None:
        """Publish in the home at QoS 1."""
        self.client.publish(topic, payload, qos=1, retain=retain)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.warning("gateway %s: home broker refused the relay: %s", self.home_id, reason)
            return
        options = SubscribeOptions(qos=1, retainAsPublished=True, retainHandling=1)
        topics = [f"{self.root}/{pattern}" for pattern in UPLINK_OUT]
        topics.append(Topics(self.root).gateway_agents(self.home_id))
        client.subscribe([(topic, options) for topic in topics])

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            log.error("gateway %s: home broker refused subscriptions: %s", self.home_id, refused)
        self.ready.set()

    def _on_message_received(
        self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage
    ) -> None:
        self._on_message(message.topic, bytes(message.payload), bool(message.retain))

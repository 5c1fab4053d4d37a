"""Broker URL lists for clients of a clustered broker: connect to any node, move on to
the next one when the connection fails or is lost.

The URL-list code lives in :mod:`sef.bus._url_list` (the bus uses it for every client
given several brokers, e.g. ``BusClient("mqtt://n0:1883,mqtt://n1:1883", id)``); it is
re-exported here, with :func:`cluster_client_id` for NATS.
"""

from __future__ import annotations

from sef.bus import parse_url_list, start_index, url_list_resolver

__all__ = ["cluster_client_id", "parse_url_list", "start_index", "url_list_resolver"]

_NATS_REFUSED = str.maketrans({".": "~"})
"""NATS refuses an MQTT client id holding ``.``, ``*``, ``>`` or a space (CONNACK 2,
identifier rejected; measured on 2.15.1). SEF ids (:func:`sef.bus.check_id`) use
``A-Z a-z 0-9 _ . -`` only, so ``.`` -> ``~`` (outside that alphabet) maps them one to
one."""


def cluster_client_id(sef_id: str) -> str:
    """The MQTT client id to use on a NATS cluster for agent/host id ``sef_id``: ``.``
    becomes ``~`` (one to one for SEF ids, see :data:`_NATS_REFUSED`)."""
    return sef_id.translate(_NATS_REFUSED)

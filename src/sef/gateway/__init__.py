"""``sef gateway``: the home-side broker, relayed to the control server's broker.

A gateway is a Mosquitto broker for the home's proximal network (its agents connect to
it, finding it over mDNS) with **one** uplink connection to the control server's broker,
made by the gateway's own store-and-forward relay (:class:`UplinkRelay`, two paho-mqtt
clients). The relay forwards only the DER-interface topics (see :data:`UPLINK_OUT` and
:data:`UPLINK_IN`, explained in ``docs/gateway.md``), so the control server sees each
home as one MQTT client and reaches every home with one group publish, and a home never
sees another home's traffic.

The relay keeps a persistent session and reconnects by itself (backoff ``restart_s``)
after the uplink was cut. What the home publishes meanwhile waits in the relay's bounded
queue (``queue_limit`` messages; past it new messages are dropped and counted) and is
forwarded once, in order, with its retain flag, when the uplink is back; retained state
is never re-sent because of a reconnect. While the uplink is down the control broker
publishes the relay's will, retained ``0`` on ``{root}/gateways/{home}/status`` (``1``
when it is back); the gateway keeps the retained list of its agents on
``{root}/gateways/{home}/agents`` so that an EMS can mark them unreachable meanwhile, and
the relay's counters on ``{root}/gateways/{home}/stats``.

**Secure mode** (a gateway given :class:`~sef.security.Security`, the default of
``sef gateway``): the relay connects to the control broker over TLS with the gateway's
certificate (the control broker's certificate and host name checked against the
deployment CA), so the control broker's ACL knows it as the gateway of its home and lets
it publish only for that home's agents. The home-side listener is TLS too, with the
gateway's certificate as server certificate; it requires a client certificate from the
same CA (identity = MQTT username and client id), and its ACL (:func:`home_acl`) lets
each client publish only under its own agent topics.
"""

from __future__ import annotations

from sef.gateway._gateway import Gateway, run_gateway
from sef.gateway._relay import DEFAULT_QUEUE_LIMIT, UplinkRelay
from sef.gateway._tls import home_acl, listener_tls_config
from sef.gateway._topics import UPLINK_IN, UPLINK_OUT

__all__ = [
    "DEFAULT_QUEUE_LIMIT",
    "UPLINK_IN",
    "UPLINK_OUT",
    "Gateway",
    "UplinkRelay",
    "home_acl",
    "listener_tls_config",
    "run_gateway",
]

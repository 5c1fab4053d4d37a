"""Zero-configuration discovery of the home broker over mDNS / DNS-SD (python-zeroconf).

A broker or gateway advertises itself with :func:`advertise_broker`; an agent started
without a broker address finds it with :func:`discover_broker` (or hands
:class:`MdnsResolver` to :class:`~sef.bus.BusClient`, which re-runs discovery after every
lost connection, so an agent follows a broker that restarts on another port).

Services (``docs/discovery.md``):

* ``_sef-mqtt._tcp.local.``: SEF brokers and gateways; this is what agents browse.
* ``_mqtt._tcp.local.`` (plain text) or ``_secure-mqtt._tcp.local.`` (TLS): the generic
  MQTT service types, advertised too (same TXT record) so ordinary MQTT tools see the
  broker.

TXT record: ``sef=1`` (bus protocol version), ``role=broker|gateway``, ``mqtt=3.1.1|5``
(the MQTT version agents should speak), ``tls=1|0`` (whether the port speaks MQTT over
TLS), ``root=sef`` (topic root) and any extra properties (a gateway adds ``home=<id>``).

**Secure discovery.** mDNS itself is unauthenticated: anyone on the link can advertise.
A component with credentials therefore gives the resolver its TLS context
(:func:`verified_broker_tls`): a broker that advertises plain text is skipped, and one
that advertises TLS is accepted only after a TLS handshake in which it proves a
certificate of the deployment CA (not revoked) with the role ``broker``, or ``gateway``
for the agent's own home; anything else is skipped with a log line saying why. The same
check runs again in the handshake of every connection the client then makes.

Broker addresses in the form ``mdns://`` (any SEF broker) or ``mdns://NAME`` (the service
instance named NAME, e.g. a gateway's home id) select discovery wherever a broker URL is
accepted: importing this module registers the ``mdns`` scheme with
:meth:`sef.bus.BusClient.register_scheme` (the bus, a lower layer, does not import this
one).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from sef.bus import BrokerURL, BusClient, BusError
from sef.discovery._tls import verified_broker_tls, verified_candidate

__all__ = [
    "MQTT_SERVICE",
    "SECURE_MQTT_SERVICE",
    "SEF_SERVICE",
    "BrokerAdvertisement",
    "DiscoveredBroker",
    "MdnsResolver",
    "advertise_broker",
    "browse_broker",
    "discover_broker",
    "is_mdns_url",
    "verified_broker_tls",
]

log = logging.getLogger("sef.discovery")

SEF_SERVICE = "_sef-mqtt._tcp.local."
"""DNS-SD service type of SEF brokers and gateways (what agents browse)."""
MQTT_SERVICE = "_mqtt._tcp.local."
"""The generic MQTT service type, advertised as well for ordinary MQTT tools."""
SECURE_MQTT_SERVICE = "_secure-mqtt._tcp.local."
"""The generic MQTT-over-TLS service type (IANA ``secure-mqtt``), for a TLS listener."""

Interfaces = Sequence[str] | InterfaceChoice


def is_mdns_url(url: str) -> bool:
    """True for ``mdns``, ``mdns:`` and ``mdns://[NAME][?timeout=S]``."""
    return url.strip().lower() in ("mdns", "mdns:") or url.strip().lower().startswith("mdns://")


def _versions(text: str) -> int:
    return 5 if text.strip() in ("5", "5.0") else 4


@dataclass(frozen=True)
class DiscoveredBroker:
    """A broker found on the network."""

    name: str
    """Service instance name, e.g. ``home-17`` (without the service type)."""
    url: BrokerURL
    addresses: tuple[str, ...]
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def role(self) -> str:
        """``broker`` or ``gateway`` (from the TXT record)."""
        return self.properties.get("role", "broker")

    @property
    def tls(self) -> bool:
        """Whether it advertises MQTT over TLS (TXT ``tls=1``)."""
        return self.url.tls

    def at(self, address: str) -> DiscoveredBroker:
        """The same broker, reached at ``address`` (one of :attr:`addresses`)."""
        url = BrokerURL(address, self.url.port, self.url.version, tls=self.url.tls)
        return DiscoveredBroker(self.name, url, self.addresses, self.properties)


class BrokerAdvertisement:
    """A running advertisement; :meth:`close` withdraws it (mDNS goodbye packets)."""

    def __init__(self, zc: AsyncZeroconf, infos: list[AsyncServiceInfo]) -> None:
        self._zc = zc
        self.infos = infos
        self._closed = False

    @property
    def name(self) -> str:
        """The instance name actually registered (zeroconf renames on a conflict)."""
        return _instance(self.infos[0].name, self.infos[0].type)

    async def close(self) -> None:
        """Unregister the services and close the mDNS responder (idempotent)."""
        if self._closed:
            return
        self._closed = True
        await self._zc.async_close()  # unregisters every service: sends goodbye packets

    async def __aenter__(self) -> BrokerAdvertisement:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _instance(full_name: str, service_type: str) -> str:
    suffix = "." + service_type
    return full_name[: -len(suffix)] if full_name.endswith(suffix) else full_name


def _advertised_addresses(host: str) -> list[str]:
    """IPv4 addresses to put in the A records for a listener bound to ``host``."""
    if host in ("", "0.0.0.0", "::"):
        from zeroconf._utils.net import get_all_addresses

        found = [a for a in get_all_addresses() if not a.startswith("169.254.")]
        found.sort(key=lambda a: ipaddress.ip_address(a).is_loopback)  # loopback last
        return found or ["127.0.0.1"]
    try:
        ipaddress.IPv4Address(host)
        return [host]
    except ValueError:
        return [socket.gethostbyname(host)]


def _host_label(text: str) -> str:
    label = re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-")[:40]
    return label or "sef"


async def advertise_broker(
    host: str,
    port: int,
    name: str,
    properties: Mapping[str, str] | None = None,
    *,
    mqtt_version: str = "3.1.1",
    role: str = "broker",
    root: str = "sef",
    generic: bool = True,
    interfaces: Interfaces = InterfaceChoice.All,
    tls: bool = False,
) -> BrokerAdvertisement:
    """Advertise an MQTT broker listening on ``host:port`` as service instance ``name``.

    Args:
        host: the listener's address (``0.0.0.0`` advertises every IPv4 address of this
            machine, loopback last).
        port: the listener's TCP port.
        name: instance name (unique on the link; zeroconf renames on a conflict, see
            :attr:`BrokerAdvertisement.name`).
        properties: extra TXT properties (e.g. ``{"home": "home-17"}``).
        mqtt_version: ``3.1.1`` or ``5``: the protocol the listener speaks.
        role: ``broker`` or ``gateway``.
        root: the SEF topic root used on this broker.
        generic: also advertise under ``_mqtt._tcp`` (``_secure-mqtt._tcp`` with TLS).
        interfaces: network interfaces to answer on (default: all).
        tls: the listener speaks MQTT over TLS (TXT ``tls=1``).

    Returns once the names were probed and announced (about 1.2 s).
    """
    txt = {
        "sef": "1",
        "role": role,
        "mqtt": mqtt_version,
        "tls": "1" if tls else "0",
        "root": root,
        **(properties or {}),
    }
    addresses = _advertised_addresses(host)
    server = f"sef-{_host_label(socket.gethostname())}-{_host_label(name)}-{port}.local."
    zc = AsyncZeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
    infos: list[AsyncServiceInfo] = []
    try:
        generic_type = SECURE_MQTT_SERVICE if tls else MQTT_SERVICE
        for service_type in (SEF_SERVICE, generic_type) if generic else (SEF_SERVICE,):
            info = AsyncServiceInfo(
                service_type,
                f"{name}.{service_type}",
                port=port,
                properties=txt,
                server=server,
                parsed_addresses=addresses,
            )
            await (await zc.async_register_service(info, allow_name_change=True))
            infos.append(info)
    except BaseException:
        await zc.async_close()
        raise
    advert = BrokerAdvertisement(zc, infos)
    log.info("advertising %s (%s) on %s port %d", advert.name, role, ", ".join(addresses), port)
    return advert


async def _reachable(address: str, port: int, timeout_s: float) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout_s)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def browse_broker(
    timeout_s: float = 5.0,
    *,
    name: str | None = None,
    interfaces: Interfaces = InterfaceChoice.All,
    tls: ssl.SSLContext | None = None,
) -> DiscoveredBroker:
    """Find a SEF broker on the local network (the first that answers).

    Args:
        timeout_s: longest time to search, s.
        name: accept only the instance with this name (e.g. a gateway's home id).
        interfaces: network interfaces to search on (default: all).
        tls: accept only a broker that advertises TLS and completes a handshake with this
            context (:func:`verified_broker_tls`); others are skipped with a log line.

    Raises:
        BusError: nothing found within ``timeout_s``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    names: asyncio.Queue[str] = asyncio.Queue()

    def on_change(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change in (ServiceStateChange.Added, ServiceStateChange.Updated):
            names.put_nowait(name)

    zc = AsyncZeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
    browser = AsyncServiceBrowser(zc.zeroconf, SEF_SERVICE, handlers=[on_change])
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                full_name = await asyncio.wait_for(names.get(), remaining)
            except TimeoutError:
                break
            instance = _instance(full_name, SEF_SERVICE)
            if name is not None and instance != name:
                continue
            info = AsyncServiceInfo(SEF_SERVICE, full_name)
            wait_ms = max(100, int(1000 * min(3.0, deadline - loop.time())))
            if not await info.async_request(zc.zeroconf, wait_ms) or info.port is None:
                continue
            found = _to_broker(instance, info)
            if found is None:
                continue
            if tls is not None:
                verified = await verified_candidate(found, tls)
                if verified is not None:
                    return verified
                continue
            if len(found.addresses) > 1:  # several interfaces: take the first that answers
                for address in found.addresses:
                    if await _reachable(address, info.port, 0.5):
                        found = found.at(address)
                        break
            return found
    finally:
        await browser.async_cancel()
        await zc.async_close()
    which = f"named {name!r}" if name is not None else "any"
    raise BusError(f"no SEF broker ({which}) found over mDNS ({SEF_SERVICE}) within {timeout_s} s")


def _to_broker(instance: str, info: AsyncServiceInfo) -> DiscoveredBroker | None:
    properties = {k: (v or "") for k, v in info.decoded_properties.items()}
    addresses = tuple(info.parsed_addresses(IPVersion.V4Only))
    if not addresses or info.port is None:
        return None
    url = BrokerURL(
        addresses[0],
        info.port,
        _versions(properties.get("mqtt", "3.1.1")),
        tls=properties.get("tls") == "1",
    )
    return DiscoveredBroker(instance, url, addresses, properties)


async def discover_broker(
    timeout_s: float = 5.0, *, name: str | None = None, interfaces: Interfaces = InterfaceChoice.All
) -> BrokerURL:
    """The URL of a SEF broker found over mDNS (see :func:`browse_broker`)."""
    return (await browse_broker(timeout_s, name=name, interfaces=interfaces)).url


class MdnsResolver:
    """A broker resolver for :class:`~sef.bus.BusClient`: discovers the broker over mDNS.

    The client calls it before its first connection and again after each lost
    connection or failed attempt, so it follows a broker that comes back elsewhere.

    Args:
        name: accept only this service instance (``None``: any SEF broker).
        timeout_s: longest search per call, s.
        interfaces: network interfaces to search on.
        tls: accept only brokers that prove our CA's identity with this context (see
            :func:`browse_broker`); set it (or the attribute) for a secure component.
    """

    def __init__(
        self,
        name: str | None = None,
        timeout_s: float = 3.0,
        interfaces: Interfaces = InterfaceChoice.All,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self.timeout_s = timeout_s
        self.interfaces = interfaces
        self.tls = tls
        self.last: DiscoveredBroker | None = None
        self.last_duration_s: float | None = None

    @classmethod
    def parse(cls, url: str) -> MdnsResolver:
        """``mdns``, ``mdns://`` or ``mdns://NAME[?timeout=S]``."""
        text = url.strip()
        if text.lower() in ("mdns", "mdns:"):
            return cls()
        if not is_mdns_url(text):
            raise BusError(f"not an mdns:// broker address: {url!r}")
        parts = urlsplit(text)
        query = parse_qs(parts.query)
        try:
            timeout_s = float(query.get("timeout", ["3"])[-1])
        except ValueError:
            raise BusError(f"bad timeout in {url!r}") from None
        name = unquote(parts.netloc + parts.path).strip("/") or None
        return cls(name, timeout_s)

    async def __call__(self) -> BrokerURL:
        """Find the broker over mDNS and return its URL (the bus's resolver hook)."""
        start = time.monotonic()
        self.last = await browse_broker(
            self.timeout_s, name=self.name, interfaces=self.interfaces, tls=self.tls
        )
        self.last_duration_s = time.monotonic() - start
        log.info(
            "found broker %s at %s over mDNS in %.3f s",
            self.last.name,
            self.last.url,
            self.last_duration_s,
        )
        return self.last.url

    def __str__(self) -> str:
        return f"mdns://{self.name or ''}"


BusClient.register_scheme("mdns", MdnsResolver.parse)

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

**Pinning.** With several homes in range an agent pins itself to one home
(:class:`MdnsResolver` ``home`` and ``pin``; the file in :mod:`sef.discovery._pin`): once
pinned it accepts only a gateway whose TXT ``home`` is that home and skips every other
service with a log line, so it waits for its own gateway instead of moving next door.

Broker addresses in the form ``mdns://`` (any SEF broker) or ``mdns://NAME`` (the service
instance named NAME, e.g. a gateway's home id) select discovery wherever a broker URL is
accepted: importing this module registers the ``mdns`` scheme with
:meth:`sef.bus.BusClient.register_scheme` (the bus, a lower layer, does not import this
one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from sef.bus import BrokerURL, BusClient, BusError
from sef.discovery._advertise import (
    MQTT_SERVICE,
    SECURE_MQTT_SERVICE,
    SEF_SERVICE,
    BrokerAdvertisement,
    Interfaces,
    advertise_broker,
    instance_name,
)
from sef.discovery._pin import HomePin, PinError, PinFile, default_state_dir, load_pin, valid_home
from sef.discovery._tls import verified_broker_tls, verified_candidate

__all__ = [
    "MQTT_SERVICE",
    "SECURE_MQTT_SERVICE",
    "SEF_SERVICE",
    "BrokerAdvertisement",
    "DiscoveredBroker",
    "HomePin",
    "MdnsResolver",
    "PinError",
    "PinFile",
    "advertise_broker",
    "browse_broker",
    "default_state_dir",
    "discover_broker",
    "is_mdns_url",
    "load_pin",
    "verified_broker_tls",
]

log = logging.getLogger("sef.discovery")


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
    def home(self) -> str | None:
        """The home it serves (TXT ``home``; a gateway's), or ``None``."""
        return self.properties.get("home") or None

    @property
    def tls(self) -> bool:
        """Whether it advertises MQTT over TLS (TXT ``tls=1``)."""
        return self.url.tls

    def at(self, address: str) -> DiscoveredBroker:
        """The same broker, reached at ``address`` (one of :attr:`addresses`)."""
        url = BrokerURL(address, self.url.port, self.url.version, tls=self.url.tls)
        return DiscoveredBroker(self.name, url, self.addresses, self.properties)


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
    home: str | None = None,
) -> DiscoveredBroker:
    """Find a SEF broker on the local network (the first that answers).

    Args:
        timeout_s: longest time to search, s.
        name: accept only the instance with this name (e.g. a gateway's home id).
        interfaces: network interfaces to search on (default: all).
        tls: accept only a broker that advertises TLS and completes a handshake with this
            context (:func:`verified_broker_tls`); others are skipped with a log line.
        home: accept only a service whose TXT ``home`` is this home (a pinned agent);
            others are skipped with a log line.

    Raises:
        BusError: nothing found within ``timeout_s``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    names: asyncio.Queue[str] = asyncio.Queue()
    skipped: set[str] = set()

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
            instance = instance_name(full_name, SEF_SERVICE)
            if name is not None and instance != name:
                continue
            info = AsyncServiceInfo(SEF_SERVICE, full_name)
            wait_ms = max(100, int(1000 * min(3.0, deadline - loop.time())))
            if not await info.async_request(zc.zeroconf, wait_ms) or info.port is None:
                continue
            found = _to_broker(instance, info)
            if found is None:
                continue
            if home is not None and found.home != home:
                if instance not in skipped:  # once per search, not at every TXT update
                    skipped.add(instance)
                    log.warning(
                        "skipping %s %r: this agent is pinned to home %r (%s)",
                        found.role,
                        instance,
                        home,
                        f"it serves home {found.home!r}" if found.home else "it advertises no home",
                    )
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
    if home is not None:
        which += f", of home {home!r}"
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
        home: the home this agent is pinned to: accept only a gateway of that home.
        pin: where to keep the pin (:class:`PinFile`): while ``home`` is ``None`` the
            home of the first gateway found becomes :attr:`home` and is written there.
    """

    def __init__(
        self,
        name: str | None = None,
        timeout_s: float = 3.0,
        interfaces: Interfaces = InterfaceChoice.All,
        tls: ssl.SSLContext | None = None,
        home: str | None = None,
        pin: PinFile | None = None,
    ) -> None:
        self.name = name
        self.timeout_s = timeout_s
        self.interfaces = interfaces
        self.tls = tls
        self.home = home
        self.pin = pin
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
        self.last = found = await browse_broker(
            self.timeout_s, name=self.name, interfaces=self.interfaces, tls=self.tls, home=self.home
        )
        self.last_duration_s = time.monotonic() - start
        log.info(
            "found broker %s at %s over mDNS in %.3f s", found.name, found.url, self.last_duration_s
        )
        if self.home is None and self.pin is not None and found.role == "gateway":
            self._pin_to(found)
        return found.url

    def _pin_to(self, found: DiscoveredBroker) -> None:
        """Pin to the home of ``found``, the first gateway joined, and keep it."""
        assert self.pin is not None
        if found.home is None or not valid_home(found.home):
            log.warning("gateway %r advertises no usable home: not pinned", found.name)
            return
        self.home = found.home
        try:
            self.pin.write(found.home)
        except OSError as exc:
            log.error("cannot keep the home pin in %s: %s", self.pin.path, exc)
        log.info(
            "pinned to home %r (gateway %r, the first joined); kept in %s",
            found.home,
            found.name,
            self.pin.path,
        )

    def use_pin(self, pin: HomePin) -> None:
        """Apply an agent's pin from :func:`load_pin` (its home, and its file)."""
        self.home, self.pin = pin.home, pin.file

    def __str__(self) -> str:
        return f"mdns://{self.name or ''}"


BusClient.register_scheme("mdns", MdnsResolver.parse)

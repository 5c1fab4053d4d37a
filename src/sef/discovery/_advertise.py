"""Advertising a broker or gateway over mDNS / DNS-SD (see :mod:`sef.discovery`)."""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from collections.abc import Mapping, Sequence

from zeroconf import InterfaceChoice, IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

__all__ = [
    "MQTT_SERVICE",
    "SECURE_MQTT_SERVICE",
    "SEF_SERVICE",
    "BrokerAdvertisement",
    "Interfaces",
    "advertise_broker",
    "instance_name",
]

log = logging.getLogger("sef.discovery")

SEF_SERVICE = "_sef-mqtt._tcp.local."
"""DNS-SD service type of SEF brokers and gateways (what agents browse)."""
MQTT_SERVICE = "_mqtt._tcp.local."
"""The generic MQTT service type, advertised as well for ordinary MQTT tools."""
SECURE_MQTT_SERVICE = "_secure-mqtt._tcp.local."
"""The generic MQTT-over-TLS service type (IANA ``secure-mqtt``), for a TLS listener."""

Interfaces = Sequence[str] | InterfaceChoice


class BrokerAdvertisement:
    """A running advertisement; :meth:`close` withdraws it (mDNS goodbye packets)."""

    def __init__(self, zc: AsyncZeroconf, infos: list[AsyncServiceInfo]) -> None:
        self._zc = zc
        self.infos = infos
        self._closed = False

    @property
    def name(self) -> str:
        """The instance name actually registered (zeroconf renames on a conflict)."""
        return instance_name(self.infos[0].name, self.infos[0].type)

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


def instance_name(full_name: str, service_type: str) -> str:
    """``full_name`` without its service type (``home-1._sef-mqtt._tcp.local.`` → ``home-1``)."""
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

"""Broker URL lists: a client given several brokers (e.g. the nodes of a clustered
broker) connects to one and moves on to the next when the connection fails or is lost.

:func:`parse_url_list` reads ``["mqtt://n0:1883", "mqtt://n1:1883", ...]`` or one string
separated by commas (or spaces), as a CLI option or an environment variable gives it.
:class:`UrlListResolver` is a :data:`sef.bus.BrokerResolver` over such a list:
:class:`sef.bus.BusClient` awaits it before every connection attempt, so each attempt
after a failure or a lost connection goes to the next node, round robin, starting at
:func:`start_index` of the client id (a fleet spreads evenly over the nodes).

Every entry must use the same scheme (all ``mqtt://`` or all ``mqtts://``): the client's
TLS context and credentials apply to every node. A comma inside a user name or password
is written ``%2C``.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeGuard

from sef.bus._message import BusError

if TYPE_CHECKING:
    from sef.bus._client import BrokerURL

__all__ = ["UrlListResolver", "is_url_list", "parse_url_list", "start_index", "url_list_resolver"]

log = logging.getLogger("sef.bus")


def is_url_list(url: object) -> TypeGuard[str | list[str] | tuple[str, ...]]:
    """Whether ``url`` names several brokers: a string with a comma, or a sequence of
    strings (not a single string)."""
    if isinstance(url, str):
        return "," in url
    return isinstance(url, list | tuple)


def parse_url_list(urls: str | Sequence[str]) -> list[BrokerURL]:
    """The broker URLs of ``urls`` (a sequence, or one string separated by commas or
    spaces), parsed.

    Raises:
        BusError: naming the bad entry: an empty list, an entry that is not a broker URL
            (``mdns://`` cannot be in a list), the same broker twice, or a mix of
            ``mqtt://`` and ``mqtts://`` (one TLS setting applies to every node).
    """
    from sef.bus._client import BrokerURL  # _client imports this module

    if isinstance(urls, str):
        items = urls.replace(",", " ").split()
    else:
        items = [str(item).strip() for item in urls]
    if not items:
        raise BusError(f"empty broker URL list {urls!r}: give mqtt[s]://HOST:PORT,...")
    parsed: list[BrokerURL] = []
    for item in items:
        if not item:
            raise BusError(f"empty entry in the broker URL list {urls!r}")
        scheme = item.split("://", 1)[0].lower() if "://" in item else "mqtt"
        if scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise BusError(
                f"broker URL list entry {item!r}: a list holds mqtt:// or mqtts:// URLs only"
            )
        try:
            url = BrokerURL.parse(item)
        except BusError as exc:
            raise BusError(f"broker URL list entry {item!r}: {exc}") from None
        if any((url.host, url.port) == (p.host, p.port) for p in parsed):
            raise BusError(f"broker URL list names {url.host}:{url.port} twice")
        parsed.append(url)
    if len({url.tls for url in parsed}) > 1:
        raise BusError(
            "broker URL list mixes mqtt:// and mqtts:// "
            f"({', '.join(str(url) for url in parsed)}): one TLS setting applies to every "
            "node, use the same scheme for all"
        )
    return parsed


def start_index(client_id: str, count: int) -> int:
    """A stable node index in ``[0, count)`` for ``client_id`` (CRC-32), to spread many
    clients evenly over the nodes."""
    return zlib.crc32(client_id.encode()) % count if count > 0 else 0


class UrlListResolver:
    """A :data:`sef.bus.BrokerResolver` answering the nodes of a list in turn.

    Args:
        urls: the list (see :func:`parse_url_list`).
        start: index of the first node to try (e.g. :func:`start_index` of the client id).
    """

    def __init__(self, urls: str | Sequence[str], start: int = 0) -> None:
        self.nodes = parse_url_list(urls)
        self.position = start % len(self.nodes)
        """Index of the node the next call answers."""
        self.current: BrokerURL | None = None
        """The node of the last answer (``None`` before the first)."""

    @property
    def next_node(self) -> BrokerURL:
        """The node the next call answers."""
        return self.nodes[self.position]

    async def __call__(self) -> BrokerURL:
        url = self.nodes[self.position]
        self.position = (self.position + 1) % len(self.nodes)
        self.current = url
        return url

    def __repr__(self) -> str:
        return ",".join(str(node) for node in self.nodes)


def url_list_resolver(urls: str | Sequence[str], start: int = 0) -> UrlListResolver:
    """A resolver that answers the nodes of ``urls`` in turn, from index ``start``."""
    return UrlListResolver(urls, start)

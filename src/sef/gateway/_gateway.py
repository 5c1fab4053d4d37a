"""The :class:`Gateway` (home Mosquitto + uplink relay + mDNS advertisement + agent list)
and :func:`run_gateway`, the body of ``sef gateway``."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from sef.broker import Mosquitto, free_port
from sef.bus import (
    BrokerURL,
    GatewayAgents,
    PayloadError,
    Status,
    TopicKind,
    Topics,
    check_id,
    decode_object,
)
from sef.gateway._relay import DEFAULT_QUEUE_LIMIT, UplinkRelay
from sef.gateway._tls import home_acl, listener_tls_config, mosquitto_account_owns, write_tls_files
from sef.security import Role, Security, SecurityError

__all__ = ["Gateway", "run_gateway"]

log = logging.getLogger("sef.gateway")


@dataclass
class Gateway:
    """A home gateway: local Mosquitto + uplink relay + mDNS advertisement + agent list.

    Args:
        uplink: the control server's broker.
        home_id: id of this home (uplink client id, mDNS instance name, topics).
        listen_host: address of the local listener.
        listen_port: its port (0 = a free one).
        advertise: advertise the local listener over mDNS (``_sef-mqtt._tcp``).
        root: the SEF topic root.
        keepalive_s: MQTT keepalive of the uplink, s.
        restart_s: (base, cap) of the uplink's reconnection backoff, s.
        workdir: directory for the broker's configuration (and its log unless
            ``log_dir``; default: a temporary one).
        security: the gateway's credentials (role ``gateway``, its certificate naming
            ``home_id`` as its home): TLS uplink and TLS home listener
            (``docs/gateway.md``). ``None``: plain text (``--insecure``).
        queue_limit: messages the relay keeps for a cut uplink (see
            :class:`~sef.gateway.UplinkRelay`).
        log_dir: directory of the gateway Mosquitto's log (``mosquitto.log``); ``None``:
            its work directory.
    """

    uplink: BrokerURL
    home_id: str
    listen_host: str = "127.0.0.1"
    listen_port: int = 0
    advertise: bool = True
    root: str = "sef"
    keepalive_s: int = 10
    restart_s: tuple[int, int] = (1, 5)
    workdir: Path | None = None
    security: Security | None = None
    queue_limit: int = DEFAULT_QUEUE_LIMIT
    log_dir: Path | None = None
    broker: Mosquitto | None = field(default=None, init=False)
    relay: UplinkRelay | None = field(default=None, init=False)
    """The uplink relay (its counters: ``forwarded``, ``queued``, ``dropped`` …)."""
    agents: dict[str, bool] = field(default_factory=dict, init=False)
    """Agents seen on the local broker, id → online."""
    _advert: object | None = field(default=None, init=False)
    _tmp: Path | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        """URL of the local listener, for the home's agents."""
        host = "127.0.0.1" if self.listen_host in ("", "0.0.0.0") else self.listen_host
        scheme = "mqtts" if self.security is not None else "mqtt"
        return f"{scheme}://{host}:{self.listen_port}"

    def check_security(self) -> None:
        """Refuse (:class:`SecurityError`) credentials that cannot run this gateway: not
        of role ``gateway``, not for this home, or a plain-text uplink."""
        if self.security is None:
            return
        me = self.security.identity
        if me.role is not Role.GATEWAY:
            raise SecurityError(f"{me.id!r} has role {me.role.value}, not gateway")
        if me.home != self.home_id:
            raise SecurityError(
                f"the certificate of gateway {me.id!r} is for home {me.home!r}, "
                f"not {self.home_id!r}"
            )
        if not self.uplink.tls:
            raise SecurityError(f"uplink {self.uplink} is plain text: use mqtts://")

    def _config(self, workdir: Path | None) -> tuple[str, Path | None]:
        """The extra Mosquitto configuration (and the work dir it needs, if secure)."""
        if self.security is None:
            return "", workdir
        if workdir is None:
            workdir = self._tmp = Path(tempfile.mkdtemp(prefix="sef-gateway-"))
        tls = write_tls_files(self.security, workdir)
        acl = workdir / "home.acl"
        acl.write_text(home_acl(tls.identity, self.home_id, self.root))
        return listener_tls_config(tls, acl) + mosquitto_account_owns(workdir), workdir

    @property
    def advertised_name(self) -> str | None:
        """The mDNS instance name (normally the home id), if advertised."""
        return getattr(self._advert, "name", None)

    async def start(self) -> Gateway:
        """Start the broker, then the uplink relay, then the mDNS advertisement."""
        check_id("home", self.home_id)
        self.check_security()
        if not self.listen_port:
            self.listen_port = free_port(self.listen_host or "0.0.0.0")
        extra, workdir = self._config(self.workdir)
        broker = Mosquitto(
            port=self.listen_port,
            host=self.listen_host or "0.0.0.0",
            workdir=workdir,
            extra_config=extra,
            log_dir=self.log_dir,
        )
        try:
            await asyncio.to_thread(broker.start)
        except BaseException:
            self._remove_tmp()
            raise
        self.broker = broker
        try:
            self.relay = UplinkRelay(
                self.uplink,
                self.home_id,
                local_host=self.listen_host,
                local_port=self.listen_port,
                root=self.root,
                keepalive_s=self.keepalive_s,
                restart_s=self.restart_s,
                queue_limit=self.queue_limit,
                security=self.security,
                on_local_message=self._on_local_message,
            )
            await asyncio.to_thread(self.relay.start)
            self._publish_agents()
            if self.advertise:
                from sef.discovery import advertise_broker

                self._advert = await advertise_broker(
                    self.listen_host,
                    self.listen_port,
                    self.home_id,
                    {"home": self.home_id, "uplink": f"{self.uplink.host}:{self.uplink.port}"},
                    role="gateway",
                    root=self.root,
                    tls=self.security is not None,
                )
        except BaseException:
            await self.stop()
            raise
        log.info("gateway %s on %s, uplink %s", self.home_id, self.url, self.uplink)
        return self

    async def stop(self) -> None:
        """Withdraw the advertisement, stop the relay (the home goes offline upstream)
        and the broker."""
        advert, self._advert = self._advert, None
        if advert is not None:
            await advert.close()  # type: ignore[attr-defined]
        relay = self.relay
        if relay is not None:
            await asyncio.to_thread(relay.stop)
        broker, self.broker = self.broker, None
        if broker is not None:
            await asyncio.to_thread(broker.stop)
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    async def __aenter__(self) -> Gateway:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- the retained list of this home's agents, for the EMS ------------------------
    def _on_local_message(self, topic: str, payload: bytes) -> None:
        """An agent status from the home broker (called in the relay's local thread): a
        new agent id changes the list, sent up in order after that status."""
        parsed = Topics(self.root).parse(topic)
        if parsed is None or parsed.kind is not TopicKind.STATUS or not payload:
            return
        try:
            online = Status.from_object(decode_object(payload)).online
        except PayloadError:
            return
        known = parsed.owner in self.agents
        self.agents[parsed.owner] = online
        if not known:
            self._publish_agents()

    def _publish_agents(self) -> None:
        """Queue the retained agent list for the control broker (through the relay)."""
        if self.relay is None:
            return
        payload = GatewayAgents(self.home_id, sorted(self.agents)).to_payload()
        self.relay.forward(Topics(self.root).gateway_agents(self.home_id), payload, retain=True)


async def run_gateway(
    uplink: BrokerURL | str,
    home_id: str,
    *,
    listen_host: str = "127.0.0.1",
    listen_port: int = 1883,
    advertise: bool = True,
    root: str = "sef",
    until: Callable[[], Awaitable[None]] | None = None,
    security: Security | None = None,
    keepalive_s: int = 10,
    restart_s: tuple[int, int] = (1, 5),
    queue_limit: int = DEFAULT_QUEUE_LIMIT,
    log_dir: Path | None = None,
) -> None:
    """Run a gateway until cancelled or ``until()`` returns (the body of ``sef gateway``).

    Prints one line: the local URL, the uplink, the advertised name and the broker's log.
    On the way out the gateway sends its home offline upstream and stops its Mosquitto
    child (and waits for it)."""
    url = uplink if isinstance(uplink, BrokerURL) else BrokerURL.parse(uplink)
    gateway = Gateway(
        url,
        home_id,
        listen_host,
        listen_port,
        advertise,
        root,
        keepalive_s=keepalive_s,
        restart_s=restart_s,
        security=security,
        queue_limit=queue_limit,
        log_dir=log_dir,
    )
    await gateway.start()
    try:
        assert gateway.broker is not None
        print(
            f"gateway {home_id} listening on {gateway.url}, uplink {url}"
            + (f", advertised as {gateway.advertised_name!r}" if advertise else "")
            + f", broker log {gateway.broker.log_path}",
            flush=True,
        )
        await (until() if until is not None else asyncio.Event().wait())
    finally:
        await asyncio.shield(gateway.stop())

"""``sef gateway``: the home-side broker, bridged to the control server's broker.

A gateway is a Mosquitto broker for the home's proximal network (its agents connect to
it, finding it over mDNS) with **one** bridge connection up to the control server's
broker. The bridge forwards only the DER-interface topics (see :data:`UPLINK_OUT` and
:data:`UPLINK_IN`, explained in ``docs/gateway.md``), so the control server sees each
home as one MQTT client and reaches every home with one group publish, and a home never
sees another home's traffic.

The bridge keeps a persistent session (``cleansession false``) and restarts by itself
(``restart_timeout``) after the uplink was cut; Mosquitto then re-sends the home's
retained messages (agent status, About, properties) upward, so the agents reappear
online at the EMS without restarting anything. While the uplink is down the control
broker publishes the bridge's will on ``{root}/gateways/{home}/status`` (payload ``0``;
``1`` when it is back), and the gateway keeps the retained list of its agents on
``{root}/gateways/{home}/agents`` so that an EMS can mark them unreachable meanwhile.

**Secure mode** (a gateway given :class:`~sef.security.Security`, the default of
``sef gateway``): the bridge connects to the control broker over TLS with the gateway's
certificate (the control broker's certificate and host name checked against the
deployment CA), so the control broker's ACL knows it as the gateway of its home and lets
it publish only for that home's agents. The home-side listener is TLS too, with the
gateway's certificate as server certificate; it requires a client certificate from the
same CA (identity = MQTT username and client id), and its ACL (:func:`home_acl`) lets
each client publish only under its own agent topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from sef.broker import Mosquitto, free_port
from sef.bus import (
    BrokerURL,
    BusClient,
    GatewayAgents,
    Message,
    PayloadError,
    Status,
    Topics,
    check_id,
    decode_object,
)
from sef.gateway._tls import (
    TlsFiles,
    bridge_tls_config,
    home_acl,
    listener_tls_config,
    mosquitto_account_owns,
    write_tls_files,
)
from sef.security import Role, Security, SecurityError
from sef.tasks import TaskSet

__all__ = [
    "UPLINK_IN",
    "UPLINK_OUT",
    "Gateway",
    "bridge_config",
    "bridge_tls_config",
    "home_acl",
    "listener_tls_config",
    "run_gateway",
]

log = logging.getLogger("sef.gateway")

UPLINK_OUT: tuple[str, ...] = (
    "agents/+/status",  # presence: births, clean deaths and wills (retained)
    "agents/+/about",  # About announcements: discovery at the EMS (retained)
    "agents/+/interfaces/+",  # interface XML the About refers to (retained)
    "agents/+/props/#",  # properties: last known state, telemetry (retained)
    "agents/+/signals/#",  # signals (events) of the DER interface
    "agents/+/seal",  # signed-telemetry seals (docs/protocol.md §11)
    "clients/+/reply",  # replies to calls from the control side
)
"""Topics (under the root) that go up, home → control server: the DER interfaces only."""

UPLINK_IN: tuple[str, ...] = (
    "agents/+/call/#",  # method calls addressed to one agent
    "groups/+/call/#",  # group calls: one publish at the EMS reaches every home
    "hosts/+/status",  # the EMS's presence (agents fall back when it is gone)
)
"""Topics (under the root) that come down, control server → home."""


def bridge_config(
    home_id: str,
    uplink: BrokerURL,
    *,
    root: str = "sef",
    keepalive_s: int = 10,
    restart_s: tuple[int, int] = (1, 5),
    tls: TlsFiles | None = None,
) -> str:
    """The ``mosquitto.conf`` lines of the uplink bridge of home ``home_id``.

    Args:
        home_id: the home's id (the bridge's client id is ``sef-gw-{home_id}``, or the
            gateway's certificate identity in secure mode).
        uplink: the control server's broker.
        root: the SEF topic root.
        keepalive_s: MQTT keepalive of the bridge: a silent uplink is noticed after it.
        restart_s: (base, cap) of the bridge's reconnection backoff, s.
        tls: the gateway's certificate files: the bridge then speaks TLS with them
            (:func:`bridge_tls_config`).
    """
    check_id("home", home_id)
    lines = [
        f"connection sef-uplink-{home_id}",
        f"address {uplink.host}:{uplink.port}",
        f"remote_clientid {tls.identity if tls is not None else f'sef-gw-{home_id}'}",
        "bridge_protocol_version " + ("mqttv50" if uplink.version == 5 else "mqttv311"),
        "try_private true",
        "cleansession false",
        "start_type automatic",
        f"restart_timeout {restart_s[0]} {restart_s[1]}",
        f"keepalive_interval {keepalive_s}",
        "notifications true",
        f"notification_topic {root}/gateways/{home_id}/status",
        "bridge_attempt_unsubscribe false",
    ]
    if uplink.username and not tls:
        lines.append(f"remote_username {uplink.username}")
        if uplink.password:
            lines.append(f"remote_password {uplink.password}")
    if tls is not None:
        lines += bridge_tls_config(tls)
    lines += [f"topic {root}/{pattern} out 1" for pattern in UPLINK_OUT]
    lines.append(f"topic {root}/gateways/{home_id}/agents out 1")
    lines += [f"topic {root}/{pattern} in 1" for pattern in UPLINK_IN]
    return "\n".join(lines) + "\n"


@dataclass
class Gateway:
    """A home gateway: local Mosquitto + uplink bridge + mDNS advertisement + agent list.

    Args:
        uplink: the control server's broker.
        home_id: id of this home (bridge client id, mDNS instance name, topics).
        listen_host: address of the local listener.
        listen_port: its port (0 = a free one).
        advertise: advertise the local listener over mDNS (``_sef-mqtt._tcp``).
        root: the SEF topic root.
        keepalive_s: keepalive of the uplink bridge, s.
        restart_s: (base, cap) of the bridge's reconnection backoff, s.
        workdir: directory for the broker's config and log (default: a temporary one).
        security: the gateway's credentials (role ``gateway``, its certificate naming
            ``home_id`` as its home): TLS bridge and TLS home listener (module docstring).
            ``None``: plain text (``--insecure``).
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
    broker: Mosquitto | None = field(default=None, init=False)
    agents: dict[str, bool] = field(default_factory=dict, init=False)
    """Agents seen on the local broker, id → online."""
    _advert: object | None = field(default=None, init=False)
    _bus: BusClient | None = field(default=None, init=False)
    _tasks: TaskSet = field(default_factory=TaskSet, init=False)
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
        tls: TlsFiles | None = None
        listener = ""
        if self.security is not None:
            if workdir is None:
                workdir = self._tmp = Path(tempfile.mkdtemp(prefix="sef-gateway-"))
            tls = write_tls_files(self.security, workdir)
            acl = workdir / "home.acl"
            acl.write_text(home_acl(tls.identity, self.home_id, self.root))
            listener = listener_tls_config(tls, acl) + mosquitto_account_owns(workdir)
        bridge = bridge_config(
            self.home_id,
            self.uplink,
            root=self.root,
            keepalive_s=self.keepalive_s,
            restart_s=self.restart_s,
            tls=tls,
        )
        return listener + bridge, workdir

    @property
    def advertised_name(self) -> str | None:
        """The mDNS instance name (normally the home id), if advertised."""
        return getattr(self._advert, "name", None)

    async def start(self) -> Gateway:
        """Start the broker and its bridge, the agent list and the mDNS advertisement."""
        check_id("home", self.home_id)
        self.check_security()
        self._tasks.owner = f"gateway {self.home_id}"
        if not self.listen_port:
            self.listen_port = free_port(self.listen_host or "0.0.0.0")
        extra, workdir = self._config(self.workdir)
        broker = Mosquitto(
            port=self.listen_port,
            host=self.listen_host or "0.0.0.0",
            workdir=workdir,
            extra_config=extra,
        )
        try:
            await asyncio.to_thread(broker.start)
        except BaseException:
            self._remove_tmp()
            raise
        self.broker = broker
        try:
            topics = Topics(self.root)
            tls = None
            client_id = f"sef-gw-{self.home_id}-local"
            if self.security is not None:
                from sef.discovery import verified_broker_tls

                # our own listener: its certificate is ours (role gateway, this home)
                tls = verified_broker_tls(
                    self.security, roles=(Role.GATEWAY,), home=self.home_id, check_hostname=False
                )
                client_id = self.security.identity.id
            self._bus = BusClient(
                self.url,
                client_id,
                on_message=self._on_message,
                on_connect=self._publish_agents,
                tls=tls,
            )
            await self._bus.subscribe(f"{topics.root}/agents/+/status")
            await self._bus.start()
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
        log.info("gateway %s on %s, bridged to %s", self.home_id, self.url, self.uplink)
        return self

    async def stop(self) -> None:
        """Withdraw the advertisement, stop the agent list and the broker."""
        await self._tasks.close()
        advert, self._advert = self._advert, None
        if advert is not None:
            await advert.close()  # type: ignore[attr-defined]
        bus, self._bus = self._bus, None
        if bus is not None:
            await bus.stop()
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
    def _on_message(self, message: Message) -> None:
        parsed = Topics(self.root).parse(message.topic)
        if parsed is None or not message.payload:
            return
        try:
            online = Status.from_object(decode_object(message.payload)).online
        except PayloadError:
            return
        if self.agents.get(parsed.owner) != online:
            known = parsed.owner in self.agents
            self.agents[parsed.owner] = online
            if not known:
                self._tasks.spawn(self._publish_agents(), name="publish agent list")

    async def _publish_agents(self) -> None:
        if self._bus is None or not self._bus.connected:
            return
        payload = GatewayAgents(self.home_id, sorted(self.agents)).to_payload()
        with contextlib.suppress(Exception):
            self._bus.publish(Topics(self.root).gateway_agents(self.home_id), payload, retain=True)


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
) -> None:
    """Run a gateway until cancelled or ``until()`` returns (the body of ``sef gateway``).

    On the way out the gateway stops its Mosquitto child (and waits for it)."""
    url = uplink if isinstance(uplink, BrokerURL) else BrokerURL.parse(uplink)
    gateway = Gateway(url, home_id, listen_host, listen_port, advertise, root, security=security)
    await gateway.start()
    try:
        print(
            f"gateway {home_id} listening on {gateway.url}, uplink {url}"
            + (f", advertised as {gateway.advertised_name!r}" if advertise else ""),
            flush=True,
        )
        await (until() if until is not None else asyncio.Event().wait())
    finally:
        await asyncio.shield(gateway.stop())

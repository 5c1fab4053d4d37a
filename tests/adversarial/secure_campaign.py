"""The secure stack of issue 12's campaign: the attacks of the hardening issue (11), rerun
against a deployment that runs secure.

:func:`secure_campaign` starts, in a temporary directory and on a free port:

* a deployment CA (``tests/secure_stack.py``) with every identity of :data:`IDENTITIES`
  issued, and a *foreign* CA that issued certificates with the same names (``ems-1``,
  ``bat-1``);
* a real Mosquitto 2.0 in mutual-TLS mode with the generated per-identity ACL;
* the real EMS ``ems-1`` with a SQLite store and its EMS certificate;
* two real virtual batteries ``bat-1`` and ``bat-2`` (group :data:`GROUP`, home
  :data:`HOME`) with their agent certificates, recording every EnergyMethod they execute,
  running a legitimate open-ended 1 kW group charge, so their telemetry changes (and is
  published and stored) every :data:`PERIOD_S`;
* ``watcher``, an MQTT 5 client with EMS rights (``ems-watch``) subscribed to ``sef/#``:
  what it does not receive never reached anyone;
* ``relay``, an MQTT 5 client with EMS rights (``ems-relay``) standing for a compromised
  broker or gateway: it may put any bytes on any call topic, but holds no key it signs
  with (its envelopes are made with the keys of :attr:`Campaign.creds`).

Attackers are :class:`~secure_stack.Probe` connections with real certificates of other
roles (:meth:`Campaign.attacker`). Every test runs its attack through
:meth:`Campaign.check_service`: a legitimate signed group command issued while the attack
is under way comes back ``ok`` (command log too), the EMS stored every battery's telemetry
with no gap longer than two periods, and the batteries executed only legitimate commands.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secure_stack import Probe, SecureBroker, make_pki, running_secure_broker, security_for
from sef.agents import Outcome, method
from sef.agents.virtual_battery import VirtualBatteryAgent
from sef.bus import Call, decode_envelope, encode_envelope
from sef.ems import EMS
from sef.ems.store import Store
from sef.interface import AGENT_INTERFACE, DEMO_INTERFACE
from sef.security import CertificateAuthority, Role, Security, call_audience, sign_call
from support import wait_for

EMS_ID = "ems-1"
GROUP = "feeder-s"
HOME = "h1"
AGENTS = ("bat-1", "bat-2")
PERIOD_S = 0.5
"""The batteries' model step and telemetry period while they charge, real s."""
TELEMETRY = f"{DEMO_INTERFACE}.Telemetry"
ENERGY = f"{DEMO_INTERFACE}/EnergyMethod"
RUNNING = [("charge", 1, 0)]
"""What the batteries run throughout: the legitimate open-ended 1 kW charge."""
HEADLINE = [["charge", 8, 0]]
"""The forged command of issue 12's headline: a group charge at 8 kW."""
MIN_WINDOW_S = 4 * PERIOD_S
"""Shortest stretch of time over which :meth:`Campaign.check_service` checks telemetry, s."""

IDENTITIES: list[tuple[str, Role, tuple[str, ...], str | None]] = [
    (EMS_ID, Role.EMS, (), None),
    ("ems-watch", Role.EMS, (), None),  # the subscriber with EMS rights
    ("ems-relay", Role.EMS, (), None),  # a compromised broker / gateway
    ("ems-spare", Role.EMS, (), None),  # another EMS identity (impostor; revoked later)
    ("bat-1", Role.AGENT, (GROUP,), HOME),
    ("bat-2", Role.AGENT, (GROUP,), HOME),
    ("bat-x", Role.AGENT, (GROUP,), HOME),  # a rogue agent: valid key, same group and home
    ("bat-off", Role.AGENT, (GROUP,), HOME),  # a real agent that is not running
    ("op-1", Role.OPERATOR, (), None),
    ("gw-h1", Role.GATEWAY, (), HOME),  # the batteries' own home gateway
    ("gw-h2", Role.GATEWAY, (), "h2"),  # the gateway of another home
]

FOREIGN = (EMS_ID, "bat-1")
"""Names the foreign CA issued certificates for (its ``ems-1`` and ``bat-1``)."""


class RecordingBattery(VirtualBatteryAgent):
    """A virtual battery that records every EnergyMethod it executes."""

    def __init__(self, agent_id: str, broker: str, **kwargs: Any) -> None:
        super().__init__(agent_id, broker, **kwargs)
        self.executed: list[list[tuple[str, int, int]]] = []

    @method(DEMO_INTERFACE, "EnergyMethod")
    async def energy_method(self, cmds: list[tuple[str, int, int]]) -> Outcome:
        self.executed.append([(str(c), int(r), int(d)) for c, r, d in cmds])
        return await super().energy_method(cmds)


@dataclass
class Campaign:
    """The running secure stack (see the module docstring)."""

    ca: CertificateAuthority
    foreign: CertificateAuthority
    broker: SecureBroker
    store: Store
    ems: EMS
    agents: dict[str, RecordingBattery]
    watcher: Probe
    relay: Probe
    creds: dict[str, Security]
    """Credentials by name: every identity of :data:`IDENTITIES`, and ``foreign-ems-1``,
    ``foreign-bat-1`` (the foreign CA's certificates with our names)."""
    started: float = 0.0
    """Real time (Unix s) the attack phase started: after the stack was up."""
    expected: dict[str, list[list[tuple[str, int, int]]]] = field(default_factory=dict)
    """What each battery legitimately executed so far."""
    probes: list[Probe] = field(default_factory=list)

    # -- attackers ----------------------------------------------------------------------
    async def attacker(self, identity: str, client_id: str | None = None) -> Probe:
        """A connected MQTT 5 client with ``identity``'s certificate (client id
        ``client_id``, default the identity)."""
        probe = Probe(self.broker.port, self.creds[identity].client_tls(), client_id or identity)
        self.probes.append(probe)
        outcome = await asyncio.to_thread(probe.connect)
        assert outcome == "connected", f"{identity}: {outcome}"
        return probe

    async def publish(
        self, probe: Probe, topic: str, payload: bytes, *, retain: bool = False
    ) -> int:
        """Publish at QoS 1 (off the event loop); the PUBACK's reason code."""

        def publish() -> int:
            info = probe.client.publish(topic, payload, qos=1, retain=retain)
            assert probe._wait(lambda: info.mid in probe.acks, 5.0), f"no PUBACK for {topic}"
            return probe.acks[info.mid]

        return await asyncio.to_thread(publish)

    def seen(self, topic: str) -> list[bytes]:
        """What the watcher (EMS rights, ``sef/#``) received on ``topic``."""
        return self.watcher.received(topic)

    # -- envelopes ------------------------------------------------------------------------
    def signed_call(
        self,
        signer: str,
        audience: str,
        cmds: Any = HEADLINE,
        *,
        reply_to: str | None = None,
        sender: str | None = None,
    ) -> bytes:
        """A call of EnergyMethod(``cmds``) signed with ``signer``'s key for ``audience``
        (:func:`call_audience`)."""
        security = self.creds[signer]
        now = time.time()
        call = Call(
            uuid.uuid4().hex,
            [cmds],
            now,
            now + 30,
            reply_to,
            sender or security.identity.id,
        )
        return encode_envelope(sign_call(security, ENERGY, audience, call.to_object(), 30.0))

    async def genuine(self, target: str, cmds: Any = HEADLINE, timeout_s: float = 0.3) -> bytes:
        """Have the real EMS send EnergyMethod(``cmds``) to ``target`` (an agent nobody
        runs, or ``group:NAME`` with no members) and return the envelope as the watcher
        captured it on the wire."""
        topic = self.call_topic(target)
        before = len(self.seen(topic))
        await self.ems.call(target, DEMO_INTERFACE, "EnergyMethod", [cmds], timeout_s=timeout_s)
        await wait_for(lambda: len(self.seen(topic)) > before, 5.0)
        return self.seen(topic)[before]

    @staticmethod
    def call_topic(target: str, member: str = "EnergyMethod") -> str:
        """The call topic of EnergyMethod (or of the agent interface's ``member``) of an
        agent or of ``group:NAME``."""
        interface = DEMO_INTERFACE if member == "EnergyMethod" else AGENT_INTERFACE
        if target.startswith("group:"):
            return f"sef/groups/{target[6:]}/call/{interface}/{member}"
        return f"sef/agents/{target}/call/{interface}/{member}"

    # -- what the real components say ----------------------------------------------------
    def rejected(self) -> dict[str, int]:
        """Calls each battery refused so far."""
        return {name: agent.calls_rejected for name, agent in self.agents.items()}

    def assert_nothing_executed(self) -> None:
        """Each battery executed only the legitimate commands and still runs 1 kW charge."""
        for name, agent in self.agents.items():
            assert agent.executed == self.expected[name], (name, agent.executed)
            event = agent.current_event
            assert (event.cmd.value, event.rate_kw, event.duration_s) == RUNNING[0], (name, event)
            assert agent.device.setpoint_kw == 1.0, (name, agent.device.setpoint_kw)
            assert agent.bus.connections == 1, (name, agent.bus.connections)

    async def legit_group_command(self) -> dict[str, Any]:
        """The operator's command: the running 1 kW group charge, sent again through the
        EMS (signed); returns its command-log entry, which must say ``ok``."""
        call_id = uuid.uuid4().hex
        replies = await self.ems.call(
            f"group:{GROUP}",
            DEMO_INTERFACE,
            "EnergyMethod",
            [[list(c) for c in RUNNING]],
            timeout_s=5.0,
            call_id=call_id,
        )
        assert sorted((r.agent, r.ok) for r in replies) == [(a, True) for a in AGENTS], replies
        for name in AGENTS:
            self.expected[name].append(list(RUNNING))
        entries = [
            e
            for e in await asyncio.to_thread(self.store.commands, target=f"group:{GROUP}")
            if e["call_id"] == call_id
        ]
        assert len(entries) == 1 and entries[0]["status"] == "ok", entries
        assert sorted(r["agent"] for r in entries[0]["replies"]) == list(AGENTS)
        return entries[0]

    async def check_service(self, attack: Awaitable[None] | None = None) -> None:
        """Run ``attack`` (if given) and, while it is under way, a legitimate command,
        which must succeed; then check that every battery's telemetry was stored from
        :attr:`started` until now with no gap longer than two periods, and that the
        batteries executed only legitimate commands."""
        if attack is None:
            await self.legit_group_command()
        else:
            running = asyncio.ensure_future(attack)
            await asyncio.sleep(0.01)  # the attack's first publishes are out
            try:
                await self.legit_group_command()
            finally:
                await running
        window = time.time() - self.started
        if window < MIN_WINDOW_S:
            await asyncio.sleep(MIN_WINDOW_S - window)
        end = time.time()
        for name in AGENTS:
            ts = await self._stored_until(name, end)
            points = [self.started, *(t for t in ts if self.started < t < end), end]
            gaps = [(a, b) for a, b in itertools.pairwise(points) if b - a > 2 * PERIOD_S]
            assert not gaps, f"{name}: telemetry gaps {gaps} (start {self.started})"
            assert len(points) - 2 >= 0.7 * (end - self.started) / PERIOD_S, (name, len(ts))
        assert self.ems.bus.connected and self.ems.bus.connections == 1
        self.assert_nothing_executed()

    async def _stored_until(self, agent: str, end: float) -> list[float]:
        """Sender times (Unix s) of ``agent``'s stored Telemetry, once a row from ``end``
        or later is stored (or after four periods, when none is)."""
        deadline = time.monotonic() + 4 * PERIOD_S
        while True:
            rows = await asyncio.to_thread(self.store.telemetry, agent, key=TELEMETRY)
            ts = sorted(r["ts"] for r in rows)
            if (ts and ts[-1] >= end) or time.monotonic() > deadline:
                return ts
            await asyncio.sleep(0.05)


def _credentials(ca: CertificateAuthority, foreign: CertificateAuthority) -> dict[str, Security]:
    creds = {
        identity: security_for(ca, identity, role, groups, home)
        for identity, role, groups, home in IDENTITIES
    }
    for identity, role, groups, home in IDENTITIES:
        if identity not in FOREIGN:
            continue
        creds[f"foreign-{identity}"] = security_for(foreign, identity, role, groups, home)
    return creds


@contextlib.asynccontextmanager
async def secure_campaign(tmp_path: Path) -> AsyncIterator[Campaign]:
    """Start the stack of the module docstring; stop everything on exit."""
    ca = make_pki(tmp_path, IDENTITIES)
    foreign = make_pki(tmp_path / "foreign")
    creds = _credentials(ca, foreign)
    with running_secure_broker(ca, tmp_path) as broker:
        store = Store.open(f"sqlite:///{tmp_path / 'ems.db'}")
        ems = EMS(broker.url, EMS_ID, store=store, keepalive_s=2, security=creds[EMS_ID])
        agents = {
            name: RecordingBattery(
                name,
                broker.url,
                step_s=PERIOD_S,
                groups=[GROUP],
                keepalive_s=2,
                security=creds[name],
            )
            for name in AGENTS
        }
        watcher = Probe(broker.port, creds["ems-watch"].client_tls(), "ems-watch")
        relay = Probe(broker.port, creds["ems-relay"].client_tls(), "ems-relay")
        campaign = Campaign(ca, foreign, broker, store, ems, agents, watcher, relay, creds)
        campaign.probes += [watcher, relay]
        campaign.expected = {name: [] for name in AGENTS}
        try:
            for probe in (watcher, relay):
                assert await asyncio.to_thread(probe.connect) == "connected"
            assert await asyncio.to_thread(watcher.subscribe, "sef/#") == 1
            await ems.start()
            for agent in agents.values():
                await agent.start()
            await wait_for(
                lambda: all(
                    (r := ems.registry.get(a)) is not None
                    and r.online is True
                    and TELEMETRY in r.properties
                    for a in AGENTS
                ),
                15.0,
            )
            await campaign.legit_group_command()  # the running 1 kW charge
            await asyncio.sleep(PERIOD_S)
            campaign.started = time.time()
            yield campaign
        finally:
            for probe in campaign.probes:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(probe.close)
            for agent in agents.values():
                await agent.stop()
            await ems.stop()
            store.close()


def audience(target: str) -> str:
    """:func:`call_audience` of an agent id or ``group:NAME``."""
    if target.startswith("group:"):
        return call_audience(target[6:], group=True)
    return call_audience(target, group=False)


def unsigned_call(cmds: Any = HEADLINE, reply_to: str | None = None) -> bytes:
    """A protocol-version-1 (unsigned) EnergyMethod call in the EMS's name."""
    now = time.time()
    return Call(uuid.uuid4().hex, [cmds], now, now + 30, reply_to, EMS_ID).to_payload()


def claims_of(payload: bytes) -> dict[str, Any]:
    """The claims of a signed envelope on the wire (not verified)."""
    part = decode_envelope(payload).split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return claims


def altered(payload: bytes, claims: dict[str, Any] | None = None, **msg: Any) -> bytes:
    """A signed envelope with some claims (or fields of its call, ``msg``) changed and
    the original signature kept."""
    header, _, signature = decode_envelope(payload).split(".")
    changed = claims_of(payload)
    changed.update(claims or {})
    changed["msg"] = {**changed["msg"], **msg}
    body = base64.urlsafe_b64encode(json.dumps(changed).encode()).rstrip(b"=").decode()
    return encode_envelope(f"{header}.{body}.{signature}")


def rejection_lines(records: list[logging.LogRecord], agent: str) -> list[str]:
    """The log lines in which ``agent`` refused a call."""
    return [
        r.getMessage()
        for r in records
        if r.name == "sef.agent" and r.getMessage().startswith(f"agent {agent} rejected call")
    ]

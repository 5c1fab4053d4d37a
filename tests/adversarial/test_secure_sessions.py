"""Issue 12, acceptance: the session attacks of the hardening issue rerun in secure mode
(the stack of :mod:`secure_campaign`): client-id takeover (issue 11, 17), reading other
agents' traffic with a wildcard subscription, and revoked certificates, of an agent (at
the broker) and of an EMS (at the agents' envelope check, once they have the new CRL).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from secure_campaign import (
    AGENTS,
    EMS_ID,
    GROUP,
    HEADLINE,
    PERIOD_S,
    RUNNING,
    Campaign,
    RecordingBattery,
    audience,
    claims_of,
    rejection_lines,
    secure_campaign,
)

from secure_stack import NOT_AUTHORIZED, Probe
from sef.bus import ParsedTopic, Status, TopicKind, Topics
from sef.interface import DEMO_INTERFACE
from support import is_online, wait_for

pytestmark = pytest.mark.timeout(60)

T = Topics()
GROUP_TARGET = f"group:{GROUP}"


@pytest.fixture
async def campaign(tmp_path: Path) -> AsyncIterator[Campaign]:
    async with secure_campaign(tmp_path) as running:
        yield running


async def test_client_id_takeover_is_impossible(campaign: Campaign) -> None:
    """Clients connect with the EMS's client id (with a rogue agent's and with another EMS
    identity's certificate) and with the batteries' client ids (an operator's, a
    gateway's): the broker names each after its certificate, so the EMS and the batteries
    keep their one connection and their sessions, and the EMS sees no takeover."""
    c = campaign
    impostors = [("bat-x", EMS_ID), ("ems-spare", EMS_ID), ("op-1", "bat-1"), ("gw-h2", "bat-2")]
    probes: list[Probe] = []

    async def attack() -> None:
        for identity, client_id in impostors:
            probes.append(await c.attacker(identity, client_id))
        # the agent under the EMS's id may subscribe to the EMS's reply topic (Mosquitto
        # 2.0 grants it and filters on delivery) but reads nothing there
        assert await asyncio.to_thread(probes[0].subscribe, T.reply(EMS_ID)) in (0, 1)
        await asyncio.sleep(0.5)  # a kicked client would have noticed by now

    await c.check_service(attack())  # the EMS (its reply topic) and batteries still served
    # the broker took each as its certificate's identity, not as the id it asked for
    log = c.broker.log_text
    for identity, client_id in impostors:
        assert f" as {identity} " in log, (identity, log[-1500:])
        assert log.count(f" as {client_id} ") == 1, (client_id, log[-1500:])  # the real one
    assert c.ems.takeovers == 0 and not c.ems.takeover_active
    assert all(p.connected for p in probes)
    assert c.seen(T.reply(EMS_ID))  # there were replies to read
    assert [p.messages for p in probes] == [[], [], [], []]  # nobody's (queued) messages


async def test_a_wildcard_subscription_reads_only_what_the_acl_allows(campaign: Campaign) -> None:
    """The rogue agent subscribes to ``#`` and ``$SYS/#`` while the EMS commands bat-1 and
    another group and the batteries publish telemetry: it receives its group's calls, the
    host status and the interface XML retained once per hash (its rights: every agent
    reads the fleet's shared XML, protocol.md §4.2.1), nothing of bat-1 or bat-2, of the
    EMS's replies, of other groups or of the broker."""
    c = campaign
    rogue = await c.attacker("bat-x")
    granted = [await asyncio.to_thread(rogue.subscribe, p) for p in ("#", "$SYS/#")]

    async def traffic() -> None:
        await c.ems.call("bat-1", DEMO_INTERFACE, "EnergyMethod", [[list(RUNNING[0])]])
        c.expected["bat-1"].append(list(RUNNING))
        await c.genuine("group:feeder-other")

    await c.check_service(traffic())
    topics = {topic for topic, _ in rogue.messages}

    def allowed(topic: str) -> bool:
        return (
            topic.startswith(("sef/agents/bat-x/", f"sef/groups/{GROUP}/call/"))
            or (topic.startswith("sef/hosts/") and topic.endswith("/status"))
            or topic == T.reply("bat-x")
            or T.parse(topic) == ParsedTopic(TopicKind.INTERFACE_BLOB, topic.split("/")[-1])
        )

    assert topics and all(allowed(t) for t in topics), (granted, sorted(topics))
    assert c.call_topic(GROUP_TARGET) in topics  # its group's calls: its rights
    assert T.host_status(EMS_ID) in topics
    # what it did not get was there: the watcher (EMS rights) saw it
    for topic in (
        c.call_topic("bat-1"),
        c.call_topic("group:feeder-other"),
        T.prop("bat-1", DEMO_INTERFACE, "Telemetry"),
        T.prop("bat-2", DEMO_INTERFACE, "Telemetry"),
        T.reply(EMS_ID),
    ):
        assert c.seen(topic), topic
        assert topic not in topics, topic


async def test_a_revoked_agent_can_no_longer_connect_nor_publish(campaign: Campaign) -> None:
    """The rogue agent's certificate is revoked and the broker reloaded (ACL and CRL): a
    new connection with it fails the TLS handshake, and the connection it already had has
    lost its rights (its identity is no longer in the ACL)."""
    c = campaign
    rogue = await c.attacker("bat-x")
    birth = Status(True, int(time.time() * 1000), time.time(), 10, 0).to_payload()
    assert await c.publish(rogue, T.status("bat-x"), birth) == 0  # its own topic, for now
    refusals = c.broker.log_text.count("certificate verify failed")
    c.ca.revoke("bat-x")
    await asyncio.to_thread(c.broker.reload)

    async def attack() -> None:
        again = Probe(c.broker.port, c.creds["bat-x"].client_tls(), "bat-x")
        c.probes.append(again)
        outcome = await asyncio.to_thread(again.connect)
        assert outcome != "connected", outcome
        # Mosquitto keeps the connection it already had (TLS was checked at its
        # handshake), but the identity's rights went with the reloaded ACL
        assert rogue.connected
        assert await c.publish(rogue, T.status("bat-x"), birth) == NOT_AUTHORIZED

    await c.check_service(attack())
    log = c.broker.log_text
    assert log.count("certificate verify failed") == refusals + 1, log[-1500:]


async def test_a_call_signed_by_a_revoked_ems_certificate_is_refused(
    campaign: Campaign, caplog: pytest.LogCaptureFixture
) -> None:
    """Another EMS identity's signed group call is executed; after its certificate is
    revoked and the batteries have the new CRL (what ``CertificateRenewer`` fetches), the
    8 kW charge it signs is refused by each battery ("revoked"), and the revoked EMS can
    no longer connect to the broker."""
    caplog.set_level(logging.WARNING, logger="sef.agent")
    c = campaign
    group_topic = c.call_topic(GROUP_TARGET)
    valid = c.signed_call("ems-spare", audience(GROUP_TARGET), [list(RUNNING[0])])
    assert await c.publish(c.relay, group_topic, valid) == 0
    for name in AGENTS:
        c.expected[name].append(list(RUNNING))
    await wait_for(lambda: all(a.executed == c.expected[n] for n, a in c.agents.items()), 5.0)

    c.ca.revoke("ems-spare")
    await asyncio.to_thread(c.broker.reload)
    crl = c.ca.crl_path.read_bytes()
    for agent in c.agents.values():
        assert agent.security is not None
        agent.security.trust.set_crl(crl)
    before = c.rejected()
    forged = c.signed_call("ems-spare", audience(GROUP_TARGET), HEADLINE)

    async def attack() -> None:
        assert await c.publish(c.relay, group_topic, forged) == 0
        revoked = Probe(c.broker.port, c.creds["ems-spare"].client_tls(), "ems-spare")
        c.probes.append(revoked)
        assert await asyncio.to_thread(revoked.connect) != "connected"

    await c.check_service(attack())  # the real EMS's calls still execute
    await wait_for(lambda: all(c.rejected()[a] == before[a] + 1 for a in AGENTS), 5.0)
    for name in AGENTS:
        (line,) = rejection_lines(caplog.records, name)
        assert "(untrusted)" in line and "revoked" in line and "not executed" in line, line


async def test_a_genuine_call_replayed_after_the_agent_restarts_is_refused(
    campaign: Campaign,
) -> None:
    """A compromised broker captured the EMS's real group command; bat-1 restarts (a power
    cycle, an update) within the envelope's lifetime (the call's time to live, 30 s by
    default, up to 300 s), and the broker delivers the capture again: it must be refused
    as a replay, as it is before the restart (the compromised-broker test)."""
    c = campaign
    group_topic = c.call_topic(GROUP_TARGET)
    captured = c.seen(group_topic)[0]
    await c.agents["bat-1"].stop()
    # a restarted agent refuses envelopes issued before it started (less a 2 s clock
    # margin, the documented residual window): restart after that margin
    await asyncio.sleep(max(0.0, claims_of(captured)["iat"] + 2.5 - time.time()))
    restarted = RecordingBattery(
        "bat-1",
        c.broker.url,
        step_s=PERIOD_S,
        groups=[GROUP],
        keepalive_s=2,
        security=c.creds["bat-1"],
    )
    c.agents["bat-1"] = restarted
    await restarted.start()
    await wait_for(lambda: is_online(c.ems, "bat-1"), 10.0)
    await asyncio.sleep(1.0)  # the EMS re-sends what bat-1 should run (a fresh call)
    executed, rejected = len(restarted.executed), restarted.calls_rejected
    assert time.time() < claims_of(captured)["exp"]  # still within its lifetime
    assert await c.publish(c.relay, group_topic, captured) == 0
    await asyncio.sleep(0.5)
    assert (len(restarted.executed), restarted.calls_rejected) == (executed, rejected + 1), (
        "the replayed call was executed again",
        restarted.executed,
    )

"""Issue 12, acceptance: the forged commands of the hardening issue, rerun in secure mode.

The headline of issue 12 ("a forged group charge at 8 kW moved two batteries from 53 → 80
%") against the stack of :mod:`secure_campaign` (mutual-TLS Mosquitto with the generated
ACL, an EMS with a store, two batteries with agent certificates). Each forged call is
refused at TLS, at the broker (MQTT 5 PUBACK 0x87; the watcher with EMS rights and the
batteries never see it) or, when a compromised broker or gateway puts it on the call topic
anyway, by the batteries' envelope check (one log line with the reason, counted in
``calls_rejected``, nothing executed). During every attack a legitimate signed group
command succeeds and the EMS keeps storing the batteries' telemetry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from secure_campaign import (
    AGENTS,
    EMS_ID,
    GROUP,
    RUNNING,
    Campaign,
    altered,
    audience,
    claims_of,
    rejection_lines,
    secure_campaign,
    unsigned_call,
)

from secure_stack import NOT_AUTHORIZED, Probe, tls_of
from support import wait_for

pytestmark = pytest.mark.timeout(60)

GROUP_TARGET = f"group:{GROUP}"


@pytest.fixture
async def campaign(tmp_path: Path) -> AsyncIterator[Campaign]:
    async with secure_campaign(tmp_path) as running:
        yield running


async def test_forged_group_charge_from_other_roles_is_denied_at_the_broker(
    campaign: Campaign,
) -> None:
    """A rogue agent of the group, an operator, the batteries' own home gateway and the
    gateway of another home publish the 8 kW charge, unsigned and signed with their own
    keys, on the group's and on bat-1's call topics: every publish is denied by the ACL."""
    c = campaign
    sent: list[bytes] = []

    async def attack() -> None:
        for identity in ("bat-x", "op-1", "gw-h1", "gw-h2"):
            probe = await c.attacker(identity)
            for target in (GROUP_TARGET, "bat-1"):
                for payload in (unsigned_call(), c.signed_call(identity, audience(target))):
                    code = await c.publish(probe, c.call_topic(target), payload)
                    assert code == NOT_AUTHORIZED, (identity, target, hex(code))
                    sent.append(payload)

    await c.check_service(attack())
    assert len(sent) == 16
    # still connected: the refusal is the PUBACK, not a disconnect
    assert all(p.connected for p in c.probes)
    for target in (GROUP_TARGET, "bat-1"):
        seen = c.seen(c.call_topic(target))
        assert not set(seen) & set(sent), f"a forged call reached {target}"
        assert all(claims_of(p)["iss"] == EMS_ID for p in seen), seen
    assert c.rejected() == dict.fromkeys(AGENTS, 0)  # nothing reached the batteries


async def test_clients_without_a_certificate_of_the_ca_are_refused_at_tls(
    campaign: Campaign,
) -> None:
    """A certificate of another CA with the EMS's and a battery's names, and no certificate
    at all (each client trusts our broker, so the refusal is the broker's)."""
    c = campaign
    outcomes: dict[str, str] = {}

    async def attack() -> None:
        for name in ("foreign-ems-1", "foreign-bat-1", "anonymous"):
            if name == "anonymous":
                context = tls_of(None, c.ca)
            else:
                context = c.creds[name].client_tls()
                context.load_verify_locations(cafile=str(c.broker.files.ca))
            probe = Probe(c.broker.port, context, name.removeprefix("foreign-"))
            c.probes.append(probe)
            outcomes[name] = await asyncio.to_thread(probe.connect)
            assert not probe.connected

    await c.check_service(attack())
    assert len(outcomes) == 3 and all(o != "connected" for o in outcomes.values()), outcomes
    log = c.broker.log_text
    assert log.count("certificate verify failed") >= 2, log[-2000:]  # the foreign ones
    assert "peer did not return a certificate" in log, log[-2000:]  # the anonymous one
    assert c.rejected() == dict.fromkeys(AGENTS, 0)


async def test_forged_group_charge_through_a_compromised_broker_is_refused_by_the_envelope(
    campaign: Campaign, caplog: pytest.LogCaptureFixture
) -> None:
    """A compromised broker (the relay: any bytes on any call topic) delivers the 8 kW
    charge unsigned, signed with an agent's key, signed with a foreign CA's EMS key (same
    name, ``ems-1``), as genuine EMS envelopes re-addressed (one the EMS signed for a
    group nobody is in, one for an agent that is not running; one with its audience
    edited; the EMS's real group command moved to another method's topic) and as a replay
    of that real group command, captured from the wire."""
    caplog.set_level(logging.WARNING, logger="sef.agent")
    c = campaign
    group_topic = c.call_topic(GROUP_TARGET)
    captured = c.seen(group_topic)[0]  # the real 1 kW group charge of the stack's start
    assert claims_of(captured)["msg"]["args"] == [[list(RUNNING[0])]]
    for_nobody = await c.genuine("group:feeder-empty")  # genuine 8 kW, signed by the EMS
    for_bat_off = await c.genuine("bat-off")
    by_agent_key = c.signed_call("bat-x", audience(GROUP_TARGET), sender=EMS_ID)
    by_foreign_ems = c.signed_call("foreign-ems-1", audience(GROUP_TARGET))
    before = c.rejected()
    attacks: list[tuple[str, str, bytes, tuple[str, ...]]] = [
        ("not a signed envelope", group_topic, unsigned_call(), AGENTS),
        ("(role)", group_topic, by_agent_key, AGENTS),
        ("(untrusted)", group_topic, by_foreign_ems, AGENTS),
        ("(audience)", group_topic, for_nobody, AGENTS),
        ("(audience)", c.call_topic("bat-1"), for_bat_off, ("bat-1",)),
        ("(signature)", group_topic, altered(for_nobody, {"aud": audience(GROUP_TARGET)}), AGENTS),
        ("(topic)", c.call_topic(GROUP_TARGET, "Ping"), captured, AGENTS),
        ("(replayed)", group_topic, captured, AGENTS),
    ]  # fmt: skip

    async def attack() -> None:
        for _, topic, payload, _ in attacks:
            assert await c.publish(c.relay, topic, payload) == 0  # the broker passes it on

    await c.check_service(attack())  # nothing executed (checked there), service goes on
    expected = {a: before[a] + sum(a in who for *_, who in attacks) for a in AGENTS}
    await wait_for(lambda: c.rejected() == expected, 5.0)
    for agent in AGENTS:
        lines = rejection_lines(caplog.records, agent)
        wanted = [reason for reason, *_, who in attacks if agent in who]
        assert len(lines) == len(wanted), lines
        for reason, line in zip(wanted, lines, strict=True):
            assert reason in line and "not executed" in line, (reason, line)
    # the EMS did not take the agents' "unauthorized" answers to its re-addressed genuine
    # envelopes as replies to its calls (bat-1 and bat-2 are not members of feeder-empty,
    # bat-1 was not addressed by the call to bat-off)
    rejected_replies = c.ems.caller.rejected.total
    assert rejected_replies["not_member"] + rejected_replies["not_addressed"] >= 1, rejected_replies
    for target in ("group:feeder-empty", "bat-off"):
        entry = (await asyncio.to_thread(c.store.commands, target=target))[0]
        assert entry["status"] == "timeout" and entry["replies"] == [], entry


async def test_a_forged_reply_to_needs_the_ems_key(
    campaign: Campaign, caplog: pytest.LogCaptureFixture
) -> None:
    """``reply_to`` travels inside the signed call: a genuine envelope whose reply topic is
    changed to the rogue agent's (or to a wildcard) fails its signature, a call the rogue
    signs itself fails the role check, and unsigned calls with the reply topics that once
    made agents publish to illegal topics (issue 11, defect 5) are refused unread; nothing
    is executed, the batteries stay connected, the rogue receives no ``ok``."""
    caplog.set_level(logging.WARNING, logger="sef.agent")
    c = campaign
    rogue = await c.attacker("bat-x")
    rogue_reply = "sef/clients/bat-x/reply"
    assert await asyncio.to_thread(rogue.subscribe, rogue_reply) == 1
    group_topic = c.call_topic(GROUP_TARGET)
    genuine = c.seen(group_topic)[0]
    before = c.rejected()
    payloads = [
        altered(genuine, reply_to=rogue_reply, id="rogue-1"),
        altered(genuine, reply_to="sef/#", id="rogue-2"),
        c.signed_call("bat-x", audience(GROUP_TARGET), reply_to=rogue_reply),
        *(unsigned_call(reply_to=bad) for bad in ("sef/clients/+/reply", "#", "", "a\x00b")),
    ]

    async def attack() -> None:
        for payload in payloads:
            assert await c.publish(c.relay, group_topic, payload) == 0

    await c.check_service(attack())
    expected = {a: before[a] + len(payloads) for a in AGENTS}
    await wait_for(lambda: c.rejected() == expected, 5.0)
    for agent in AGENTS:
        lines = rejection_lines(caplog.records, agent)
        assert [("(signature)" in x, "(role)" in x) for x in lines[:3]] == [
            (True, False),
            (True, False),
            (False, True),
        ], lines
        assert all("not a signed envelope" in x for x in lines[3:]) and len(lines) == 7, lines
    # the agent-signed call is authentic (a valid agent certificate): its refusal is
    # answered, signed, on the reply topic it names; nothing else reaches the rogue
    answers = [claims_of(p)["msg"] for p in rogue.received(rogue_reply)]
    assert all(not a["ok"] and a["error"]["name"] == "sef.Error.Unauthorized" for a in answers)
    assert {a["agent"] for a in answers} <= set(AGENTS)

"""Issue 12, acceptance: the forged replies, statuses, Abouts and host statuses of the
hardening issue, rerun in secure mode (the stack of :mod:`secure_campaign`).

Replies may be written to any client's reply topic by any agent or gateway (they must
answer), so forged replies reach the EMS and are refused there by the envelope check;
everything else is denied by the broker's ACL: no identity writes under another agent's
id or a made-up one, and only the EMS itself writes its host status. Each test ends with
a legitimate signed group command that succeeds and the telemetry stored without gaps.
"""

from __future__ import annotations

import asyncio
import json
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
    RUNNING,
    TELEMETRY,
    Campaign,
    claims_of,
    secure_campaign,
)

from secure_stack import NOT_AUTHORIZED, Probe
from sef.bus import Reply, Status, Topics, encode_envelope
from sef.interface import DEMO_INTERFACE, builtin_interface, builtin_xml
from sef.security import sign_reply
from support import wait_for

pytestmark = pytest.mark.timeout(60)

T = Topics()
EMS_REPLY = T.reply(EMS_ID)
EVIL_DEMO_XML = builtin_xml(DEMO_INTERFACE).replace('type="a(snn)"', 'type="a(sii)"')
"""A redefinition of the demo interface without the int16 range check (issue 11, 4)."""


@pytest.fixture
async def campaign(tmp_path: Path) -> AsyncIterator[Campaign]:
    async with secure_campaign(tmp_path) as running:
        yield running


def _reply(call_id: str, agent: str, ok: bool = True) -> Reply:
    return Reply(call_id, agent, ok, [], ts=time.time(), applied=True if ok else None)


async def test_forged_replies_do_not_answer_the_command(
    campaign: Campaign, caplog: pytest.LogCaptureFixture
) -> None:
    """The EMS commands the 8 kW charge to bat-off (a real identity, not running). The
    rogue agent, the home gateway and the gateway of another home answer it within the
    time: unsigned, signed by the rogue and by another real battery's key in bat-off's
    name, in their own names, with a foreign CA's key and a gateway's key. None counts:
    the call returns no reply, the command log says ``timeout``."""
    caplog.set_level(logging.WARNING, logger="sef.ems")
    c = campaign
    rogue, home_gw, other_gw, operator = [
        await c.attacker(i) for i in ("bat-x", "gw-h1", "gw-h2", "op-1")
    ]
    reasons: list[str] = []
    replies: list[Reply] = []

    async def attack() -> None:
        task = asyncio.ensure_future(
            c.ems.call("bat-off", DEMO_INTERFACE, "EnergyMethod", [HEADLINE], timeout_s=2.0)
        )
        topic = c.call_topic("bat-off")
        await wait_for(lambda: bool(c.seen(topic)), 5.0)
        call_id = claims_of(c.seen(topic)[-1])["msg"]["id"]

        def signed(signer: str, agent: str) -> bytes:
            reply = _reply(call_id, agent).to_object()
            return encode_envelope(sign_reply(c.creds[signer], EMS_ID, reply))

        forgeries: list[tuple[Probe, bytes, str]] = [
            (rogue, _reply(call_id, "bat-off").to_payload(), "unsigned"),
            (rogue, signed("bat-x", "bat-off"), "not_signer"),
            (rogue, signed("bat-2", "bat-off"), "not_signer"),  # another real agent's key
            (rogue, signed("bat-x", "bat-x"), "not_addressed"),
            (rogue, signed("foreign-bat-1", "bat-off"), "unauthenticated"),
            (home_gw, signed("gw-h1", "bat-off"), "unauthenticated"),  # not an agent's key
            (other_gw, signed("bat-x", "bat-off"), "not_signer"),
        ]
        for probe, payload, reason in forgeries:
            assert await c.publish(probe, EMS_REPLY, payload) == 0  # replies pass the ACL
            reasons.append(reason)
        forged = signed("bat-x", "bat-off")
        assert await c.publish(operator, EMS_REPLY, forged) == NOT_AUTHORIZED
        assert await c.publish(c.relay, EMS_REPLY, forged) == NOT_AUTHORIZED
        replies.extend(await task)

    await c.check_service(attack())
    assert replies == [], "a forged reply answered the command"
    entry = (await asyncio.to_thread(c.store.commands, target="bat-off"))[0]
    assert entry["status"] == "timeout" and entry["replies"] == [], entry
    counted = c.ems.caller.rejected.total
    assert len(reasons) == 7
    for reason in set(reasons):
        assert counted[reason] >= reasons.count(reason), (reason, counted)
    assert "replies rejected" in caplog.text


async def test_forged_status_and_telemetry_are_denied_at_the_broker(campaign: Campaign) -> None:
    """bat-x (an agent of the same group and home), the gateway of another home, an
    operator and another EMS identity post bat-1's death (its current session's
    ``shutdown``, which an unauthenticated broker would deliver and the EMS would take), a
    death with bdseq 2**62, a birth with bdseq 2**63 and telemetry at 99 % SOC on bat-1's
    topics: all denied; the EMS's record and store of bat-1 are unchanged."""
    c = campaign
    bat1 = c.agents["bat-1"]
    bdseq = bat1.session.bdseq
    telemetry = json.dumps(
        {"v": 1, "seq": 10**6, "ts": time.time(), "value": {"Sys_SOC": ["d", 99.0]}}
    ).encode()
    forged = [
        (T.status("bat-1"), Status(False, bdseq, time.time(), reason="shutdown").to_payload()),
        (T.status("bat-1"), Status(False, 2**62, reason="will").to_payload()),
        (T.status("bat-1"), Status(True, 2**63, time.time(), 10, 0).to_payload()),
        (T.prop("bat-1", DEMO_INTERFACE, "Telemetry"), telemetry),
        (T.signal("bat-1", DEMO_INTERFACE, "Alarm"), telemetry),
    ]

    async def attack() -> None:
        for identity in ("bat-x", "gw-h2", "op-1", "ems-relay"):
            probe = c.relay if identity == "ems-relay" else await c.attacker(identity)
            for topic, payload in forged:
                code = await c.publish(probe, topic, payload, retain=True)
                assert code == NOT_AUTHORIZED, (identity, topic, hex(code))

    await c.check_service(attack())
    for topic, payload in forged:
        assert payload not in c.seen(topic), topic
    record = c.ems.registry.get("bat-1")
    assert record is not None and record.online is True and record.bdseq == bdseq
    row = next(r for r in await asyncio.to_thread(c.store.load_agents) if r.agent_id == "bat-1")
    assert row.bdseq == bdseq
    rows = await asyncio.to_thread(c.store.telemetry, "bat-1", key=TELEMETRY)
    assert rows and all(r["value"]["Sys_SOC"][1] < 99.0 for r in rows)
    assert c.ems.registry.bad_messages == 0  # nothing forged reached the EMS at all


async def test_forged_about_and_interfaces_are_denied_at_the_broker(campaign: Campaign) -> None:
    """About and a redefinition of the demo interface (no int16 check) under bat-1's id
    and under a made-up id, from a rogue agent, an operator, the gateway of another home and
    another EMS identity: denied. Under the rogue's own id they pass the ACL (its own
    topics) and the EMS refuses the redefinition of a shipped interface for that agent
    only (issue 11, 4): the EMS-wide definition stays."""
    c = campaign
    about_before = dict(c.ems.registry.get("bat-1").about)  # type: ignore[union-attr]
    about = {
        "v": 1,
        "seq": 0,
        "interfaces": [{"name": DEMO_INTERFACE, "sha256": "0" * 64}],
        "groups": [GROUP],
    }
    payloads = [(DEMO_INTERFACE, EVIL_DEMO_XML.encode()), ("about", json.dumps(about).encode())]

    async def attack() -> None:
        probes = {"ems-relay": c.relay}
        for identity in ("bat-x", "op-1", "gw-h2", "ems-relay"):
            probe = probes.get(identity) or await c.attacker(identity)
            probes[identity] = probe
            for agent in ("bat-1", "evil-1"):
                for kind, payload in payloads:
                    topic = T.about(agent) if kind == "about" else T.interface_xml(agent, kind)
                    code = await c.publish(probe, topic, payload, retain=True)
                    assert code == NOT_AUTHORIZED, (identity, topic, hex(code))
            if identity != "ems-relay":
                birth = Status(True, int(time.time() * 1000), time.time(), 10, 0).to_payload()
                assert await c.publish(probe, T.status("evil-1"), birth) == NOT_AUTHORIZED
        # under its own id, the rogue's redefinition reaches the EMS and is refused there
        birth = Status(True, int(time.time() * 1000), time.time(), 10, 0).to_payload()
        own = [
            (T.status("bat-x"), birth),
            (T.interface_xml("bat-x", DEMO_INTERFACE), EVIL_DEMO_XML.encode()),
        ]
        for topic, payload in own:
            assert await c.publish(probes["bat-x"], topic, payload, retain=True) == 0
        await wait_for(lambda: DEMO_INTERFACE in _rejected_interfaces(c, "bat-x"), 5.0)

    await c.check_service(attack())
    assert c.ems.registry.get("evil-1") is None
    assert c.ems.registry.get("bat-1").about == about_before  # type: ignore[union-attr]
    assert c.ems.interface_for(DEMO_INTERFACE) == builtin_interface(DEMO_INTERFACE)
    assert EVIL_DEMO_XML.encode() not in c.seen(T.interface_xml("bat-1", DEMO_INTERFACE))
    assert c.seen(T.about("evil-1")) == [] and c.seen(T.about("bat-1")) != []


def _rejected_interfaces(c: Campaign, agent: str) -> dict[str, str]:
    record = c.ems.registry.get(agent)
    return {} if record is None else dict(record.rejected_interfaces)


async def test_forged_host_status_is_denied_and_agents_stay_in_charge(campaign: Campaign) -> None:
    """The EMS's retained death (its current session's ``shutdown``, which agents take
    from the EMS itself; issue 11, 7) from a rogue agent, the home gateway, the gateway of
    another home, an operator and another EMS identity; a made-up host's birth by a rogue
    agent, gateway and operator: all denied. With a host-loss grace of 0.2 s, no battery
    enters host loss and the 1 kW charge runs on."""
    c = campaign
    for agent in c.agents.values():
        agent.host_loss.grace_s = 0.2
    bdseq = c.ems.session.bdseq
    death = Status(False, bdseq, time.time(), reason="shutdown").to_payload()

    async def attack() -> None:
        for identity in ("bat-x", "gw-h1", "gw-h2", "op-1", "ems-relay"):
            probe = c.relay if identity == "ems-relay" else await c.attacker(identity)
            for payload in (death, Status(False, 2**62, reason="will").to_payload()):
                code = await c.publish(probe, T.host_status(EMS_ID), payload, retain=True)
                assert code == NOT_AUTHORIZED, (identity, hex(code))
            if identity != "ems-relay":  # an EMS identity announces its own host: allowed
                host = Status(True, int(time.time() * 1000), time.time(), 10, 0).to_payload()
                assert await c.publish(probe, T.host_status(identity), host) == NOT_AUTHORIZED
        await asyncio.sleep(0.5)  # beyond the grace

    await c.check_service(attack())
    for agent in c.agents.values():
        assert agent.host_online.get(EMS_ID) is True, agent.host_online
        assert agent.host_bdseq.get(EMS_ID) == bdseq
        assert agent.host_loss.lost_since is None and agent.host_loss.applied == 0
        assert set(agent.host_online) == {EMS_ID}
    assert c.ems.host_status_repairs == 0  # no forged status reached the EMS either
    assert death not in c.seen(T.host_status(EMS_ID))
    for name in AGENTS:
        assert c.agents[name].current_event.rate_kw == RUNNING[0][1]

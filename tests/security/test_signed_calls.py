"""Signed calls end to end (protocol version 2) through a real Mosquitto in mutual-TLS
mode with the generated ACL (``tests/secure_stack.py``).

The attacks come from where the ACL still lets them: an EMS-role connection that relays
whatever a compromised broker would (``ems-relay``), and a rogue agent with its own
valid key (``a3``) answering in other agents' names. Each forged or misused envelope is
refused by the agent with one clear log line and nothing is executed; a valid call is
executed and its reply verifies.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from joserfc import jws
from joserfc.jwk import ECKey

from secure_stack import SecureBroker, make_pki, secure_broker, security_for
from sef.agents import Agent, method
from sef.bus import (
    BusClient,
    Call,
    ErrorName,
    Message,
    Reply,
    Topics,
    decode_envelope,
    encode_envelope,
)
from sef.ems import EMS, CallTarget
from sef.interface import AGENT_INTERFACE, DEMO_INTERFACE
from sef.security import (
    CertificateAuthority,
    ReplayCache,
    Role,
    Security,
    new_private_key,
    sign_call,
    sign_reply,
    verify_reply,
)
from support import is_online, wait_for

TOPICS = Topics()
CMDS = [[["charge", 5, 0]]]
"""The in-arguments of EnergyMethod: one array of (cmd, rate_kW, duration_s)."""
ENERGY = f"{DEMO_INTERFACE}/EnergyMethod"


class CountingAgent(Agent):
    """Records every EnergyMethod and Ping it executes."""

    interfaces = (DEMO_INTERFACE,)

    def __init__(self, agent_id: str, broker: str, **kwargs: Any) -> None:
        super().__init__(agent_id, broker, **kwargs)
        self.executed: list[Any] = []
        self.pings = 0

    @method(DEMO_INTERFACE, "EnergyMethod")
    def energy_method(self, cmds: list[tuple[str, int, int]]) -> None:
        self.executed.append(cmds)

    def _ping(self) -> float:
        self.pings += 1
        return super()._ping()


@dataclass
class Stack:
    """EMS ``ems-1``; agents a1 (certificate: group g1; it also listens to g2) and a2
    (g2); an EMS-role relay; credentials of a rogue agent a3 and of an outside CA."""

    ca: CertificateAuthority
    broker: SecureBroker
    ems: EMS
    a1: CountingAgent
    a2: CountingAgent
    relay: BusClient
    creds: dict[str, Security]
    relay_replies: list[Message] = field(default_factory=list)
    seen_calls: list[Message] = field(default_factory=list)

    def envelope(self, signer: str, audience: str, **changes: Any) -> tuple[bytes, Call]:
        """A call payload signed by ``signer`` for ``audience`` (reply to the relay)."""
        now = time.time()
        call = Call(uuid.uuid4().hex, CMDS, now, now + 30, TOPICS.reply("ems-relay"))
        call.sender = self.creds[signer].identity.id
        obj = call.to_object()
        obj.update(changes.pop("msg", {}))
        token = sign_call(self.creds[signer], changes.pop("top", ENERGY), audience, obj, **changes)
        return encode_envelope(token), call

    def publish(self, agent: str, payload: bytes, member: str = "EnergyMethod") -> None:
        interface = AGENT_INTERFACE if member == "Ping" else DEMO_INTERFACE
        self.relay.publish(TOPICS.call(agent, interface, member), payload, qos=1)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    ca = make_pki(tmp_path)
    other_ca = CertificateAuthority.init(tmp_path / "other-ca")
    _, key = other_ca.issue("ems-1", Role.EMS)
    creds = {
        "outsider": Security.load(
            other_ca.cert_path("ems-1"), key, other_ca.ca_path, other_ca.crl_path
        )
    }
    for identity, role, groups in [
        ("ems-1", Role.EMS, ()),
        ("ems-relay", Role.EMS, ()),
        ("ems-old", Role.EMS, ()),
        ("a1", Role.AGENT, ("g1",)),
        ("a2", Role.AGENT, ("g2",)),
        ("a3", Role.AGENT, ("g1",)),
        ("op-1", Role.OPERATOR, ()),
    ]:
        creds[identity] = security_for(ca, identity, role, groups)
    async with secure_broker(ca, tmp_path) as broker:
        ems = EMS(broker.url, "ems-1", security=creds["ems-1"], keepalive_s=2)
        a1 = CountingAgent(
            "a1", broker.url, groups=["g1", "g2"], security=creds["a1"], keepalive_s=2
        )
        a2 = CountingAgent("a2", broker.url, groups=["g2"], security=creds["a2"], keepalive_s=2)
        stack_: Stack | None = None

        def on_relay(message: Message) -> None:
            assert stack_ is not None
            if message.topic.endswith("/reply"):
                stack_.relay_replies.append(message)
            else:
                stack_.seen_calls.append(message)

        relay = BusClient(
            broker.url, "ems-relay", on_message=on_relay, tls=creds["ems-relay"].client_tls()
        )
        stack_ = Stack(ca, broker, ems, a1, a2, relay, creds)
        await relay.subscribe(TOPICS.reply("ems-relay"), qos=1)
        await relay.subscribe(f"{TOPICS.root}/agents/+/call/#", qos=1)
        await relay.subscribe(f"{TOPICS.root}/groups/+/call/#", qos=1)
        await relay.start()
        await ems.start()
        await a1.start()
        await a2.start()
        try:
            await wait_for(lambda: is_online(ems, "a1") and is_online(ems, "a2"), 10.0)
            yield stack_
        finally:
            for component in (a1, a2):
                await component.stop()
            await ems.stop()
            await relay.stop()


def rejections(caplog: pytest.LogCaptureFixture, agent: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "sef.agent" and r.getMessage().startswith(f"agent {agent} rejected call")
    ]


async def refused(
    stack: Stack,
    caplog: pytest.LogCaptureFixture,
    agent: CountingAgent,
    reason: str,
    *,
    before: int = 0,
) -> str:
    """Wait for ``agent``'s refusal; assert its one log line names ``reason`` and that
    nothing was executed; return the line."""
    await wait_for(lambda: agent.calls_rejected > before, 5.0)
    await asyncio.sleep(0.2)  # anything executed by mistake would have run by now
    lines = rejections(caplog, agent.agent_id)
    assert len(lines) == 1, lines
    assert reason in lines[0], lines[0]
    assert "not executed" in lines[0]
    assert agent.executed == [] and agent.pings == 0
    return lines[0]


def forged_token(signer: Security, audience: str, call: dict[str, Any]) -> str:
    """Claims in the name of ``signer`` (its certificate in x5c), signed with another key."""
    x5c = base64.b64encode(signer.cert.public_bytes(serialization.Encoding.DER)).decode()
    now = time.time()
    claims = {
        "iss": signer.identity.id,
        "aud": audience,
        "iat": now,
        "exp": now + 30,
        "jti": uuid.uuid4().hex,
        "top": ENERGY,
        "msg": call,
    }
    pem = new_private_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return jws.serialize_compact(
        {"alg": "ES256", "typ": "sef-call+jws", "x5c": [x5c]},
        json.dumps(claims).encode(),
        ECKey.import_key(pem),
        registry=jws.JWSRegistry(algorithms=["ES256"]),
    )


async def test_valid_call_is_executed_and_its_reply_verifies(stack: Stack) -> None:
    replies = await stack.ems.call("a1", DEMO_INTERFACE, "EnergyMethod", CMDS, timeout_s=5)
    assert [(r.agent, r.ok) for r in replies] == [("a1", True)]
    assert stack.a1.executed == [[("charge", 5, 0)]]
    assert stack.a1.calls_rejected == 0 and not stack.ems.caller.rejected.total
    # on the wire: a v2 envelope both ways (the relay reads R/#)
    await wait_for(lambda: bool(stack.seen_calls), 3.0)
    assert json.loads(stack.seen_calls[0].payload)["v"] == 2
    ping = await stack.ems.call("a1", AGENT_INTERFACE, "Ping", [], timeout_s=5)
    assert ping[0].ok and stack.a1.pings == 1


async def test_group_call_executes_only_where_the_certificate_names_the_group(
    stack: Stack,
) -> None:
    """a1 subscribes to g2 too, but its certificate says g1 only: a g2 call runs on a2
    alone (here the broker's ACL already withholds it from a1; the envelope check for the
    same case is ``test_group_not_in_the_agents_certificate`` and
    ``test_group_call_onto_a_group_the_agent_is_not_in``)."""
    checked = stack.ems.check(DEMO_INTERFACE, "EnergyMethod", CMDS)
    replies = await stack.ems.caller.call(
        CallTarget("g2", group=True), checked, members={"a2"}, timeout_s=10
    )
    assert {r.agent for r in replies if r.ok} == {"a2"}, (
        replies,
        stack.a2.executed,
        stack.a2.calls_rejected,
        stack.ems.caller.rejected.total,
    )
    await asyncio.sleep(0.3)  # time for a1 to execute it, were it delivered and accepted
    assert stack.a2.executed == [[("charge", 5, 0)]]
    assert stack.a1.executed == []


async def test_forged_signature(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    call = Call("c-forged", CMDS, time.time(), time.time() + 30, TOPICS.reply("ems-relay"))
    call.sender = "ems-1"
    token = forged_token(stack.creds["ems-1"], "agent:a1", call.to_object())
    stack.publish("a1", encode_envelope(token))
    await refused(stack, caplog, stack.a1, "(signature)")
    assert stack.relay_replies == []  # no answer: the signature did not verify


async def test_altered_payload(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    """The relay raises the rate from 5 to 8 kW after signing."""
    caplog.set_level(logging.WARNING)
    payload, _ = stack.envelope("ems-1", "agent:a1")
    header, body, signature = decode_envelope(payload).split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["msg"]["args"] = [[["charge", 8, 0]]]
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    stack.publish("a1", encode_envelope(f"{header}.{body}.{signature}"))
    await refused(stack, caplog, stack.a1, "(signature)")
    assert stack.relay_replies == []


@pytest.mark.parametrize("signer", ["a3", "op-1"])
async def test_wrong_signer_role(
    stack: Stack, caplog: pytest.LogCaptureFixture, signer: str
) -> None:
    """An agent's or an operator's own valid key signing a call."""
    caplog.set_level(logging.WARNING)
    payload, call = stack.envelope(signer, "agent:a1")
    stack.publish("a1", payload)
    line = await refused(stack, caplog, stack.a1, "(role)")
    assert "ems required" in line
    # authentic signer of the deployment: answered, with a signed Unauthorized
    await wait_for(lambda: bool(stack.relay_replies), 3.0)
    envelope = verify_reply(
        stack.creds["ems-relay"],
        decode_envelope(stack.relay_replies[0].payload),
        audience="ems-relay",
        replay=ReplayCache(),
    )
    reply = Reply.from_object(envelope.message)
    assert (reply.id, reply.ok, reply.error) == (call.id, False, ErrorName.UNAUTHORIZED)
    assert envelope.signer.id == "a1"


async def test_certificate_of_another_ca(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    payload, _ = stack.envelope("outsider", "agent:a1")
    stack.publish("a1", payload)
    line = await refused(stack, caplog, stack.a1, "(untrusted)")
    assert "not issued by the deployment CA" in line
    assert stack.relay_replies == []


async def test_revoked_signer(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    stack.ca.revoke("ems-old")
    stack.a1.calls.security.trust.set_crl(stack.ca.crl_path.read_bytes())  # type: ignore[union-attr]
    payload, _ = stack.envelope("ems-old", "agent:a1")
    stack.publish("a1", payload)
    line = await refused(stack, caplog, stack.a1, "(untrusted)")
    assert "revoked" in line
    assert stack.relay_replies == []


async def test_call_for_another_agent_moved_onto_this_agents_topic(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    payload, _ = stack.envelope("ems-1", "agent:a2")
    stack.publish("a1", payload)
    line = await refused(stack, caplog, stack.a1, "(audience)")
    assert "'agent:a2' does not match the topic's 'agent:a1'" in line
    assert stack.a2.executed == []


async def test_group_call_onto_a_group_the_agent_is_not_in(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """A genuine g2 call, republished on g1's topic: a1 (g1) refuses, a2 never sees it."""
    caplog.set_level(logging.WARNING)
    payload, _ = stack.envelope("ems-relay", "group:g2")
    stack.relay.publish(TOPICS.group_call("g1", DEMO_INTERFACE, "EnergyMethod"), payload, qos=1)
    line = await refused(stack, caplog, stack.a1, "(audience)")
    assert "'group:g2' does not match the topic's 'group:g1'" in line


async def test_expired(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    payload, _ = stack.envelope("ems-1", "agent:a1", lifetime_s=30, now=time.time() - 400)
    stack.publish("a1", payload)
    line = await refused(stack, caplog, stack.a1, "(expired)")
    assert "expired 3" in line  # ~370 s ago
    assert stack.relay_replies == []  # an old envelope replayed gets no answer


async def test_replayed_envelope_is_executed_once(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """The relay captures a genuine call of the EMS and publishes it again."""
    caplog.set_level(logging.WARNING)
    replies = await stack.ems.call("a1", DEMO_INTERFACE, "EnergyMethod", CMDS, timeout_s=5)
    assert replies[0].ok and len(stack.a1.executed) == 1
    await wait_for(lambda: bool(stack.seen_calls), 3.0)
    captured = stack.seen_calls[0]
    stack.relay.publish(captured.topic, captured.payload, qos=1)
    await wait_for(lambda: stack.a1.calls_rejected > 0, 5.0)
    await asyncio.sleep(0.2)
    lines = rejections(caplog, "a1")
    assert len(lines) == 1 and "(replayed)" in lines[0], lines
    assert len(stack.a1.executed) == 1


async def test_moved_to_another_method(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    """An EnergyMethod envelope published on the Ping topic."""
    caplog.set_level(logging.WARNING)
    payload, _ = stack.envelope("ems-1", "agent:a1")
    stack.publish("a1", payload, member="Ping")
    line = await refused(stack, caplog, stack.a1, "(topic)")
    assert f"signed for '{ENERGY}', arrived on 'sef.Agent/Ping'" in line


async def test_sender_other_than_the_signer(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    payload, _ = stack.envelope("ems-relay", "agent:a1", msg={"sender": "ems-1"})
    stack.publish("a1", payload)
    line = await refused(stack, caplog, stack.a1, "(sender)")
    assert "'ems-1' is not its signer 'ems-relay'" in line


async def test_unsigned_call_is_refused(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    now = time.time()
    call = Call("c-plain", CMDS, now, now + 30, TOPICS.reply("ems-relay"), "ems-1")
    stack.publish("a1", call.to_payload())
    line = await refused(stack, caplog, stack.a1, "not a signed envelope")
    assert "unsigned protocol-version-1 payload refused" in line
    assert stack.relay_replies == []


async def test_forged_replies_do_not_resolve_the_pending_call(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """A call to a9 (not running): the rogue agent a3 answers unsigned and signed in a9's
    name and in its own; nothing counts, the call times out, each is logged."""
    caplog.set_level(logging.WARNING, "sef.ems.caller")
    rogue = BusClient(stack.broker.url, "a3", tls=stack.creds["a3"].client_tls())
    await rogue.start()
    try:
        task = asyncio.create_task(
            stack.ems.call("a9", DEMO_INTERFACE, "EnergyMethod", CMDS, timeout_s=3)
        )
        await wait_for(lambda: any("/a9/" in m.topic for m in stack.seen_calls), 3.0)
        token = decode_envelope(stack.seen_calls[-1].payload)
        body = token.split(".")[1]
        call = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["msg"]
        topic = TOPICS.reply("ems-1")

        def reply(agent: str) -> dict[str, Any]:
            return Reply(call["id"], agent, True, ts=time.time()).to_object()

        rogue.publish(topic, json.dumps(reply("a9")).encode(), qos=1)  # unsigned
        rogue.publish(topic, encode_envelope(sign_reply(stack.creds["a3"], "ems-1", reply("a9"))))
        rogue.publish(topic, encode_envelope(sign_reply(stack.creds["a3"], "ems-1", reply("a3"))))
        rogue.publish(topic, encode_envelope(sign_reply(stack.creds["a3"], "ems-2", reply("a3"))))
        assert await task == []
    finally:
        await rogue.stop()
    total = stack.ems.caller.rejected.total
    assert (total["unsigned"], total["not_signer"], total["not_addressed"]) == (1, 1, 1)
    assert total["unauthenticated"] == 1  # signed for another caller (aud ems-2)
    stack.ems.caller.rejected.flush(0.0)
    logged = " ".join(r.getMessage() for r in caplog.records if r.name == "sef.ems.caller")
    assert "signed by 'a3'" in logged and "unsigned" in logged


async def test_group_reply_from_an_agent_outside_the_group_does_not_count(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """A call to group g9 (no members known: any agent may answer) is answered by the
    rogue a3 in its own name; its certificate names g1 only, so the reply is dropped."""
    caplog.set_level(logging.WARNING, "sef.ems.caller")
    rogue = BusClient(stack.broker.url, "a3", tls=stack.creds["a3"].client_tls())
    await rogue.start()
    try:
        checked = stack.ems.check(DEMO_INTERFACE, "EnergyMethod", CMDS)
        task = asyncio.create_task(
            stack.ems.caller.call(CallTarget("g9", group=True), checked, expect=1, timeout_s=3)
        )
        await wait_for(lambda: any("/g9/" in m.topic for m in stack.seen_calls), 3.0)
        token = decode_envelope(stack.seen_calls[-1].payload)
        body = token.split(".")[1]
        call_id = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["msg"]["id"]
        reply = Reply(call_id, "a3", True, ts=time.time()).to_object()
        rogue.publish(
            TOPICS.reply("ems-1"), encode_envelope(sign_reply(stack.creds["a3"], "ems-1", reply))
        )
        assert await task == []
    finally:
        await rogue.stop()
    assert stack.ems.caller.rejected.total["not_member"] == 1
    logged = " ".join(r.getMessage() for r in caplog.records if r.name == "sef.ems.caller")
    assert "whose certificate does not name the group" in logged

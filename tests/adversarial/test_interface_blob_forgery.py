"""Hostile interface XML on the hash topics (protocol version 2, ``{root}/interfaces/{sha256}``,
``docs/protocol.md`` §4.2.1): anyone allowed to publish there may write any hash's topic.

* a forged copy over a hash the EMS knows is refused (its SHA-256 is not the topic's), the
  EMS's definition stays, and the EMS puts the right copy back on the broker, so that an
  EMS started later still learns it;
* an XML over the EMS's 256 KiB limit is refused before it is hashed;
* an XML defining two interfaces, announced by an agent, defines neither;
* an XML of a name nobody announced (squatting) defines nothing; the first agent that
  announces the name under its own hash gets its own definition.

Real Mosquitto, a real EMS and API, real agents, a rogue client.
"""

from __future__ import annotations

import hashlib
import time

from registry_stack import TOPICS, start_stack

from blob_support import CHARGER, CHARGER_SHA, CHARGER_XML, Charger
from sef.bus import About, BusClient, InterfaceRef, Message, Status
from sef.ems import EMS
from support import record, wait_for

FORGED = CHARGER_XML.replace('type="s"', 'type="i"')


def ghost_birth(rogue: BusClient, agent_id: str, refs: dict[str, str]) -> None:
    """A made-up agent's status and About (the rogue is an agent of its own)."""
    now = time.time()
    bdseq = int(now * 1000)
    fields = {
        "AppId": "0" * 32,
        "DefaultLanguage": "en",
        "DeviceName": agent_id,
        "DeviceId": agent_id,
        "AppName": "x",
        "Manufacturer": "x",
        "ModelNumber": "x",
        "SoftwareVersion": "1",
    }
    about = About(fields, [InterfaceRef(n, s) for n, s in refs.items()], [], bdseq, now, 1)
    rogue.publish(TOPICS.status(agent_id), Status(True, bdseq, now, 10, 0).to_payload())
    rogue.publish(TOPICS.about(agent_id), about.to_payload())


async def test_forged_copy_is_refused_and_put_back(broker_url: str) -> None:
    stack = await start_stack(broker_url)
    agent = Charger("ch-1", broker_url)
    try:
        ems = stack.ems
        await agent.start()
        await wait_for(lambda: ems.registry.interface(CHARGER) is not None, 5.0)
        bad = ems.registry.bad_messages
        stack.rogue.publish(TOPICS.interface_blob(CHARGER_SHA), FORGED.encode(), retain=True)
        await wait_for(lambda: ems.registry.blob_book.repaired == 1, 5.0)
        assert ems.registry.bad_messages == bad + 1
        assert ems.registry.interface(CHARGER).properties["Mode"].type == "s"  # type: ignore[union-attr]

        # the broker holds the right copy again: a later EMS learns the real definition
        await agent.stop()
        agent = Charger("ch-1", broker_url)
        async with EMS(broker_url, "ems-later") as later:
            await agent.start()
            await wait_for(lambda: later.registry.interface(CHARGER) is not None, 5.0)
            assert later.registry.interface(CHARGER).properties["Mode"].type == "s"  # type: ignore[union-attr]
            assert later.registry.bad_messages == 0
    finally:
        await agent.stop()
        await stack.stop()


async def test_forged_copy_before_any_ems_is_healed_by_the_next_birth(broker_url: str) -> None:
    """No EMS held the right XML: the agent's next connection finds other bytes on its
    hash topic and publishes its own."""
    rogue = BusClient(broker_url, "rogue-early")
    await rogue.start()
    rogue.publish(TOPICS.interface_blob(CHARGER_SHA), FORGED.encode(), retain=True)
    agent = Charger("ch-2", broker_url)
    await agent.start()
    try:
        await agent.blobs.wait()
        async with EMS(broker_url, "ems-heal") as ems:
            await wait_for(lambda: ems.registry.interface(CHARGER) is not None, 5.0)
            assert ems.registry.unresolved_interfaces(record(ems, "ch-2")) == []
    finally:
        await agent.stop()
        await rogue.stop()


async def test_huge_blob_is_refused(broker_url: str) -> None:
    stack = await start_stack(broker_url)
    try:
        huge = b"<node>" + b" " * (256 * 1024) + b"</node>"
        digest = hashlib.sha256(huge).hexdigest()
        ghost_birth(stack.rogue, "ghost-huge", {"org.example.Huge": digest})
        bad = stack.ems.registry.bad_messages
        stack.rogue.publish(TOPICS.interface_blob(digest), huge, retain=True)
        await wait_for(lambda: stack.ems.registry.bad_messages == bad + 1, 5.0)
        assert digest not in stack.ems.registry.blob_book.raw
        assert stack.ems.registry.interface("org.example.Huge") is None
    finally:
        await stack.stop()


async def test_blob_defining_two_interfaces_defines_neither(broker_url: str) -> None:
    stack = await start_stack(broker_url)
    try:
        two = (
            b'<node><interface name="org.example.A"><method name="M"/></interface>'
            b'<interface name="org.example.B"><method name="M"/></interface></node>'
        )
        digest = hashlib.sha256(two).hexdigest()
        ghost_birth(stack.rogue, "ghost-two", {"org.example.A": digest})
        await wait_for(lambda: stack.ems.registry.get("ghost-two") is not None, 5.0)
        stack.rogue.publish(TOPICS.interface_blob(digest), two, retain=True)
        await wait_for(
            lambda: "org.example.A" in record(stack.ems, "ghost-two").rejected_interfaces, 5.0
        )
        assert (
            "does not load" in record(stack.ems, "ghost-two").rejected_interfaces["org.example.A"]
        )
        assert stack.ems.registry.interface("org.example.A") is None
        assert stack.ems.registry.interface("org.example.B") is None
    finally:
        await stack.stop()


async def test_blob_squatting_a_name_nobody_announced_defines_nothing(broker_url: str) -> None:
    stack = await start_stack(broker_url)
    agent = Charger("ch-3", broker_url)
    try:
        ems = stack.ems
        squat = FORGED.encode()  # com.example.charger with Mode an integer
        stack.rogue.publish(
            TOPICS.interface_blob(hashlib.sha256(squat).hexdigest()), squat, retain=True
        )
        seen: list[Message] = []
        probe = BusClient(broker_url, "probe-squat", on_message=seen.append)
        await probe.subscribe(TOPICS.all_interface_blobs())
        await probe.start()
        await wait_for(lambda: bool(seen), 5.0)
        await ems.settle(0.2, 2.0)
        await probe.stop()
        assert ems.registry.interface(CHARGER) is None
        assert hashlib.sha256(squat).hexdigest() not in ems.registry.interfaces_by_hash  # unparsed
        await agent.start()
        await wait_for(lambda: ems.registry.interface(CHARGER) is not None, 5.0)
        assert ems.registry.interface(CHARGER).properties["Mode"].type == "s"  # type: ignore[union-attr]
        assert CHARGER not in record(ems, "ch-3").rejected_interfaces
    finally:
        await agent.stop()
        await stack.stop()

"""Defect 4: one retained interface XML under a made-up agent id replaced the EMS-wide
definition of ``edu.pdx.powerlab.demo`` (every API command then failed; a variant removed
the int16 check, so the API let out-of-range rates through).

Now the interfaces SEF ships (and those an operator pins) cannot be redefined by an agent:
a conflicting definition is a bad message of that agent only (logged, counted, noted in
its record), and the EMS-wide definition stays. An About that names an interface with the
hash of another interface's XML does not map the name to that other interface either.
Real Mosquitto, a real EMS and API, a real agent, a rogue client.
"""

from __future__ import annotations

import hashlib
import re
import time

import pytest
from registry_stack import DEMO, TOPICS, battery, start_stack

from sef.bus import About, InterfaceRef
from sef.interface import builtin_interface, builtin_xml
from support import wait_for

DEMO_XML = builtin_xml(DEMO)
HIJACKS = {
    # int32 instead of int16: no range check left
    "no-int16": DEMO_XML.replace('type="a(snn)"', 'type="a(sii)"'),
    # the method renamed: every command refused
    "no-method": DEMO_XML.replace('name="EnergyMethod"', 'name="EnergyMethod2"'),
}
EVIL_XML = '<node><interface name="org.example.Evil"><method name="Nothing"/></interface></node>'


@pytest.mark.parametrize("variant", sorted(HIJACKS))
async def test_interface_hijack_is_rejected_for_that_agent_only(
    broker_url: str, variant: str, caplog: pytest.LogCaptureFixture
) -> None:
    stack = await start_stack(broker_url)
    agent = await battery(broker_url, "bat-1", stack.ems)
    try:
        ems = stack.ems
        assert HIJACKS[variant] != DEMO_XML
        bad = ems.registry.bad_messages
        stack.rogue.publish(
            TOPICS.interface_xml("ghost-1", DEMO), HIJACKS[variant].encode(), retain=True
        )
        await wait_for(lambda: ems.registry.get("ghost-1") is not None, 5.0)
        await stack.ems.settle(0.2, 2.0)

        ok = await stack.http.post(
            "/agents/bat-1/commands", json={"cmds": [["charge", 4, 60]], "timeout_s": 5}
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["status"] == "ok", ok.json()
        too_big = await stack.http.post(
            "/agents/bat-1/commands", json={"cmds": [["charge", 40000, 60]], "timeout_s": 5}
        )
        assert too_big.status_code == 422, too_big.text
        assert "int16" in too_big.json()["error"]

        assert ems.interface_for(DEMO) == builtin_interface(DEMO)
        assert ems.registry.bad_messages == bad + 1
        ghost = ems.registry.get("ghost-1")
        assert ghost is not None and DEMO in ghost.rejected_interfaces
        assert "pinned definition" in caplog.text

        # the real agent's own (shipped) definition still loads for it
        await agent.stop()
        agent = await battery(broker_url, "bat-1", ems)
        assert DEMO not in ems.registry.get("bat-1").rejected_interfaces  # type: ignore[union-attr]
    finally:
        await agent.stop()
        await stack.stop()


async def test_about_cannot_map_a_name_to_another_interfaces_xml(broker_url: str) -> None:
    """Before any agent published the demo XML: a rogue publishes another interface's XML
    and an About that lists the demo interface with that XML's hash."""
    stack = await start_stack(broker_url)
    agent = None
    try:
        ems = stack.ems
        sha = hashlib.sha256(EVIL_XML.encode()).hexdigest()
        stack.rogue.publish(TOPICS.interface_xml("ghost-2", "org.example.Evil"), EVIL_XML.encode())
        await wait_for(lambda: "org.example.Evil" in ems.registry.interfaces_by_name, 5.0)
        fields = {
            "AppId": "0" * 32,
            "DefaultLanguage": "en",
            "DeviceName": "ghost",
            "DeviceId": "ghost-2",
            "AppName": "x",
            "Manufacturer": "x",
            "ModelNumber": "x",
            "SoftwareVersion": "1",
        }
        about = About(fields, [InterfaceRef(DEMO, sha)], ["feeder-1"], 1, time.time(), None)
        stack.rogue.publish(TOPICS.about("ghost-2"), about.to_payload())
        await wait_for(lambda: bool(ems.registry.get("ghost-2").about), 5.0)  # type: ignore[union-attr]
        iface = ems.interface_for(DEMO)
        assert iface is not None and iface.name == DEMO
        ems.check(DEMO, "EnergyMethod", [[["charge", 4, 60]]])  # not refused

        agent = await battery(broker_url, "bat-1", ems)
        ok = await stack.http.post(
            "/agents/bat-1/commands", json={"cmds": [["idle", 0, 0]], "timeout_s": 5}
        )
        assert ok.status_code == 200 and ok.json()["status"] == "ok", ok.text
    finally:
        if agent is not None:
            await agent.stop()
        await stack.stop()


async def test_an_agent_built_before_nameplate_is_not_a_hijack(broker_url: str) -> None:
    """The demo interface as released before ``Nameplate`` (the shipped XML without that
    property, byte for byte the file of that release) is an earlier revision: accepted for
    the agent that publishes it, not a bad message, and the EMS's definition stays."""
    stack = await start_stack(broker_url)
    try:
        ems = stack.ems
        before_nameplate = re.sub(
            r'\n    <property name="Nameplate"[^>]*>.*?</property>', "", DEMO_XML, flags=re.S
        )
        assert before_nameplate != DEMO_XML
        bad = ems.registry.bad_messages
        stack.rogue.publish(
            TOPICS.interface_xml("old-1", DEMO), before_nameplate.encode(), retain=True
        )
        await wait_for(lambda: ems.registry.get("old-1") is not None, 5.0)
        await stack.ems.settle(0.2, 2.0)
        old = ems.registry.get("old-1")
        assert old is not None and DEMO not in old.rejected_interfaces
        assert ems.registry.bad_messages == bad
        assert ems.interface_for(DEMO) == builtin_interface(DEMO)
    finally:
        await stack.stop()

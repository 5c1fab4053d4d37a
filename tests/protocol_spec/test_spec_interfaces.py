"""docs/interfaces.md: the XML on the page is the XML SEF ships, and the rule on changing a
standard interface is the one the EMS enforces (against a real Mosquitto).

After changing a file of src/sef/interface/data/, copy the shipped XML into
docs/interfaces.md with ``PYTHONPATH=tests python tests/protocol_spec/test_spec_interfaces.py
--write``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sef.agents import AboutInfo, Agent, method
from sef.bus import About, BusClient, InterfaceRef, Status, Topics
from sef.ems import EMS, CallRefused
from sef.interface import AGENT_INTERFACE, DEMO_INTERFACE, Variant, builtin_xml
from support import record, wait_for

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "interfaces.md"
DATA = ROOT / "src" / "sef" / "interface" / "data"
SHIPPED = ("sef.Agent.xml", "edu.pdx.powerlab.demo.xml")


def _block(name: str) -> re.Pattern[str]:
    path = re.escape(f"src/sef/interface/data/{name}")
    return re.compile(
        rf"(<!-- BEGIN {path} -->\n```xml\n)(.*?)(```\n<!-- END {path} -->)", re.DOTALL
    )


def doc_xml(text: str, name: str) -> str:
    """The XML of shipped file ``name`` as docs/interfaces.md shows it."""
    match = _block(name).search(text)
    assert match is not None, f"docs/interfaces.md has no block for {name}"
    return match.group(2)


def _filled(xml: str) -> Callable[[re.Match[str]], str]:
    """A :meth:`re.Pattern.sub` replacement that puts ``xml`` into a block."""
    return lambda match: match.group(1) + xml + match.group(3)


def write_doc() -> None:
    """Copy the shipped XML files into their blocks of docs/interfaces.md."""
    text = DOC.read_text(encoding="utf-8")
    for name in SHIPPED:
        xml = (DATA / name).read_text(encoding="utf-8")
        text = _block(name).sub(_filled(xml), text)
    DOC.write_text(text, encoding="utf-8")


@pytest.mark.parametrize("name", SHIPPED)
def test_the_xml_in_the_doc_is_the_shipped_file_byte_for_byte(name: str) -> None:
    shipped = (DATA / name).read_bytes()
    shown = doc_xml(DOC.read_text(encoding="utf-8"), name).encode("utf-8")
    assert shown == shipped, (
        f"docs/interfaces.md shows another {name}: run "
        "python tests/protocol_spec/test_spec_interfaces.py --write"
    )


# -- the extension rule, on a real broker ------------------------------------------------

EXTRA_METHOD = """    <method name="VendorBoost">
      <arg name="level" type="y" direction="in"/>
    </method>
  </interface>"""

CHARGER_XML = """<node>
  <interface name="com.example.charger">
    <method name="SetPhases">
      <arg name="phases" type="y" direction="in"/>
    </method>
    <property name="Mode" type="s" access="read"/>
  </interface>
</node>
"""


class VendorAgent(Agent):
    """A vendor's agent: the demo interface as given in ``demo_xml``, plus its own
    interface ``com.example.charger``."""

    interfaces = (DEMO_INTERFACE,)

    def __init__(self, agent_id: str, broker: str, demo_xml: str, **kwargs: Any) -> None:
        super().__init__(
            agent_id,
            broker,
            interface_xml={DEMO_INTERFACE: demo_xml, "com.example.charger": CHARGER_XML},
            **kwargs,
        )
        self.phases: list[int] = []

    async def on_start(self) -> None:
        self.set_property(DEMO_INTERFACE, "AssetName", self.agent_id)
        self.set_property(DEMO_INTERFACE, "Telemetry", {"TimeStamp": Variant("u", 1)})
        self.set_property("com.example.charger", "Mode", "solar")

    @method(DEMO_INTERFACE, "EnergyMethod")
    def energy_method(self, cmds: list[tuple[str, int, int]]) -> None:
        return None

    @method("com.example.charger", "SetPhases")
    def set_phases(self, phases: int) -> None:
        self.phases.append(phases)


class ExtendedAgent(VendorAgent):
    """Adds a method to the standard interface: what a vendor must not do."""

    @method(DEMO_INTERFACE, "VendorBoost")
    def vendor_boost(self, level: int) -> None:
        return None


async def test_a_changed_standard_interface_is_rejected_and_the_vendor_s_own_is_learned(
    broker_url: str,
) -> None:
    extended_xml = builtin_xml(DEMO_INTERFACE).replace("  </interface>", EXTRA_METHOD, 1)
    reformatted_xml = builtin_xml(DEMO_INTERFACE).replace(
        "<node>", "<!-- com.example: same definition, other bytes -->\n<node>"
    )
    extended = ExtendedAgent("ev-extended", broker_url, extended_xml)
    reformatted = VendorAgent("ev-reformatted", broker_url, reformatted_xml)
    for agent in (extended, reformatted):
        await agent.start()
    async with EMS(broker_url, "ems-interfaces") as ems:
        await wait_for(
            lambda: all(
                ems.registry.get(a) is not None and ems.registry.get(a).interfaces  # type: ignore[union-attr]
                for a in ("ev-extended", "ev-reformatted")
            ),
            5.0,
        )
        await wait_for(
            lambda: DEMO_INTERFACE in record(ems, "ev-extended").rejected_interfaces, 5.0
        )
        await wait_for(lambda: ems.registry.interface("com.example.charger") is not None, 5.0)
        bad = record(ems, "ev-extended")
        assert "differs from the EMS's pinned definition" in bad.rejected_interfaces[DEMO_INTERFACE]
        assert bad.online is True, "the agent stays online"
        # another hash in the About, the same definition: accepted
        good = record(ems, "ev-reformatted")
        shipped_hash = hashlib.sha256(builtin_xml(DEMO_INTERFACE).encode()).hexdigest()
        assert good.interfaces[DEMO_INTERFACE] != shipped_hash
        assert DEMO_INTERFACE not in good.rejected_interfaces
        # calls are checked against the EMS's own definition: the extra method is refused
        with pytest.raises(CallRefused, match="VendorBoost"):
            await ems.call("ev-extended", DEMO_INTERFACE, "VendorBoost", [3])
        replies = await ems.call("ev-extended", DEMO_INTERFACE, "EnergyMethod", [[["idle", 0, 0]]])
        assert replies and replies[0].ok
        # the vendor's own interface, under its own name, is learned and callable
        replies = await ems.call("ev-reformatted", "com.example.charger", "SetPhases", [3])
        assert replies and replies[0].ok and reformatted.phases == [3]
        assert record(ems, "ev-reformatted").prop("com.example.charger", "Mode") == "solar"
    for agent in (extended, reformatted):
        await agent.stop()


async def test_the_about_hash_of_sef_s_agents_is_the_hash_of_the_shipped_bytes(
    broker_url: str,
) -> None:
    agent = VendorAgent("ev-plain", broker_url, builtin_xml(DEMO_INTERFACE))
    await agent.start()
    async with EMS(broker_url, "ems-hash") as ems:
        await wait_for(lambda: len(record(ems, "ev-plain").interfaces) == 3, 5.0)
        announced = record(ems, "ev-plain").interfaces
    await agent.stop()
    for name, file in ((AGENT_INTERFACE, "sef.Agent.xml"), (DEMO_INTERFACE, SHIPPED[1])):
        assert announced[name] == hashlib.sha256((DATA / file).read_bytes()).hexdigest()


async def test_a_wrong_hash_in_the_about_changes_nothing_the_xml_decides(
    broker_url: str,
) -> None:
    """An About may announce a standard interface with a hash that is not the hash of the
    XML published: the EMS keeps the announced hash in the agent's record but judges the
    definition by the XML it receives (here the shipped one: accepted, callable)."""
    topics, now = Topics(), time.time()
    bdseq = int(now * 1000)
    wrong = "0" * 64
    raw = BusClient(broker_url, "raw-hash")
    await raw.start()
    refs = [InterfaceRef(DEMO_INTERFACE, wrong)]
    about = About(AboutInfo().fields("raw-hash"), refs, [], bdseq, now, 1)
    raw.publish(
        topics.status("raw-hash"), Status(True, bdseq, now, 10, 0).to_payload(), retain=True
    )
    raw.publish(topics.about("raw-hash"), about.to_payload(), retain=True)
    xml = builtin_xml(DEMO_INTERFACE).encode()
    raw.publish(topics.interface_xml("raw-hash", DEMO_INTERFACE), xml, retain=True)
    async with EMS(broker_url, "ems-wrong-hash") as ems:
        await wait_for(lambda: bool(record(ems, "raw-hash").interfaces), 5.0)
        await asyncio.sleep(0.3)  # the XML too
        rec = record(ems, "raw-hash")
        assert rec.interfaces == {DEMO_INTERFACE: wrong}
        assert rec.rejected_interfaces == {}
        assert ems.registry.bad_messages == 0
        checked = ems.check(DEMO_INTERFACE, "EnergyMethod", [[["idle", 0, 0]]])
        assert checked.method == "EnergyMethod"
    await raw.stop()


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write_doc()
    else:
        print(__doc__)

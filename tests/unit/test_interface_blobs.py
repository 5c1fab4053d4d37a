"""The registry and interface XML retained once per hash (protocol version 2,
``{root}/interfaces/{sha256}``; ``sef.ems._interfaces``, ``sef.ems._blobs``), message by
message: learned only when an About announced the hash, whatever the order; verified,
parsed once, conflicts marked on the announcing agents, altered copies put back."""

from __future__ import annotations

import hashlib

from sef.bus import About, InterfaceRef, Message, Status, Topics
from sef.ems._blobs import REPAIR_INTERVAL_S
from sef.ems._registry import Registry
from sef.interface import builtin_xml

T = Topics()
DEMO = "edu.pdx.powerlab.demo"
EXTRA = "org.example.Extra"
EXTRA_XML = (
    f'<node><interface name="{EXTRA}"><property name="Level" type="i" access="read"/>'
    "</interface></node>"
).encode()
EXTRA_SHA = hashlib.sha256(EXTRA_XML).hexdigest()
OTHER_XML = EXTRA_XML.replace(b'type="i"', b'type="d"')  # same name, other definition
OTHER_SHA = hashlib.sha256(OTHER_XML).hexdigest()


def sha(xml: bytes) -> str:
    return hashlib.sha256(xml).hexdigest()


def blob(xml: bytes, digest: str | None = None, *, retain: bool = True) -> Message:
    return Message(T.interface_blob(digest or sha(xml)), xml, 1, retain)


class Fleet:
    """A registry fed births: status then About with the given (name, sha) refs."""

    def __init__(self) -> None:
        self.registry = Registry(monotonic=lambda: self.mono)
        self.now = 1000.0
        self.mono = 50.0
        self.bdseq = 1_700_000_000_000
        self.published: list[tuple[str, bytes]] = []

    def send(self, message: Message) -> None:
        self.now += 0.01
        self.registry.handle(message, self.now)

    def born(self, agent: str, refs: dict[str, str]) -> None:
        self.bdseq += 1
        status = Status(True, self.bdseq, self.now, 10, 0).to_payload()
        self.send(Message(T.status(agent), status, 1, True))
        fields = {
            "AppId": "0b8e",
            "DeviceId": agent,
            "AppName": "virtual-battery",
            "Manufacturer": "PSU",
            "ModelNumber": "VB-1",
            "DefaultLanguage": "en",
            "DeviceName": agent,
            "SoftwareVersion": "1.0",
        }
        about = About(
            fields,
            [InterfaceRef(n, s) for n, s in refs.items()],
            ["g"],
            self.bdseq,
            self.now,
            1,
        )
        self.send(Message(T.about(agent), about.to_payload(), 1, True))


def test_blob_after_about_teaches_the_interface() -> None:
    fleet = Fleet()
    reg = fleet.registry
    fleet.born("bat-1", {EXTRA: EXTRA_SHA})
    assert reg.interface(EXTRA) is None
    assert reg.unresolved_interfaces(reg.agents["bat-1"]) == [EXTRA]
    fleet.send(blob(EXTRA_XML))
    learned = reg.interface(EXTRA)
    assert learned is not None and "Level" in learned.properties
    assert reg.unresolved_interfaces(reg.agents["bat-1"]) == []
    assert reg.bad_messages == 0


def test_blob_before_about_is_kept_unparsed_then_learned_at_the_about() -> None:
    fleet = Fleet()
    reg = fleet.registry
    fleet.send(blob(EXTRA_XML))
    assert EXTRA_SHA in reg.blob_book.raw
    assert EXTRA_SHA not in reg.interfaces_by_hash  # not parsed: nobody announced it
    assert reg.interface(EXTRA) is None
    fleet.born("bat-1", {EXTRA: EXTRA_SHA})
    assert reg.interface(EXTRA) is not None
    assert reg.unresolved_interfaces(reg.agents["bat-1"]) == []


def test_a_second_copy_costs_one_comparison() -> None:
    fleet = Fleet()
    fleet.born("bat-1", {EXTRA: EXTRA_SHA})
    for _ in range(3):
        fleet.send(blob(EXTRA_XML))
    book = fleet.registry.blob_book
    assert (book.received, book.duplicates) == (1, 2)


def test_blob_nobody_announced_defines_nothing() -> None:
    """Squatting: a blob for a name no About announced does not define it, and a later
    About under another hash gets its own definition."""
    fleet = Fleet()
    reg = fleet.registry
    fleet.send(blob(OTHER_XML))  # the squatter's definition of EXTRA
    assert reg.interface(EXTRA) is None
    fleet.born("bat-1", {EXTRA: EXTRA_SHA})
    fleet.send(blob(EXTRA_XML))
    learned = reg.interface(EXTRA)
    assert learned is not None and learned.properties["Level"].type == "i"


def test_hash_mismatch_is_refused_and_the_right_copy_put_back() -> None:
    fleet = Fleet()
    reg = fleet.registry
    reg.blob_book.repair = lambda topic, xml: fleet.published.append((topic, xml))
    fleet.born("bat-1", {EXTRA: EXTRA_SHA})
    fleet.send(blob(EXTRA_XML))
    fleet.send(blob(OTHER_XML, EXTRA_SHA))  # forged over the right hash
    assert reg.bad_messages == 1
    assert fleet.published == [(T.interface_blob(EXTRA_SHA), EXTRA_XML)]
    assert reg.interface(EXTRA).properties["Level"].type == "i"  # type: ignore[union-attr]
    fleet.send(blob(b"", EXTRA_SHA))  # cleared, within the repair interval: not again
    assert len(fleet.published) == 1
    fleet.mono += REPAIR_INTERVAL_S + 1
    fleet.send(blob(b"", EXTRA_SHA))  # cleared later: put back again
    assert len(fleet.published) == 2
    assert reg.bad_messages == 1  # a clear is no bad message
    assert reg.blob_book.repaired == 2


def test_mismatch_of_an_unknown_hash_is_only_refused() -> None:
    fleet = Fleet()
    reg = fleet.registry
    reg.blob_book.repair = lambda topic, xml: fleet.published.append((topic, xml))
    fleet.born("bat-1", {EXTRA: EXTRA_SHA})
    fleet.send(blob(OTHER_XML, EXTRA_SHA))
    assert (reg.bad_messages, fleet.published) == (1, [])
    assert reg.unresolved_interfaces(reg.agents["bat-1"]) == [EXTRA]  # a rebirth repairs it


def test_conflicting_definition_is_marked_on_the_agents_that_announced_it() -> None:
    fleet = Fleet()
    reg = fleet.registry
    fleet.born("bat-1", {EXTRA: EXTRA_SHA})
    fleet.send(blob(EXTRA_XML))
    fleet.born("bat-2", {EXTRA: OTHER_SHA})  # XML not seen yet: waits
    assert reg.unresolved_interfaces(reg.agents["bat-2"]) == [EXTRA]
    fleet.send(blob(OTHER_XML))
    rejected = reg.agents["bat-2"].rejected_interfaces
    assert "learned first" in rejected[EXTRA]
    assert reg.unresolved_interfaces(reg.agents["bat-2"]) == []
    assert EXTRA not in reg.agents["bat-1"].rejected_interfaces
    fleet.born("bat-3", {EXTRA: OTHER_SHA})  # XML known now: marked at the About
    assert EXTRA in reg.agents["bat-3"].rejected_interfaces


def test_shipped_interface_cannot_be_redefined_through_a_blob() -> None:
    fleet = Fleet()
    reg = fleet.registry
    hijack = builtin_xml(DEMO).replace('type="a(snn)"', 'type="a(sii)"').encode()
    fleet.born("bat-1", {DEMO: sha(hijack)})
    fleet.send(blob(hijack))
    assert "pinned definition" in reg.agents["bat-1"].rejected_interfaces[DEMO]
    assert reg.interface(DEMO) == reg.pinned[DEMO]


def test_blob_of_another_interface_does_not_map_the_name() -> None:
    fleet = Fleet()
    reg = fleet.registry
    fleet.born("bat-1", {"org.example.Other": EXTRA_SHA})
    fleet.send(blob(EXTRA_XML))
    assert reg.interface("org.example.Other") is None
    assert (
        "defines org.example.Extra" in reg.agents["bat-1"].rejected_interfaces["org.example.Other"]
    )


def test_blob_defining_two_interfaces_or_not_loading_is_refused_once() -> None:
    fleet = Fleet()
    reg = fleet.registry
    two = EXTRA_XML.replace(
        b"</node>", b'<interface name="org.example.Two"><method name="M"/></interface></node>'
    )
    broken = b"<node><interface name="
    for xml in (two, broken):
        fleet.born("bat-1", {EXTRA: sha(xml)})
        fleet.send(blob(xml))
        fleet.send(blob(xml))  # the same again: neither parsed nor counted again
        assert "does not load" in reg.agents["bat-1"].rejected_interfaces[EXTRA]
    assert reg.bad_messages == 2
    assert reg.interface(EXTRA) is None and reg.interface("org.example.Two") is None


def test_huge_blob_is_refused_before_hashing() -> None:
    fleet = Fleet()
    reg = fleet.registry
    huge = b"<node>" + b" " * (256 * 1024) + b"</node>"
    fleet.send(blob(huge))
    assert reg.bad_messages == 1 and not reg.blob_book.raw

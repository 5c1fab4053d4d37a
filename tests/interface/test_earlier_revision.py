"""An agent built before a member was added to a shipped interface publishes the older
definition: it is an earlier revision (accepted), not a redefinition (rejected).

The earlier revision is made from the shipped XML by deleting the later member's element,
as the file read before the member was added (``git show f8a1841:...`` is byte-identical
to this for ``edu.pdx.powerlab.demo``)."""

from __future__ import annotations

import re

import pytest

from sef.interface import (
    AGENT_INTERFACE,
    DEMO_INTERFACE,
    LATER_MEMBERS,
    builtin_interface,
    builtin_xml,
    is_earlier_revision,
    load_xml,
)

CURRENT = builtin_interface(DEMO_INTERFACE)


def without_property(xml: str, name: str) -> str:
    pattern = rf'\n    <property name="{name}"[^>]*>.*?</property>'
    out, n = re.subn(pattern, "", xml, flags=re.S)
    assert n == 1, f"no property {name} in the shipped XML"
    return out


def parsed(xml: str, name: str = DEMO_INTERFACE) -> object:
    return load_xml(xml, "test").interface(name)


def test_the_definition_before_nameplate_is_an_earlier_revision() -> None:
    assert "Nameplate" in LATER_MEMBERS[DEMO_INTERFACE]
    old = parsed(without_property(builtin_xml(DEMO_INTERFACE), "Nameplate"))
    assert old != CURRENT
    assert is_earlier_revision(old, CURRENT)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change",
    [
        "no Telemetry",  # a member of the first release missing
        "Nameplate retyped",  # a later member present but different
        "extra property",  # something the interface never had
        "description changed",
    ],
)
def test_anything_else_is_not_an_earlier_revision(change: str) -> None:
    xml = builtin_xml(DEMO_INTERFACE)
    if change == "no Telemetry":
        xml = without_property(xml, "Telemetry")
    elif change == "Nameplate retyped":
        xml = xml.replace('name="Nameplate" type="a{sv}"', 'name="Nameplate" type="s"')
    elif change == "extra property":
        xml = xml.replace(
            "  </interface>", '    <property name="Extra" type="s" access="read"/>\n  </interface>'
        )
    else:
        xml = xml.replace("The device's ratings", "The ratings")
    candidate = parsed(xml)
    assert candidate != CURRENT
    assert not is_earlier_revision(candidate, CURRENT)  # type: ignore[arg-type]


def test_an_interface_without_later_members_has_no_earlier_revisions() -> None:
    agent = builtin_interface(AGENT_INTERFACE)
    xml = builtin_xml(AGENT_INTERFACE)
    fewer = re.sub(r'\n    <method name="Rebirth">.*?</method>', "", xml, flags=re.S)
    assert not is_earlier_revision(parsed(fewer, AGENT_INTERFACE), agent)  # type: ignore[arg-type]

"""Interface definitions shipped with SEF (``sef/interface/data/*.xml``)."""

from __future__ import annotations

from functools import cache
from importlib import resources

from ._model import Interface
from ._signature import is_valid_interface_name
from ._xml import load_xml

__all__ = [
    "AGENT_INTERFACE",
    "DEMO_INTERFACE",
    "LATER_MEMBERS",
    "builtin_interface",
    "builtin_names",
    "builtin_xml",
    "is_earlier_revision",
]

#: The demonstration DER interface of the seed report (corrected).
DEMO_INTERFACE = "edu.pdx.powerlab.demo"
#: SEF's own agent-management interface (``Rebirth``, ``Ping``).
AGENT_INTERFACE = "sef.Agent"

#: Members added to a shipped interface after its first release, by interface. An agent
#: built before an addition publishes the definition without it: that definition is an
#: earlier revision (:func:`is_earlier_revision`), not a redefinition.
LATER_MEMBERS: dict[str, frozenset[str]] = {
    DEMO_INTERFACE: frozenset({"Nameplate"}),  # issue 14: the device's ratings
}


def _data() -> resources.abc.Traversable:
    return resources.files(__package__ or "sef.interface").joinpath("data")


def builtin_names() -> list[str]:
    """Names of the shipped interfaces, sorted."""
    return sorted(
        entry.name[: -len(".xml")] for entry in _data().iterdir() if entry.name.endswith(".xml")
    )


@cache
def builtin_xml(name: str) -> str:
    """XML text of the shipped interface ``name`` (``KeyError`` if there is none)."""
    if not isinstance(name, str) or not is_valid_interface_name(name):
        raise KeyError(name)
    entry = _data().joinpath(f"{name}.xml")
    if not entry.is_file():
        raise KeyError(name)
    return entry.read_text(encoding="utf-8")


@cache
def builtin_interface(name: str) -> Interface:
    """The shipped interface ``name`` (shared object: do not mutate). ``KeyError`` if unknown."""
    node = load_xml(builtin_xml(name), f"{name}.xml")
    return node.interface(name)


def is_earlier_revision(candidate: Interface, current: Interface) -> bool:
    """Whether ``candidate`` is ``current`` as released before some of its
    :data:`LATER_MEMBERS` were added: everything else equal, and only later members
    missing (none changed, none added)."""
    later = LATER_MEMBERS.get(current.name, frozenset())
    if not later or candidate.name != current.name:
        return False
    if candidate.annotations != current.annotations or candidate.description != current.description:
        return False
    for mine, theirs in (
        (candidate.methods, current.methods),
        (candidate.properties, current.properties),
        (candidate.signals, current.signals),
    ):
        missing = set(theirs) - set(mine)
        if not missing <= later or any(theirs.get(n) != m for n, m in mine.items()):
            return False
    return True

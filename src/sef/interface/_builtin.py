"""Interface definitions shipped with SEF (``sef/interface/data/*.xml``)."""

from __future__ import annotations

from functools import cache
from importlib import resources

from ._model import Interface
from ._signature import is_valid_interface_name
from ._xml import load_xml

__all__ = ["AGENT_INTERFACE", "DEMO_INTERFACE", "builtin_interface", "builtin_names", "builtin_xml"]

#: The demonstration DER interface of the seed report (corrected).
DEMO_INTERFACE = "edu.pdx.powerlab.demo"
#: SEF's own agent-management interface (``Rebirth``, ``Ping``).
AGENT_INTERFACE = "sef.Agent"


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

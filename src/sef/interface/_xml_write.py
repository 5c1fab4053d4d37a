"""Writing introspection XML: :func:`to_xml`."""

from __future__ import annotations

from lxml import etree

from ._model import Annotation, Arg, Node

__all__ = ["DBUS_DOCTYPE", "to_xml"]

DBUS_DOCTYPE = (
    '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
    ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">'
)


# --------------------------------------------------------------------------- writing


def _sub(parent: etree._Element, tag: str, **attrs: str | None) -> etree._Element:
    el = etree.SubElement(parent, tag)
    for key, value in attrs.items():
        if value is not None:
            el.set(key, value)
    return el


def _add_annotations(el: etree._Element, annotations: tuple[Annotation, ...]) -> None:
    for ann in annotations:
        _sub(el, "annotation", name=ann.name, value=ann.value)


def _add_description(el: etree._Element, description: str | None, depth: int) -> None:
    if not description:
        return
    desc = _sub(el, "description", language="en")
    if "\n" in description:
        inner = "  " * (depth + 1)
        lines = [(inner + line) if line else "" for line in description.splitlines()]
        desc.text = "\n" + "\n".join(lines) + "\n" + "  " * depth
    else:
        desc.text = description


def _add_args(el: etree._Element, args: tuple[Arg, ...], depth: int, signal: bool) -> None:
    for arg in args:
        a = _sub(
            el, "arg", name=arg.name, type=arg.type, direction=None if signal else arg.direction
        )
        if signal and arg.direction != "out":
            a.set("direction", arg.direction)
        _add_description(a, arg.description, depth + 1)
        _add_annotations(a, arg.annotations)


def _build_node(node: Node, parent: etree._Element | None, depth: int) -> etree._Element:
    el = etree.Element("node") if parent is None else etree.SubElement(parent, "node")
    if node.name is not None:
        el.set("name", node.name)
    for iface in node.interfaces.values():
        i = _sub(el, "interface", name=iface.name)
        _add_description(i, iface.description, depth + 2)
        for m in iface.methods.values():
            me = _sub(i, "method", name=m.name)
            _add_description(me, m.description, depth + 3)
            _add_args(me, m.args, depth + 3, signal=False)
            _add_annotations(me, m.annotations)
        for s in iface.signals.values():
            se = _sub(i, "signal", name=s.name)
            _add_description(se, s.description, depth + 3)
            _add_args(se, s.args, depth + 3, signal=True)
            _add_annotations(se, s.annotations)
        for p in iface.properties.values():
            pe = _sub(i, "property", name=p.name, type=p.type, access=p.access)
            _add_description(pe, p.description, depth + 3)
            _add_annotations(pe, p.annotations)
        _add_annotations(i, iface.annotations)
    for child in node.children:
        _build_node(child, el, depth + 1)
    return el


def to_xml(node: Node, *, doctype: bool = False) -> str:
    """Serialise a :class:`Node` as pretty introspection XML (no XML declaration).

    With ``doctype=True`` the D-Bus introspection DOCTYPE is prepended.
    ``load_xml(to_xml(node)) == node`` for any valid node.
    """
    root = _build_node(node, None, 0)
    etree.indent(root, space="  ")
    text = etree.tostring(root, encoding="unicode", pretty_print=True)
    return f"{DBUS_DOCTYPE}\n{text}" if doctype else text

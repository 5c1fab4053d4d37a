"""Loading and writing D-Bus / AllJoyn introspection XML.

The loader is strict (unknown elements and attributes are errors) and safe
for XML received from the network: no entity expansion, no DTD loading, no
network access, no huge trees, input capped at :data:`MAX_XML_BYTES`.
Every error is an :class:`InterfaceError` carrying the line number.
Writing is in :mod:`._xml_write`.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Iterator
from typing import Any

from lxml import etree

from ._errors import InterfaceError, SignatureError
from ._model import (
    ACCESS_VALUES,
    EMITS_CHANGED,
    EMITS_CHANGED_VALUES,
    NO_REPLY,
    Access,
    Annotation,
    Arg,
    Interface,
    Method,
    Node,
    Property,
    Signal,
)
from ._signature import is_valid_interface_name, is_valid_member_name, parse_type

__all__ = ["MAX_XML_BYTES", "load_file", "load_xml"]

#: Largest accepted interface document, in bytes.
MAX_XML_BYTES = 256 * 1024
#: Deepest accepted nesting of ``<node>`` elements.
MAX_NODE_DEPTH = 32


_ACCESS: dict[str, Access] = {"read": "read", "write": "write", "readwrite": "readwrite"}
_BOOL_ANNOTATIONS = {NO_REPLY, "org.freedesktop.DBus.Deprecated"}
_LINE_SUFFIX = re.compile(r",\s*line \d+,\s*column \d+\s*$")
_PATH_ELEMENT = re.compile(r"[A-Za-z0-9_]+")


def _line(el: etree._Element) -> int | None:
    line: object = el.sourceline
    return line if isinstance(line, int) else None


def _clean_text(text: str | None) -> str | None:
    """Normalise description text: dedent, strip line ends and surrounding blank lines."""
    if text is None:
        return None
    cleaned = "\n".join(line.rstrip() for line in inspect.cleandoc(text).splitlines()).strip()
    return cleaned or None


class _Loader:
    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, el: etree._Element | None, message: str) -> InterfaceError:
        line = _line(el) if el is not None else None
        return InterfaceError(message, line=line, source=self.source)

    # -- generic checks ---------------------------------------------------------------

    def children(
        self, el: etree._Element, allowed: tuple[str, ...], *, text: bool = False
    ) -> Iterator[etree._Element]:
        """Yield element children, rejecting unknown elements, entities and stray text."""
        if not text and el.text is not None and el.text.strip():
            raise self.error(el, f"unexpected text {el.text.strip()[:30]!r} in <{el.tag}>")
        for child in el:
            if isinstance(child, etree._Entity):
                raise self.error(child, "entity references are not allowed")
            if child.tail is not None and child.tail.strip():
                raise self.error(child, f"unexpected text {child.tail.strip()[:30]!r}")
            if not isinstance(child.tag, str):  # comments, processing instructions
                continue
            if child.tag not in allowed:
                expected = ", ".join(f"<{a}>" for a in allowed) or "nothing"
                raise self.error(
                    child, f"unknown element <{child.tag}> in <{el.tag}> (expected {expected})"
                )
            yield child

    def attrs(
        self, el: etree._Element, required: tuple[str, ...], optional: tuple[str, ...] = ()
    ) -> dict[str, str]:
        values = {str(k): str(v) for k, v in el.attrib.items()}
        for key in values:
            if key not in required and key not in optional:
                raise self.error(el, f"unknown attribute {key!r} on <{el.tag}>")
        for key in required:
            if key not in values:
                raise self.error(el, f"<{el.tag}> is missing the {key!r} attribute")
        return values

    def member_name(self, el: etree._Element, name: str) -> str:
        if not is_valid_member_name(name):
            raise self.error(
                el, f"invalid {el.tag} name {name!r} (expected [A-Za-z_][A-Za-z0-9_]*)"
            )
        return name

    def type_of(self, el: etree._Element, sig: str, what: str) -> str:
        try:
            parse_type(sig)
        except SignatureError as exc:
            raise self.error(el, f"invalid type of {what}: {exc}") from None
        return sig

    # -- leaf elements ------------------------------------------------------------------

    def description(self, el: etree._Element) -> tuple[str, str | None]:
        attrs = self.attrs(el, (), ("language",))
        list(self.children(el, (), text=True))
        if len(el):  # comments split the text: keep it simple, refuse them
            raise self.error(el, "<description> must contain text only")
        return attrs.get("language", "en"), _clean_text(el.text)

    def annotation(self, el: etree._Element) -> Annotation:
        attrs = self.attrs(el, ("name", "value"))
        list(self.children(el, ()))
        name, value = attrs["name"], attrs["value"]
        if not is_valid_interface_name(name):
            raise self.error(el, f"invalid annotation name {name!r}")
        lowered = value.strip().lower()
        if name in _BOOL_ANNOTATIONS and lowered not in ("true", "false"):
            raise self.error(el, f"annotation {name} must be 'true' or 'false', got {value!r}")
        if name == EMITS_CHANGED and lowered not in EMITS_CHANGED_VALUES:
            raise self.error(
                el,
                f"annotation {name} must be one of {', '.join(EMITS_CHANGED_VALUES)}, "
                f"got {value!r}",
            )
        return Annotation(name, value)

    def common(
        self, el: etree._Element, allowed: tuple[str, ...]
    ) -> tuple[list[etree._Element], tuple[Annotation, ...], str | None]:
        """Split children into (other elements, annotations, description)."""
        others: list[etree._Element] = []
        annotations: list[Annotation] = []
        ann_lines: dict[str, int | None] = {}
        descriptions: dict[str, tuple[str | None, int | None]] = {}
        for child in self.children(el, (*allowed, "annotation", "description")):
            if child.tag == "annotation":
                ann = self.annotation(child)
                if ann.name in ann_lines:
                    raise self.error(
                        child,
                        f"duplicate annotation {ann.name!r} (first on line {ann_lines[ann.name]})",
                    )
                ann_lines[ann.name] = _line(child)
                annotations.append(ann)
            elif child.tag == "description":
                lang, text = self.description(child)
                if lang in descriptions:
                    raise self.error(
                        child,
                        f"duplicate <description> in <{el.tag}> "
                        f"(first on line {descriptions[lang][1]})",
                    )
                descriptions[lang] = (text, _line(child))
            else:
                others.append(child)
        desc: str | None = None
        if descriptions:
            desc = descriptions.get("en", next(iter(descriptions.values())))[0]
        return others, tuple(annotations), desc

    def args(self, children: list[etree._Element], signal: bool) -> tuple[Arg, ...]:
        args: list[Arg] = []
        seen: dict[tuple[str, str], int | None] = {}
        for el in children:
            attrs = self.attrs(el, ("type",), ("name", "direction"))
            name = attrs.get("name")
            if name is not None and not is_valid_member_name(name):
                raise self.error(el, f"invalid arg name {name!r}")
            default = "out" if signal else "in"
            direction = attrs.get("direction", default)
            if signal and direction != "out":
                raise self.error(el, f"signal arg direction must be 'out', got {direction!r}")
            if direction not in ("in", "out"):
                raise self.error(el, f"arg direction must be 'in' or 'out', got {direction!r}")
            if name is not None:
                if (name, direction) in seen:
                    raise self.error(
                        el, f"duplicate arg name {name!r} (first on line {seen[name, direction]})"
                    )
                seen[name, direction] = _line(el)
            label = f"arg {name!r}" if name else f"arg #{len(args)}"
            sig = self.type_of(el, attrs["type"], label)
            _, annotations, desc = self.common(el, ())
            args.append(Arg(name, sig, "out" if direction == "out" else "in", desc, annotations))
        return tuple(args)

    # -- members ------------------------------------------------------------------------

    def method(self, el: etree._Element) -> Method:
        name = self.member_name(el, self.attrs(el, ("name",))["name"])
        others, annotations, desc = self.common(el, ("arg",))
        return Method(name, self.args(others, signal=False), annotations, desc)

    def signal(self, el: etree._Element) -> Signal:
        name = self.member_name(el, self.attrs(el, ("name",))["name"])
        others, annotations, desc = self.common(el, ("arg",))
        return Signal(name, self.args(others, signal=True), annotations, desc)

    def property(self, el: etree._Element) -> Property:
        attrs = self.attrs(el, ("name", "type", "access"))
        name = self.member_name(el, attrs["name"])
        sig = self.type_of(el, attrs["type"], f"property {name!r}")
        access = _ACCESS.get(attrs["access"])
        if access is None:
            raise self.error(
                el,
                f"property access must be one of {', '.join(ACCESS_VALUES)}, "
                f"got {attrs['access']!r}",
            )
        _, annotations, desc = self.common(el, ())
        return Property(name, sig, access, annotations, desc)

    def interface(self, el: etree._Element) -> Interface:
        name = self.attrs(el, ("name",))["name"]
        if not is_valid_interface_name(name):
            raise self.error(
                el,
                f"invalid interface name {name!r} (need 2+ dot-separated elements "
                "of [A-Za-z_][A-Za-z0-9_]*, max 255 characters)",
            )
        others, annotations, desc = self.common(el, ("method", "signal", "property"))
        methods: dict[str, Method] = {}
        properties: dict[str, Property] = {}
        signals: dict[str, Signal] = {}
        seen: dict[str, tuple[str, int | None]] = {}
        for child in others:
            member: Method | Signal | Property
            if child.tag == "method":
                member = methods[child.get("name", "")] = self.method(child)
            elif child.tag == "signal":
                member = signals[child.get("name", "")] = self.signal(child)
            else:
                member = properties[child.get("name", "")] = self.property(child)
            if member.name in seen:
                kind, line = seen[member.name]
                raise self.error(
                    child, f"duplicate member name {member.name!r} (a {kind} on line {line})"
                )
            seen[member.name] = (str(child.tag), _line(child))
        return Interface(name, methods, properties, signals, annotations, desc)

    def node(self, el: etree._Element, depth: int) -> Node:
        if depth > MAX_NODE_DEPTH:
            raise self.error(el, f"<node> elements nested deeper than {MAX_NODE_DEPTH}")
        name = self.attrs(el, (), ("name",)).get("name")
        if name is not None:
            if depth == 0:
                if not name.startswith("/") or not _valid_path(name[1:], allow_empty=True):
                    raise self.error(
                        el, f"root node name must be an absolute object path: {name!r}"
                    )
            elif not _valid_path(name, allow_empty=False):
                raise self.error(el, f"child node name must be a relative object path: {name!r}")
        elif depth > 0:
            raise self.error(el, "child <node> is missing the 'name' attribute")
        interfaces: dict[str, Interface] = {}
        lines: dict[str, int | None] = {}
        children: list[Node] = []
        child_lines: dict[str | None, int | None] = {}
        for child in self.children(el, ("interface", "node")):
            if child.tag == "interface":
                iface = self.interface(child)
                if iface.name in interfaces:
                    raise self.error(
                        child,
                        f"duplicate interface {iface.name!r} (first on line {lines[iface.name]})",
                    )
                interfaces[iface.name] = iface
                lines[iface.name] = _line(child)
            else:
                sub = self.node(child, depth + 1)
                if sub.name in child_lines:
                    raise self.error(
                        child,
                        f"duplicate child node {sub.name!r} "
                        f"(first on line {child_lines[sub.name]})",
                    )
                child_lines[sub.name] = _line(child)
                children.append(sub)
        return Node(name, interfaces, tuple(children))


def _valid_path(path: str, *, allow_empty: bool) -> bool:
    if path == "":
        return allow_empty
    return all(_PATH_ELEMENT.fullmatch(part) for part in path.split("/"))


def _parse(data: bytes, source: str, encoding: str | None) -> etree._Element:
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        encoding=encoding,
    )
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        message = _LINE_SUFFIX.sub("", str(exc.msg or exc)).strip() or "syntax error"
        line = exc.lineno if isinstance(exc.lineno, int) and exc.lineno > 0 else None
        raise InterfaceError(f"malformed XML: {message}", line=line, source=source) from None
    except (etree.LxmlError, ValueError, TypeError) as exc:
        raise InterfaceError(f"malformed XML: {exc}", source=source) from None
    if root is None:  # pragma: no cover - only with recover=True
        raise InterfaceError("malformed XML: empty document", source=source)
    docinfo = root.getroottree().docinfo
    dtd: Any = docinfo.internalDTD  # lxml-stubs lack DTD.iterentities()
    if dtd is not None and (any(True for _ in dtd.iterentities()) or dtd.elements()):
        raise InterfaceError("DTD declarations are not allowed", line=1, source=source)
    if dtd is not None and dtd.name != "node":
        raise InterfaceError(f"DOCTYPE must name 'node', got {dtd.name!r}", line=1, source=source)
    return root


def load_xml(text: str | bytes, source: str = "<string>") -> Node:
    """Parse and validate introspection XML into a :class:`Node`.

    ``source`` names the document in error messages (``"source:line: message"``).
    Raises :class:`InterfaceError` for any problem, including malformed or
    oversized input.
    """
    if isinstance(text, str):
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            raise InterfaceError("interface XML is not valid Unicode", source=source) from None
        encoding: str | None = "utf-8"
    elif isinstance(text, (bytes, bytearray, memoryview)):
        data, encoding = bytes(text), None
    else:
        raise TypeError(f"load_xml() needs str or bytes, got {type(text).__name__}")
    if len(data) > MAX_XML_BYTES:
        raise InterfaceError(
            f"interface XML too large ({len(data)} bytes, max {MAX_XML_BYTES})", source=source
        )
    root = _parse(data, source, encoding)
    loader = _Loader(source)
    if root.tag != "node":
        raise loader.error(root, f"root element must be <node>, got <{root.tag}>")
    return loader.node(root, 0)


def load_file(path: str | os.PathLike[str]) -> Node:
    """Load an interface XML file (errors name the file: ``"file.xml:12: ..."``).

    ``OSError`` propagates if the file cannot be read.
    """
    with open(path, "rb") as fh:
        data = fh.read(MAX_XML_BYTES + 1)
    return load_xml(data, os.fspath(path))

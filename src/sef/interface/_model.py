"""Data model of an interface definition: nodes, interfaces and their members."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from ._errors import UnknownMemberError
from ._signature import TypeNode, parse_type

__all__ = [
    "ACCESS_VALUES",
    "DIRECTIONS",
    "EMITS_CHANGED",
    "EMITS_CHANGED_VALUES",
    "NO_REPLY",
    "Access",
    "Annotation",
    "Arg",
    "Interface",
    "Method",
    "Node",
    "Property",
    "Signal",
]

#: Annotation marking a method whose caller expects no reply.
NO_REPLY = "org.freedesktop.DBus.Method.NoReply"
#: Annotation telling whether/how PropertiesChanged is emitted for a property.
EMITS_CHANGED = "org.freedesktop.DBus.Property.EmitsChangedSignal"

DIRECTIONS = ("in", "out")
ACCESS_VALUES = ("read", "write", "readwrite")
EMITS_CHANGED_VALUES = ("true", "false", "invalidates", "const")

Direction = Literal["in", "out"]
Access = Literal["read", "write", "readwrite"]
EmitsChanged = Literal["true", "false", "invalidates", "const"]


def _lookup(annotations: tuple[Annotation, ...], name: str) -> str | None:
    for ann in annotations:
        if ann.name == name:
            return ann.value
    return None


def _emits(value: str | None) -> EmitsChanged | None:
    if value is None:
        return None
    lowered = value.strip().lower()
    for choice in EMITS_CHANGED_VALUES:
        if lowered == choice:
            return choice  # type: ignore[return-value]
    return None


@dataclass(frozen=True, slots=True)
class Annotation:
    """A ``<annotation name=... value=...>`` element."""

    name: str
    value: str


@dataclass(frozen=True)
class Arg:
    """A method or signal argument (``name`` may be ``None``: D-Bus allows unnamed args)."""

    name: str | None
    type: str
    direction: Direction = "in"
    description: str | None = None
    annotations: tuple[Annotation, ...] = ()

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"arg direction must be 'in' or 'out', got {self.direction!r}")

    @property
    def type_node(self) -> TypeNode:
        """The parsed type (one complete type)."""
        return parse_type(self.type)


def _signature(args: tuple[Arg, ...]) -> str:
    return "".join(a.type for a in args)


@dataclass(frozen=True)
class Method:
    """A method: arguments (``in`` then ``out`` in any order), annotations, description."""

    name: str
    args: tuple[Arg, ...] = ()
    annotations: tuple[Annotation, ...] = ()
    description: str | None = None

    @property
    def in_args(self) -> tuple[Arg, ...]:
        """The ``direction="in"`` arguments, in order."""
        return tuple(a for a in self.args if a.direction == "in")

    @property
    def out_args(self) -> tuple[Arg, ...]:
        """The ``direction="out"`` arguments, in order."""
        return tuple(a for a in self.args if a.direction == "out")

    @property
    def in_signature(self) -> str:
        """Concatenated in-argument types, e.g. ``"a(snn)"``."""
        return _signature(self.in_args)

    @property
    def out_signature(self) -> str:
        """Concatenated out-argument types (``""`` for none)."""
        return _signature(self.out_args)

    @property
    def no_reply(self) -> bool:
        """True if annotated ``org.freedesktop.DBus.Method.NoReply`` = ``true`` (any case)."""
        value = _lookup(self.annotations, NO_REPLY)
        return value is not None and value.strip().lower() == "true"

    def annotation(self, name: str) -> str | None:
        """Value of the annotation ``name`` or ``None``."""
        return _lookup(self.annotations, name)


@dataclass(frozen=True)
class Property:
    """A property with its type, access and annotations.

    ``emits_changed`` falls back to the enclosing interface's annotation; the
    :class:`Interface` fills the (non-compared) ``inherited_emits_changed`` field.
    """

    name: str
    type: str
    access: Access = "read"
    annotations: tuple[Annotation, ...] = ()
    description: str | None = None
    inherited_emits_changed: EmitsChanged | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.access not in ACCESS_VALUES:
            raise ValueError(
                f"property access must be read, write or readwrite, got {self.access!r}"
            )

    @property
    def type_node(self) -> TypeNode:
        """The parsed type (one complete type)."""
        return parse_type(self.type)

    @property
    def readable(self) -> bool:
        """True for ``read`` and ``readwrite``."""
        return self.access in ("read", "readwrite")

    @property
    def writable(self) -> bool:
        """True for ``write`` and ``readwrite``."""
        return self.access in ("write", "readwrite")

    @property
    def emits_changed(self) -> EmitsChanged:
        """``"true"``, ``"false"``, ``"invalidates"`` or ``"const"`` (default ``"true"``)."""
        own = _emits(_lookup(self.annotations, EMITS_CHANGED))
        return own or self.inherited_emits_changed or "true"

    def annotation(self, name: str) -> str | None:
        """Value of the annotation ``name`` or ``None``."""
        return _lookup(self.annotations, name)


@dataclass(frozen=True)
class Signal:
    """A signal and its (``out``) arguments."""

    name: str
    args: tuple[Arg, ...] = ()
    annotations: tuple[Annotation, ...] = ()
    description: str | None = None

    @property
    def signature(self) -> str:
        """Concatenated argument types."""
        return _signature(self.args)

    def annotation(self, name: str) -> str | None:
        """Value of the annotation ``name`` or ``None``."""
        return _lookup(self.annotations, name)


@dataclass(frozen=True)
class Interface:
    """An interface: members keyed by name (insertion order = document order).

    Objects returned by :func:`builtin_interface` are shared: treat them as read-only.
    """

    name: str
    methods: dict[str, Method] = field(default_factory=dict)
    properties: dict[str, Property] = field(default_factory=dict)
    signals: dict[str, Signal] = field(default_factory=dict)
    annotations: tuple[Annotation, ...] = ()
    description: str | None = None

    def __post_init__(self) -> None:
        default = self.emits_changed
        props = {
            name: dataclasses.replace(prop, inherited_emits_changed=default)
            if prop.inherited_emits_changed != default
            else prop
            for name, prop in self.properties.items()
        }
        object.__setattr__(self, "properties", props)

    @property
    def emits_changed(self) -> EmitsChanged:
        """Interface-wide ``EmitsChangedSignal`` default (``"true"`` if not annotated)."""
        return _emits(_lookup(self.annotations, EMITS_CHANGED)) or "true"

    def _get(self, kind: str, table: Mapping[str, object], name: str) -> object:
        try:
            return table[name]
        except KeyError:
            raise UnknownMemberError(
                f"unknown {kind} {name!r} on interface {self.name!r}"
            ) from None

    def method(self, name: str) -> Method:
        """The method ``name``; :class:`UnknownMemberError` if there is none."""
        member = self._get("method", self.methods, name)
        assert isinstance(member, Method)
        return member

    def property(self, name: str) -> Property:
        """The property ``name``; :class:`UnknownMemberError` if there is none."""
        member = self._get("property", self.properties, name)
        assert isinstance(member, Property)
        return member

    def signal(self, name: str) -> Signal:
        """The signal ``name``; :class:`UnknownMemberError` if there is none."""
        member = self._get("signal", self.signals, name)
        assert isinstance(member, Signal)
        return member

    def annotation(self, name: str) -> str | None:
        """Value of the annotation ``name`` or ``None``."""
        return _lookup(self.annotations, name)


@dataclass(frozen=True)
class Node:
    """An object node: its interfaces and child nodes (``name`` is a path or ``None``)."""

    name: str | None = None
    interfaces: dict[str, Interface] = field(default_factory=dict)
    children: tuple[Node, ...] = ()

    def interface(self, name: str) -> Interface:
        """The interface ``name``; :class:`UnknownMemberError` if there is none."""
        try:
            return self.interfaces[name]
        except KeyError:
            where = f"node {self.name!r}" if self.name else "node"
            raise UnknownMemberError(f"unknown interface {name!r} on {where}") from None

"""SEF DER interface layer: D-Bus-style interface definitions (IDL) and typed values.

An *interface* (``edu.pdx.powerlab.demo``, ``sef.Agent``...) is defined in
D-Bus / AllJoyn introspection XML and groups methods, properties and signals,
each typed with a D-Bus type signature (``a(snn)``, ``a{sv}``...).  This
package provides:

* signatures: :func:`parse_signature`, :func:`parse_type`, :class:`TypeNode`;
* values: :func:`validate` (Python values, :class:`Variant` for ``v``) and the
  JSON mapping used on the MQTT bus: :func:`to_json`, :func:`from_json`,
  :func:`args_from_json`, :func:`args_to_json`;
* the model: :class:`Node`, :class:`Interface`, :class:`Method`,
  :class:`Property`, :class:`Signal`, :class:`Arg`, :class:`Annotation`;
* XML: :func:`load_xml`, :func:`load_file`, :func:`to_xml` (strict, safe for
  untrusted input, errors with line numbers);
* the demo interface's commands: :class:`Command`, :class:`EnergyEvent`,
  :func:`parse_events`;
* shipped interfaces: :func:`builtin_xml`, :func:`builtin_interface`,
  :data:`DEMO_INTERFACE`, :data:`AGENT_INTERFACE`.

Errors: :class:`InterfaceError` (bad definitions), :class:`SignatureError`
(bad signatures), :class:`TypeMismatch` (bad values); all are ``ValueError``.
"""

from __future__ import annotations

from ._builtin import (
    AGENT_INTERFACE,
    DEMO_INTERFACE,
    LATER_MEMBERS,
    builtin_interface,
    builtin_names,
    builtin_xml,
    is_earlier_revision,
)
from ._energy import IDLE_EVENT, Command, EnergyEvent, parse_events
from ._errors import InterfaceError, SignatureError, TypeMismatch, UnknownMemberError
from ._json import args_from_json, args_to_json, from_json, to_json
from ._model import (
    EMITS_CHANGED,
    NO_REPLY,
    Annotation,
    Arg,
    Interface,
    Method,
    Node,
    Property,
    Signal,
)
from ._signature import (
    TypeNode,
    is_valid_interface_name,
    is_valid_member_name,
    is_valid_object_path,
    parse_signature,
    parse_type,
)
from ._values import Variant, validate
from ._xml import MAX_XML_BYTES, load_file, load_xml
from ._xml_write import to_xml

__all__ = [
    "AGENT_INTERFACE",
    "DEMO_INTERFACE",
    "EMITS_CHANGED",
    "IDLE_EVENT",
    "LATER_MEMBERS",
    "MAX_XML_BYTES",
    "NO_REPLY",
    "Annotation",
    "Arg",
    "Command",
    "EnergyEvent",
    "Interface",
    "InterfaceError",
    "Method",
    "Node",
    "Property",
    "Signal",
    "SignatureError",
    "TypeMismatch",
    "TypeNode",
    "UnknownMemberError",
    "Variant",
    "args_from_json",
    "args_to_json",
    "builtin_interface",
    "builtin_names",
    "builtin_xml",
    "from_json",
    "is_earlier_revision",
    "is_valid_interface_name",
    "is_valid_member_name",
    "is_valid_object_path",
    "load_file",
    "load_xml",
    "parse_events",
    "parse_signature",
    "parse_type",
    "to_json",
    "to_xml",
    "validate",
]

"""Loading, validating and writing introspection XML."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sef.interface import (
    DEMO_INTERFACE,
    Annotation,
    Arg,
    Interface,
    InterfaceError,
    Method,
    Node,
    Property,
    Signal,
    UnknownMemberError,
    builtin_interface,
    builtin_names,
    builtin_xml,
    load_file,
    load_xml,
    to_xml,
)

# The XML of the seed report's Figure 4, verbatim (typographic quotes and all),
# without the "# types:" line that precedes it.
SEED_XML = """<node>
    <interface name="edu.pdx.powerlab.demo">
      <description language="en">
 Development and demonstration interface for battery and water heater  control.
      </description>
      <method name="EnergyMethod">
        <description language="en">
          An array of one or more energy command events; duration,cmd,rate
          Starttime for the sequence of commands is "now".
          If not defined, Duration defaults to "forever".
         </description>
         <arg name="cmds" type="a(snn)" direction="in"/>
         <description language="en">
           ARRAY[(string)cmd,(int_16)rateInKW,(int_16)DurationInSeconds,]
           Commands: "charge", "discharge", "idle", “shed”, “endshed”
         </description>
         <annotation name="org.freedesktop.DBus.Method.NoReply" value="true"/>
      </method>
      <property name=AssetName" type="s" access="read">
         <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal"
value=”False”/>
      </property>
      <property name="Telemetry" type="{sv}" access="read">
         <description language= "en">
           Required telemetry element is "TimeStamp" {su},
         </description>
         <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal"
value=”True”/>
      </property>
    </interface>
</node>
"""

RICH_XML = """<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
<!-- a comment -->
<node name="/org/example/Battery">
  <interface name="org.example.Battery">
    <description language="en">
      A battery.
        Indented second line.
    </description>
    <method name="SetPower">
      <arg name="kw" type="d" direction="in"/>
      <arg name="ok" type="b" direction="out">
        <description language="en">Accepted?</description>
      </arg>
      <annotation name="org.freedesktop.DBus.Deprecated" value="true"/>
    </method>
    <method name="Reset">
      <annotation name="org.freedesktop.DBus.Method.NoReply" value="TRUE"/>
    </method>
    <signal name="Alarm">
      <arg name="code" type="q"/>
      <arg type="a{sv}" direction="out"/>
    </signal>
    <property name="Limit" type="(nn)" access="readwrite"/>
    <property name="Setpoint" type="d" access="write">
      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="invalidates"/>
    </property>
    <property name="Serial" type="s" access="read"/>
    <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="const"/>
  </interface>
  <interface name="sef.Extra">
    <signal name="Tick"/>
  </interface>
  <node name="cell0">
    <interface name="org.example.Cell">
      <property name="Volts" type="d" access="read"/>
    </interface>
    <node name="sensor/a"/>
  </node>
  <node name="cell1"/>
</node>
"""


def _error(text: str | bytes) -> InterfaceError:
    with pytest.raises(InterfaceError) as info:
        load_xml(text, "t.xml")
    return info.value


# --------------------------------------------------------------------------- shipped files


def test_shipped_demo_interface() -> None:
    node = load_xml(builtin_xml(DEMO_INTERFACE), "demo.xml")
    assert node.name is None and node.children == ()
    iface = node.interface(DEMO_INTERFACE)
    assert list(iface.methods) == ["EnergyMethod"]
    assert list(iface.properties) == ["AssetName", "Telemetry", "Nameplate"]
    assert iface.signals == {}
    method = iface.method("EnergyMethod")
    assert method.no_reply is True
    assert method.in_signature == "a(snn)" and method.out_signature == ""
    assert method.in_args == (method.args[0],) and method.args[0].name == "cmds"
    assert method.args[0].description is not None and "endshed" in method.args[0].description
    assert method.description is not None
    assert "(cmd, rate_kW, duration_s)" in method.description
    asset, telemetry = iface.property("AssetName"), iface.property("Telemetry")
    assert (asset.type, asset.access, asset.emits_changed) == ("s", "read", "false")
    assert (telemetry.type, telemetry.access, telemetry.emits_changed) == ("a{sv}", "read", "true")
    assert asset.readable and not asset.writable
    assert telemetry.description is not None and "uint32 Unix time" in telemetry.description
    assert iface.description == (
        "Development and demonstration interface for battery and water heater control."
    )
    assert builtin_interface(DEMO_INTERFACE) == iface


def test_shipped_agent_interface() -> None:
    iface = builtin_interface("sef.Agent")
    assert iface.method("Rebirth").no_reply and iface.method("Rebirth").args == ()
    ping = iface.method("Ping")
    assert not ping.no_reply
    assert ping.out_args == (Arg("now", "d", "out", ping.out_args[0].description),)
    assert ping.out_signature == "d" and ping.in_signature == ""
    assert {"edu.pdx.powerlab.demo", "sef.Agent"} <= set(builtin_names())


def test_builtin_unknown() -> None:
    for name in ("no.such.Interface", "../../etc/passwd", "x"):
        with pytest.raises(KeyError):
            builtin_xml(name)
        with pytest.raises(KeyError):
            builtin_interface(name)


def test_unknown_member_errors() -> None:
    iface = builtin_interface(DEMO_INTERFACE)
    with pytest.raises(KeyError) as info:
        iface.method("Foo")
    assert str(info.value) == "unknown method 'Foo' on interface 'edu.pdx.powerlab.demo'"
    assert isinstance(info.value, InterfaceError) and isinstance(info.value, UnknownMemberError)
    with pytest.raises(InterfaceError, match="unknown property 'Foo'"):
        iface.property("Foo")
    with pytest.raises(UnknownMemberError, match="unknown signal"):
        iface.signal("Foo")
    with pytest.raises(UnknownMemberError, match="unknown interface"):
        Node().interface("a.b")


# --------------------------------------------------------------------------- round trips


def test_round_trip_demo() -> None:
    node = load_xml(builtin_xml(DEMO_INTERFACE))
    text = to_xml(node)
    assert load_xml(text) == node
    assert load_xml(to_xml(node, doctype=True)) == node
    assert to_xml(load_xml(text)) == text


def test_rich_xml_model_and_round_trip() -> None:
    node = load_xml(RICH_XML)
    assert node.name == "/org/example/Battery"
    iface = node.interface("org.example.Battery")
    assert iface.description == "A battery.\n  Indented second line."
    set_power = iface.method("SetPower")
    assert [a.direction for a in set_power.args] == ["in", "out"]
    assert set_power.out_args[0].description == "Accepted?"
    assert set_power.annotation("org.freedesktop.DBus.Deprecated") == "true"
    assert iface.method("Reset").no_reply  # case-insensitive "TRUE"
    alarm = iface.signal("Alarm")
    assert alarm.signature == "qa{sv}" and alarm.args[1].name is None
    assert all(a.direction == "out" for a in alarm.args)
    limit, setpoint, serial = (iface.property(n) for n in ("Limit", "Setpoint", "Serial"))
    assert limit.readable and limit.writable
    assert setpoint.writable and not setpoint.readable
    assert setpoint.emits_changed == "invalidates"  # own annotation wins
    assert serial.emits_changed == "const" == limit.emits_changed  # inherited
    assert [c.name for c in node.children] == ["cell0", "cell1"]
    assert node.children[0].children[0].name == "sensor/a"
    assert node.children[0].interface("org.example.Cell").property("Volts").type == "d"
    assert load_xml(to_xml(node)) == node
    assert load_xml(to_xml(node, doctype=True).encode()) == node


def test_round_trip_programmatic_model() -> None:
    iface = Interface(
        "a.b",
        methods={"M": Method("M", (Arg("x", "as"), Arg("y", "v", "out")), (), "multi\nline")},
        properties={"P": Property("P", "a{sv}", "readwrite", (Annotation("a.b.c", "1"),))},
        signals={"S": Signal("S", (Arg("z", "(ii)", "out", "coords"),))},
        annotations=(Annotation("org.freedesktop.DBus.Property.EmitsChangedSignal", "false"),),
        description="desc & <escaped>",
    )
    node = Node("/", {"a.b": iface}, (Node("c"),))
    assert iface.property("P").emits_changed == "false"
    assert load_xml(to_xml(node)) == node


def test_load_file(tmp_path: Path) -> None:
    path = tmp_path / "demo.xml"
    path.write_text(builtin_xml(DEMO_INTERFACE), encoding="utf-8")
    assert load_file(path) == load_xml(builtin_xml(DEMO_INTERFACE))
    broken = tmp_path / "broken.xml"
    broken.write_text(SEED_XML, encoding="utf-8")
    with pytest.raises(InterfaceError) as info:
        load_file(broken)
    assert str(info.value).startswith(f"{broken}:19: ")
    with pytest.raises(OSError):
        load_file(tmp_path / "missing.xml")


# --------------------------------------------------------------------------- errors


def test_seed_errors_one_by_one() -> None:
    err = _error(SEED_XML)
    assert err.line == 19 and err.source == "t.xml"
    assert str(err).startswith("t.xml:19: malformed XML")
    fixed = SEED_XML.replace('name=AssetName"', 'name="AssetName"')
    assert _error(fixed).line == 21  # value=”False”
    fixed = fixed.replace("”False”", '"false"').replace("”True”", '"true"')
    err = _error(fixed)  # the stray second <description>
    assert err.line == 13 and "duplicate <description>" in err.message
    lines = fixed.splitlines(keepends=True)
    del lines[12:16]  # drop the stray description
    fixed = "".join(lines)
    err = _error(fixed)  # Telemetry type "{sv}"
    assert err.line == 19 and "array element" in err.message
    node = load_xml(fixed.replace('"{sv}"', '"a{sv}"'))
    assert node.interface(DEMO_INTERFACE).property("AssetName").emits_changed == "false"


def test_seed_with_types_line() -> None:
    err = _error("# types: ‘q’=uint16_t, 'n'=int16_t\n" + SEED_XML)
    assert err.line == 1 and "malformed XML" in err.message


def test_truncated_file() -> None:
    text = builtin_xml(DEMO_INTERFACE)
    cut = text[: text.index('<property name="Telemetry"') + 20]
    err = _error(cut)
    assert err.line == cut.count("\n") + 1
    assert str(err).startswith(f"t.xml:{err.line}: malformed XML")
    assert _error("").line == 1


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ('<method name="M">\n<arg name="a" type="a{vs}" direction="in"/>\n</method>', "dict key"),
        ('<method name="M">\n<arg name="a" type="ii" direction="in"/>\n</method>', "exactly one"),
        ('<method name="M">\n<arg name="a" type="h"/>\n</method>', "unix file descriptor"),
        (
            '<method name="M">\n<arg name="a" type="i" direction="sideways"/>\n</method>',
            "direction",
        ),
        ('<signal name="S">\n<arg name="a" type="i" direction="in"/>\n</signal>', "signal arg"),
        (
            '<method name="M">\n<argument name="a" type="i"/>\n</method>',
            "unknown element <argument>",
        ),
        ('<method name="M">\n<arg name="a" type="i" dir="in"/>\n</method>', "unknown attribute"),
        ('<method name="M">\n<arg name="a" direction="in"/>\n</method>', "missing the 'type'"),
        ('<method name="M">\n<arg name="a-b" type="i"/>\n</method>', "invalid arg name"),
        (
            '<method name="M">\n<arg name="a" type="i"/><arg name="a" type="s"/>\n</method>',
            "duplicate arg",
        ),
        ('<method name="M"/>\n<property name="M" type="s" access="read"/>', "duplicate member"),
        ('<method name="M"/>\n<method name="M"/>', "duplicate member"),
        ('<method name="M"/>\n<method name="2M"/>', "invalid method name"),
        ('<method name="M"/>\n<property name="P" type="s" access="rw"/>', "access"),
        ('<method name="M"/>\n<property name="P" type="s"/>', "missing the 'access'"),
        ('<method name="M"/>\n<property name="P" type="{sv}" access="read"/>', "array element"),
        (
            '<method name="M"/>\n'
            '<annotation name="org.freedesktop.DBus.Method.NoReply" value="yes"/>',
            "must be 'true' or 'false'",
        ),
        (
            '<method name="M"/>\n<property name="P" type="s" access="read">'
            '<annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="maybe"/>'
            "</property>",
            "EmitsChangedSignal must be one of",
        ),
        ('<method name="M"/>\n<annotation name="x" value="1"/>', "invalid annotation name"),
        (
            '<method name="M"/>\n'
            '<annotation name="a.b" value="1"/><annotation name="a.b" value="2"/>',
            "duplicate annotation",
        ),
        ('<method name="M"/>\nstray text', "unexpected text"),
        (
            '<method name="M"/>\n<description>a</description><description>b</description>',
            "duplicate <description>",
        ),
    ],
)
def test_error_line_numbers(body: str, fragment: str) -> None:
    # the offending element is always on line 3
    text = f'<node>\n<interface name="a.b">{body}\n</interface>\n</node>\n'
    text = text.replace('<interface name="a.b">', '<interface name="a.b">\n', 1)
    text = text.replace('<method name="M">\n', '<method name="M">', 1)
    text = text.replace('<method name="M"/>\n', '<method name="M"/>', 1)
    text = text.replace('<signal name="S">\n', '<signal name="S">', 1)
    err = _error(text)
    assert fragment in err.message, err
    offending = next(i for i, line in enumerate(text.splitlines(), 1) if i >= 3 and line.strip())
    assert err.line == offending, (err, text)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("<interface/>", 1, "root element must be <node>"),
        ('<node>\n<interface name="nodots"/>\n</node>', 2, "invalid interface name"),
        ('<node>\n<interface name="a..b"/>\n</node>', 2, "invalid interface name"),
        (f'<node>\n<interface name="a.{"b" * 300}"/>\n</node>', 2, "invalid interface name"),
        (
            '<node>\n<interface name="a.b"/>\n<interface name="a.b"/></node>',
            3,
            "duplicate interface",
        ),
        ('<node name="relative"/>', 1, "absolute object path"),
        ('<node>\n<node name="/abs"/></node>', 2, "relative object path"),
        ("<node>\n<node/></node>", 2, "missing the 'name'"),
        ('<node>\n<node name="a"/>\n<node name="a"/></node>', 3, "duplicate child node"),
        ('<node>\n<annotation name="a.b" value="c"/></node>', 2, "unknown element"),
        ('<node xmlns="urn:x"/>', 1, "root element must be <node>"),
    ],
)
def test_structure_errors(text: str, line: int, fragment: str) -> None:
    err = _error(text)
    assert err.line == line and fragment in err.message, err


def test_security() -> None:
    laughs = (
        '<?xml version="1.0"?>\n<!DOCTYPE node [\n <!ENTITY a "aaaaaaaaaa">\n'
        ' <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">\n'
        ' <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">\n]>\n'
        '<node><interface name="a.b"><description>&c;</description></interface></node>'
    )
    assert isinstance(_error(laughs), InterfaceError)
    xxe = (
        '<!DOCTYPE node [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
        '<node><interface name="a.b"><description>&x;</description></interface></node>'
    )
    assert isinstance(_error(xxe), InterfaceError)
    assert "not defined" in _error("<node>&undefined;</node>").message
    big = "<node>" + "<!--" + "x" * (256 * 1024) + "--></node>"
    assert "too large" in _error(big).message
    assert "too large" in _error(big.encode()).message
    err = _error("<!DOCTYPE foo>\n<node/>")
    assert "DOCTYPE" in err.message


def test_encodings() -> None:
    text = '<?xml version="1.0" encoding="UTF-8"?>\n<node><interface name="a.b"/></node>'
    assert load_xml(text) == load_xml(text.encode())
    latin = (
        '<?xml version="1.0" encoding="ISO-8859-1"?>\n<node><interface name="a.b">'
        "<description>caf\xe9</description></interface></node>"
    )
    assert load_xml(latin.encode("latin-1")).interface("a.b").description == "caf\xe9"
    assert load_xml(latin).interface("a.b").description == "caf\xe9"
    assert isinstance(_error("<node>\ud800</node>"), InterfaceError)


# --------------------------------------------------------------------------- fuzzing


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_arbitrary_input_only_raises_interface_error(data: str | bytes) -> None:
    with contextlib.suppress(InterfaceError):
        load_xml(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_xml_only_raises_interface_error(data: st.DataObject) -> None:
    text = RICH_XML if data.draw(st.booleans()) else builtin_xml(DEMO_INTERFACE)
    cut = data.draw(st.integers(0, len(text)))
    junk = data.draw(st.text(alphabet="<>/=\"'& ax{}()", max_size=5))
    end = data.draw(st.integers(cut, min(len(text), cut + 5)))
    mutated = text[:cut] + junk + text[end:]
    try:
        node = load_xml(mutated)
    except InterfaceError as exc:
        assert exc.line is None or exc.line >= 1
    else:
        assert load_xml(to_xml(node)) == node

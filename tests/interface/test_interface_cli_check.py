"""``sef interface check FILE`` (the typer app in sef.cli.interface)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from sef.cli.interface import app
from sef.interface import DEMO_INTERFACE, builtin_xml

runner = CliRunner()
ENV = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


def _check(path: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["check", str(path)], env=ENV)
    return result.exit_code, result.output


def test_check_shipped_demo(tmp_path: Path) -> None:
    path = tmp_path / "demo.xml"
    path.write_text(builtin_xml(DEMO_INTERFACE), encoding="utf-8")
    code, output = _check(path)
    assert code == 0, output
    for word in (
        DEMO_INTERFACE,
        "EnergyMethod",
        "cmds",
        "a(snn)",
        "no reply",
        "AssetName",
        "Telemetry",
        "a{sv}",
        "emits_changed=false",
        "emits_changed=true",
        "read",
    ):
        assert word in output, word
    assert "1 interface, 1 method, 3 properties, 0 signals" in output


def test_check_agent_and_signals(tmp_path: Path) -> None:
    path = tmp_path / "x.xml"
    path.write_text(
        '<node><interface name="a.b"><method name="Ping"><arg name="now" type="d" '
        'direction="out"/></method><signal name="Alarm"><arg name="code" type="q"/></signal>'
        '<property name="Limit" type="n" access="readwrite"/></interface>'
        '<node name="child"><interface name="c.d"/></node></node>',
        encoding="utf-8",
    )
    code, output = _check(path)
    assert code == 0, output
    for word in ("Ping", "now: d", "Alarm", "code: q", "Limit", "readwrite", "child", "c.d"):
        assert word in output, word
    assert "2 interfaces, 1 method, 1 property, 1 signal" in output


def test_check_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.xml"
    path.write_text(
        '<node>\n  <interface name="a.b">\n    <method name="M">\n'
        '      <arg name="x" type="a{vs}" direction="in"/>\n    </method>\n'
        "  </interface>\n</node>\n",
        encoding="utf-8",
    )
    code, output = _check(path)
    assert code == 1
    assert f"{path}:4:" in output
    assert "dict key must be a basic type" in output


def test_check_malformed_xml(tmp_path: Path) -> None:
    path = tmp_path / "seed.xml"
    path.write_text('<node>\n<interface name="a.b">\n<property name=P" type="s"/>\n', "utf-8")
    code, output = _check(path)
    assert code == 1 and f"{path}:3:" in output and "malformed XML" in output


def test_check_missing_file(tmp_path: Path) -> None:
    code, output = _check(tmp_path / "nope.xml")
    assert code != 0
    assert "nope.xml" in output and "cannot read" in output
    code, output = _check(tmp_path)  # a directory
    assert code != 0 and "cannot read" in output

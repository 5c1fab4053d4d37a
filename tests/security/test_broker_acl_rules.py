"""The generated Mosquitto ACL and configuration, checked as text (the broker tests run
them on a real Mosquitto)."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from sef.broker import DEFAULT_BUDGET, MAX_PACKET_BYTES
from sef.security import (
    CertificateAuthority,
    IssuedRecord,
    Role,
    SecurityError,
    acl_rules,
    broker_pid,
    identity_of,
    load_certificate,
    reload_broker,
    write_broker_acl,
    write_broker_config,
)
from sef.security._broker_config import check_topic_root


def record(
    identity: str,
    role: Role,
    groups: tuple[str, ...] = (),
    home: str | None = None,
    *,
    revoked: bool = False,
) -> IssuedRecord:
    return IssuedRecord(identity, role, groups, home, 1, "2030-01-01T00:00:00+00:00", revoked)


FLEET = [
    record("ems-1", Role.EMS),
    record("bat-a", Role.AGENT, ("g1", "g3"), "h1"),
    record("bat-b", Role.AGENT, ("g2",), "h2"),
    record("bat-c", Role.AGENT, ("g1",), "h1"),
    record("gw-h1", Role.GATEWAY, (), "h1"),
    record("op-1", Role.OPERATOR),
    record("broker", Role.BROKER),
    record("gone", Role.AGENT, (), "h1", revoked=True),
]


def block(text: str, identity: str) -> list[str]:
    """The rule lines of ``user identity``'s block."""
    lines = text.splitlines()
    start = lines.index(f"user {identity}") + 1
    out = []
    for line in lines[start:]:
        if not line or line.startswith("user "):
            break
        if not line.startswith("#"):
            out.append(line)
    return out


def test_agent_rules() -> None:
    assert block(acl_rules(FLEET), "bat-a") == [
        "topic write sef/agents/bat-a/status",
        "topic write sef/agents/bat-a/about",
        "topic write sef/agents/bat-a/seal",
        "topic write sef/agents/bat-a/interfaces/#",
        "topic write sef/agents/bat-a/props/#",
        "topic write sef/agents/bat-a/signals/#",
        "topic readwrite sef/interfaces/+",
        "topic write sef/clients/+/reply",
        "topic read sef/agents/bat-a/#",
        "topic read sef/groups/g1/call/#",
        "topic read sef/groups/g3/call/#",
        "topic read sef/hosts/+/status",
        "topic read sef/clients/bat-a/reply",
    ]


def test_ems_rules() -> None:
    assert block(acl_rules(FLEET), "ems-1") == [
        "topic read sef/#",
        "topic write sef/agents/+/call/#",
        "topic write sef/groups/+/call/#",
        "topic write sef/hosts/ems-1/status",
        "topic write sef/clients/ems-1/reply",
        "topic write sef/interfaces/+",
    ]


def test_gateway_rules_cover_only_its_homes_agents() -> None:
    assert block(acl_rules(FLEET), "gw-h1") == [
        "topic readwrite sef/gateways/h1/#",
        "topic write sef/agents/bat-a/status",
        "topic write sef/agents/bat-a/about",
        "topic write sef/agents/bat-a/seal",
        "topic write sef/agents/bat-a/interfaces/#",
        "topic write sef/agents/bat-a/props/#",
        "topic write sef/agents/bat-a/signals/#",
        "topic read sef/agents/bat-a/call/#",
        "topic read sef/clients/bat-a/reply",
        "topic write sef/agents/bat-c/status",
        "topic write sef/agents/bat-c/about",
        "topic write sef/agents/bat-c/seal",
        "topic write sef/agents/bat-c/interfaces/#",
        "topic write sef/agents/bat-c/props/#",
        "topic write sef/agents/bat-c/signals/#",
        "topic read sef/agents/bat-c/call/#",
        "topic read sef/clients/bat-c/reply",
        "topic read sef/groups/g1/call/#",
        "topic read sef/groups/g3/call/#",
        "topic write sef/clients/+/reply",
        "topic read sef/hosts/+/status",
        "topic write sef/interfaces/+",
    ]


def test_operator_broker_revoked_and_homeless_gateway() -> None:
    fleet = [*FLEET, record("gw-x", Role.GATEWAY)]
    text = acl_rules(fleet)
    assert block(text, "op-1") == ["topic read sef/#"]
    assert block(text, "broker") == []
    assert block(text, "gw-x") == []
    assert "gone" not in text  # a revoked identity has no block: no rights at all


def test_the_topic_root_is_used_everywhere() -> None:
    text = acl_rules(FLEET, "site/7")
    rules = [line for line in text.splitlines() if line.startswith("topic ")]
    assert rules and all(line.split()[2].startswith("site/7/") for line in rules)


def test_no_pattern_rules() -> None:
    """``pattern`` lines would apply to every user (an operator could pose as an agent of
    its own name); the generator names each identity."""
    assert not any(line.startswith("pattern") for line in acl_rules(FLEET).splitlines())


def test_a_tampered_index_entry_is_left_out(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    evil = record("x\nuser ems-1\ntopic write sef/#", Role.AGENT)
    text = acl_rules([evil, record("ok", Role.AGENT, ("g/#",))])
    assert "topic write sef/#" not in text and "user ok" not in text
    assert len([r for r in caplog.records if "left out of the broker ACL" in r.message]) == 2


@pytest.mark.parametrize("root", ["", "a/+", "a/#", "a b", "/a", "a/", "a//b", "a\nb", "x" * 129])
def test_invalid_roots_are_refused(root: str) -> None:
    with pytest.raises(SecurityError, match="invalid topic root"):
        acl_rules(FLEET, root)


IDS = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,20}", fullmatch=True)


@given(
    agents=st.lists(
        st.tuples(IDS, st.lists(IDS, max_size=3, unique=True), st.one_of(st.none(), IDS)),
        max_size=8,
        unique_by=lambda a: a[0],
    ),
    gateways=st.lists(st.tuples(IDS, IDS), max_size=3, unique_by=lambda g: g[0]),
)
def test_only_the_ems_writes_calls_and_agents_write_only_their_own_topics(
    agents: list[tuple[str, list[str], str | None]], gateways: list[tuple[str, str]]
) -> None:
    ids = [a[0] for a in agents]
    gateways = [g for g in gateways if g[0] not in ids]
    records = [record(i, Role.AGENT, tuple(g), h) for i, g, h in agents]
    records += [record(i, Role.GATEWAY, (), h) for i, h in gateways]
    text = acl_rules(records)
    for line in text.splitlines():
        assert line == line.strip() and "\r" not in line
        words = line.split()
        if words and words[0] == "topic":
            assert len(words) == 3 and words[1] in ("read", "write", "readwrite")
            if words[1] != "read":
                assert "/call" not in words[2]
    for agent_id, groups, _ in agents:
        for line in block(text, agent_id):
            _, access, topic = line.split()
            if access == "readwrite":  # interface XML once per hash, checked by readers
                assert topic == "sef/interfaces/+"
            elif access == "write":
                assert topic.startswith(f"sef/agents/{agent_id}/") or (
                    topic == "sef/clients/+/reply"
                )
            else:
                assert topic in (
                    f"sef/agents/{agent_id}/#",
                    "sef/hosts/+/status",
                    f"sef/clients/{agent_id}/reply",
                    *(f"sef/groups/{g}/call/#" for g in groups),
                )
    for gateway_id, home in gateways:
        own = {a[0] for a in agents if a[2] == home}
        for line in block(text, gateway_id):
            _, access, topic = line.split()
            parts = topic.split("/")
            if parts[1] == "agents":
                assert parts[2] in own
            if access != "read" and parts[1] == "gateways":
                assert parts[2] == home


@given(st.text(max_size=40))
def test_check_topic_root_accepts_only_safe_roots(root: str) -> None:
    try:
        checked = check_topic_root(root)
    except SecurityError:
        return
    assert checked == root and root
    assert not any(c in root for c in "+# \t\n\r\x00")


# -- files ---------------------------------------------------------------------------------


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    authority = CertificateAuthority.init(tmp_path / "pki")
    authority.issue("bat-1", Role.AGENT, groups=("g1",))
    return authority


def test_broker_config_file(ca: CertificateAuthority, tmp_path: Path) -> None:
    out = tmp_path / "broker"
    files = write_broker_config(ca, out, port=8884, user="root")
    conf = files.conf.read_text().splitlines()
    assert "listener 8884" in conf
    assert f"max_packet_size {MAX_PACKET_BYTES}" in conf
    assert f"max_queued_messages {DEFAULT_BUDGET.messages}" in conf
    assert "persistence false" in conf and "set_tcp_nodelay true" in conf
    assert f"pid_file {out / 'mosquitto.pid'}" in conf
    assert "user root" in conf
    assert files.ca.read_bytes() == ca.ca_path.read_bytes()
    assert files.crl.read_bytes() == ca.crl_path.read_bytes()
    cert = load_certificate(files.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    hosts = san.get_values_for_type(x509.DNSName)
    hosts += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    assert {"localhost", "127.0.0.1", "::1", socket.gethostname()} <= set(hosts)


def test_broker_certificate_is_reissued_only_when_unusable(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    out = tmp_path / "broker"
    files = write_broker_config(ca, out)
    first = files.cert.read_bytes()
    write_broker_config(ca, out, port=9999)
    assert files.cert.read_bytes() == first
    ca.revoke("broker")
    write_broker_config(ca, out)
    renewed = load_certificate(files.cert.read_bytes())
    assert files.cert.read_bytes() != first
    assert ca.trust_store().verify(renewed, role=Role.BROKER).id == "broker"


def test_broker_id_of_another_role_is_refused(ca: CertificateAuthority, tmp_path: Path) -> None:
    with pytest.raises(SecurityError, match="already issued with role agent"):
        write_broker_config(ca, tmp_path / "broker", broker_id="bat-1")


def test_write_broker_acl_keeps_the_root_and_follows_revocation(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    out = tmp_path / "broker"
    files = write_broker_config(ca, out, root="site")
    assert "topic write site/agents/bat-1/status" in files.acl.read_text()
    ca.revoke("bat-1")
    write_broker_acl(ca, out)
    text = files.acl.read_text()
    assert "bat-1" not in text and "# topic root: site" in text
    assert files.crl.read_bytes() == ca.crl_path.read_bytes()
    ca.issue("bat-1", Role.AGENT)  # a new certificate for the same identity
    write_broker_acl(ca, out)
    assert "user bat-1" in files.acl.read_text()
    assert identity_of(load_certificate(ca.cert_path("bat-1").read_bytes())).groups == ()


def test_reload_ignores_a_stale_pid_file(ca: CertificateAuthority, tmp_path: Path) -> None:
    out = tmp_path / "broker"
    files = write_broker_config(ca, out)
    assert reload_broker(out) is None  # no pid file: no broker running
    files.pid.write_text(f"{os.getpid()}\n")  # a live process that is not Mosquitto
    assert broker_pid(out) is None and reload_broker(out) is None
    files.pid.write_text("not a number")
    assert reload_broker(out) is None


def test_broker_certificate_is_reissued_for_new_hosts_or_another_id(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    out = tmp_path / "broker"
    files = write_broker_config(ca, out, hosts=("mqtt.lan", "10.1.2.3"))
    first = files.cert.read_bytes()
    write_broker_config(ca, out, hosts=("mqtt.lan",))  # a subset: kept
    assert files.cert.read_bytes() == first
    write_broker_config(ca, out, hosts=("mqtt.lan", "mqtt.example"))  # a new name
    second = files.cert.read_bytes()
    assert second != first
    write_broker_config(ca, out, broker_id="broker-2")
    assert identity_of(load_certificate(files.cert.read_bytes())).id == "broker-2"


def test_a_broker_certificate_near_its_end_is_renewed(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    out = tmp_path / "broker"
    files = write_broker_config(ca, out, days=20)  # within RENEW_BEFORE (30 days)
    first = files.cert.read_bytes()
    write_broker_config(ca, out)
    renewed = identity_of(load_certificate(files.cert.read_bytes()))
    assert files.cert.read_bytes() != first
    assert (renewed.not_after - renewed.not_before).days >= 89

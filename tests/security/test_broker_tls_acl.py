"""Acceptance: a real Mosquitto 2.0 with the configuration of ``sef pki broker-config``
(mutual TLS, identity = certificate common name, per-identity ACL) enforces who may
connect, publish and read (issue 12)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from secure_stack import (
    NOT_AUTHORIZED,
    Probe,
    SecureBroker,
    make_pki,
    running_secure_broker,
    security_for,
    tls_of,
    wait_until,
)
from sef.security import CertificateAuthority, Role

IDENTITIES = [
    ("ems-1", Role.EMS, (), None),
    ("bat-a", Role.AGENT, ("g1",), "h1"),
    ("bat-b", Role.AGENT, ("g2",), "h2"),
    ("bat-c", Role.AGENT, ("g1",), "h1"),
    ("gw-h1", Role.GATEWAY, (), "h1"),
    ("op-1", Role.OPERATOR, (), None),
]


@pytest.fixture
def pki(tmp_path: Path) -> CertificateAuthority:
    return make_pki(tmp_path, IDENTITIES)


@pytest.fixture
def broker(pki: CertificateAuthority, tmp_path: Path) -> Iterator[SecureBroker]:
    with running_secure_broker(pki, tmp_path) as running:
        yield running


@pytest.fixture
def probes() -> Iterator[list[Probe]]:
    opened: list[Probe] = []
    yield opened
    for probe in opened:
        probe.close()


def connect(
    broker: SecureBroker, probes: list[Probe], identity: str, client_id: str | None = None
) -> Probe:
    """A connected MQTT 5 probe with ``identity``'s certificate."""
    ca = broker.ca
    record = ca.current()[identity]
    security = security_for(ca, identity, record.role, record.groups, record.home)
    probe = Probe(broker.port, security.client_tls(), client_id or identity)
    probes.append(probe)
    outcome = probe.connect()
    assert outcome == "connected", f"{identity}: {outcome}\n{broker.log_text}"
    return probe


def observer(broker: SecureBroker, probes: list[Probe]) -> Probe:
    """The operator, reading everything under the root (what the EMS would see)."""
    probe = connect(broker, probes, "op-1")
    assert probe.subscribe("sef/#") == 1
    return probe


# -- who may connect -----------------------------------------------------------------------


def test_a_client_with_a_certificate_of_the_ca_connects(
    broker: SecureBroker, probes: list[Probe]
) -> None:
    connect(broker, probes, "bat-a")
    assert "as bat-a" in broker.log_text  # the client id is the certificate's identity


def test_no_client_certificate_is_refused(
    broker: SecureBroker, pki: CertificateAuthority, probes: list[Probe]
) -> None:
    probe = Probe(broker.port, tls_of(None, pki), "anonymous")
    probes.append(probe)
    assert probe.connect() != "connected"
    assert not probe.connected


def test_a_certificate_of_another_ca_is_refused(
    broker: SecureBroker, tmp_path: Path, probes: list[Probe]
) -> None:
    other = make_pki(tmp_path / "other", [("bat-a", Role.AGENT, ("g1",), "h1")])
    forged = security_for(other, "bat-a", Role.AGENT, ("g1",), "h1")
    # trust our broker's CA (so the failure is the broker refusing the client, not us)
    context = forged.client_tls()
    context.load_verify_locations(cafile=str(broker.files.ca))
    probe = Probe(broker.port, context, "bat-a")
    probes.append(probe)
    assert probe.connect() != "connected"
    assert "certificate verify failed" in broker.log_text


def test_plaintext_mqtt_to_the_tls_port_fails(broker: SecureBroker, probes: list[Probe]) -> None:
    probe = Probe(broker.port, None, "plain")
    probes.append(probe)
    assert probe.connect() != "connected"


def test_the_client_refuses_a_broker_of_another_ca(
    broker: SecureBroker, tmp_path: Path, probes: list[Probe]
) -> None:
    other = make_pki(tmp_path / "other")
    security = security_for(other, "bat-a", Role.AGENT, ("g1",), "h1")
    probe = Probe(broker.port, security.client_tls(), "bat-a")
    probes.append(probe)
    outcome = probe.connect()
    assert "CERTIFICATE_VERIFY_FAILED" in outcome or "certificate verify failed" in outcome


def test_a_revoked_certificate_is_refused_once_the_broker_reloads(
    broker: SecureBroker, pki: CertificateAuthority, probes: list[Probe]
) -> None:
    watcher = observer(broker, probes)
    still_connected = connect(broker, probes, "bat-b")
    assert still_connected.subscribe("sef/agents/bat-b/#") == 1
    revoked_tls = security_for(pki, "bat-b", Role.AGENT, ("g2",), "h2").client_tls()
    pki.revoke("bat-b")
    broker.reload()  # new ACL and CRL, SIGHUP: Mosquitto 2.0.11 re-reads both

    late = Probe(broker.port, revoked_tls, "bat-b")
    probes.append(late)
    assert late.connect() != "connected"
    assert "certificate verify failed" in broker.log_text
    connect(broker, probes, "bat-a")  # others still connect after the reload

    # a revoked identity that was connected stays connected, but has no rights left:
    # its publishes are denied and nothing is delivered to it
    assert still_connected.connected
    assert still_connected.publish("sef/agents/bat-b/status", b"revoked") == NOT_AUTHORIZED
    ems = connect(broker, probes, "ems-1")
    assert ems.publish("sef/agents/bat-b/call/x.y/M", b"to-revoked") == 0
    watcher.wait_for("sef/agents/bat-b/call/x.y/M", b"to-revoked")
    assert watcher.received("sef/agents/bat-b/status") == []
    assert still_connected.messages == []


def test_without_a_reload_the_broker_still_accepts_a_revoked_certificate(
    broker: SecureBroker, pki: CertificateAuthority, probes: list[Probe]
) -> None:
    """Mosquitto reads its CRL only at start and on SIGHUP: ``sef pki revoke`` must be
    followed by a reload (``--broker-dir`` does it)."""
    context = security_for(pki, "bat-b", Role.AGENT, ("g2",), "h2").client_tls()
    pki.revoke("bat-b")
    probe = Probe(broker.port, context, "bat-b")
    probes.append(probe)
    assert probe.connect() == "connected"


# -- what an agent may publish and read -------------------------------------------------------


@pytest.mark.parametrize(
    "topic",
    [
        "sef/agents/bat-b/call/org.sef.Battery/EnergyMethod",  # B's call topic
        "sef/agents/bat-b/status",  # posing as B
        "sef/agents/bat-b/about",
        "sef/agents/bat-b/seal",
        "sef/agents/bat-b/props/org.sef.Battery/Telemetry",
        "sef/agents/bat-b/signals/org.sef.Battery/Alarm",
        "sef/groups/g1/call/org.sef.Battery/EnergyMethod",  # a group call (its own group)
        "sef/groups/g2/call/org.sef.Battery/EnergyMethod",
        "sef/agents/bat-a/call/org.sef.Battery/EnergyMethod",  # a call to itself
        "sef/hosts/ems-1/status",  # posing as the EMS
        "sef/gateways/h1/status",
        "other/topic",
    ],
)
def test_an_agent_cannot_publish_outside_its_own_topics(
    broker: SecureBroker, probes: list[Probe], topic: str
) -> None:
    watcher = observer(broker, probes)
    assert watcher.subscribe("other/#") in (1, NOT_AUTHORIZED)
    agent = connect(broker, probes, "bat-a")
    assert agent.publish(topic, b"forged") == NOT_AUTHORIZED
    assert agent.publish("sef/agents/bat-a/status", b"sentinel") == 0
    watcher.wait_for("sef/agents/bat-a/status", b"sentinel")
    assert (topic, b"forged") not in watcher.messages
    assert agent.connected


def test_an_agent_publishes_its_own_topics_and_replies(
    broker: SecureBroker, probes: list[Probe]
) -> None:
    watcher = observer(broker, probes)
    agent = connect(broker, probes, "bat-a")
    topics = [
        "sef/agents/bat-a/status",
        "sef/agents/bat-a/about",
        "sef/agents/bat-a/seal",
        "sef/agents/bat-a/interfaces/org.sef.Battery",
        "sef/agents/bat-a/props/org.sef.Battery/Telemetry",
        "sef/agents/bat-a/signals/org.sef.Battery/Alarm",
        "sef/clients/ems-1/reply",
    ]
    for topic in topics:
        assert agent.publish(topic, b"mine") == 0, topic
    for topic in topics:
        watcher.wait_for(topic, b"mine")


def test_an_agent_reads_only_its_own_and_its_groups_calls(
    broker: SecureBroker, probes: list[Probe]
) -> None:
    agent = connect(broker, probes, "bat-a")
    for pattern in ("sef/agents/bat-b/call/#", "sef/groups/g2/call/#", "sef/#"):
        agent.subscribe(pattern)  # Mosquitto grants; its ACL filters every delivery
    ems = connect(broker, probes, "ems-1")
    assert ems.publish("sef/agents/bat-b/call/x.y/M", b"for-b") == 0
    assert ems.publish("sef/groups/g2/call/x.y/M", b"for-g2") == 0
    assert ems.publish("sef/clients/ems-1/reply", b"ems-reply") == 0
    assert ems.publish("sef/groups/g1/call/x.y/M", b"for-g1") == 0
    assert ems.publish("sef/agents/bat-a/call/x.y/M", b"for-a") == 0
    agent.wait_for("sef/agents/bat-a/call/x.y/M", b"for-a")
    agent.wait_for("sef/groups/g1/call/x.y/M", b"for-g1")
    payloads = {payload for _, payload in agent.messages}
    assert payloads == {b"for-a", b"for-g1"}


def test_an_agent_does_not_receive_another_agents_telemetry(
    broker: SecureBroker, probes: list[Probe]
) -> None:
    agent_a = connect(broker, probes, "bat-a")
    agent_a.subscribe("sef/agents/+/props/#")
    agent_b = connect(broker, probes, "bat-b")
    assert agent_b.publish("sef/agents/bat-b/props/x.y/P", b"b-private") == 0
    ems = connect(broker, probes, "ems-1")
    agent_a.subscribe("sef/agents/bat-a/call/#")
    assert ems.publish("sef/agents/bat-a/call/x.y/M", b"sentinel") == 0
    agent_a.wait_for("sef/agents/bat-a/call/x.y/M", b"sentinel")
    assert agent_a.received("sef/agents/bat-b/props/x.y/P") == []


# -- EMS and operator ------------------------------------------------------------------------


def test_the_ems_publishes_calls_and_its_host_status(
    broker: SecureBroker, probes: list[Probe]
) -> None:
    agent = connect(broker, probes, "bat-a")
    agent.subscribe("sef/agents/bat-a/call/#")
    agent.subscribe("sef/groups/g1/call/#")
    agent.subscribe("sef/hosts/+/status")
    agent.subscribe("sef/clients/bat-a/reply")
    ems = connect(broker, probes, "ems-1")
    for topic in (
        "sef/agents/bat-a/call/org.sef.Battery/EnergyMethod",
        "sef/groups/g1/call/org.sef.Battery/EnergyMethod",
        "sef/hosts/ems-1/status",
    ):
        assert ems.publish(topic, b"from-ems") == 0
        agent.wait_for(topic, b"from-ems")
    for topic in (
        "sef/hosts/ems-2/status",  # another host's status
        "sef/agents/bat-a/status",  # posing as an agent
        "sef/agents/bat-a/props/x.y/P",
        "sef/clients/bat-a/reply",  # a reply to someone else
        "sef/gateways/h1/status",
    ):
        assert ems.publish(topic, b"forged") == NOT_AUTHORIZED, topic


def test_an_operator_only_reads(broker: SecureBroker, probes: list[Probe]) -> None:
    operator = observer(broker, probes)
    for topic in (
        "sef/agents/bat-a/call/x.y/M",
        "sef/groups/g1/call/x.y/M",
        "sef/hosts/op-1/status",
        "sef/agents/op-1/status",
        "sef/clients/op-1/reply",
    ):
        assert operator.publish(topic, b"op") == NOT_AUTHORIZED, topic
    agent = connect(broker, probes, "bat-a")
    assert agent.publish("sef/agents/bat-a/status", b"seen") == 0
    operator.wait_for("sef/agents/bat-a/status", b"seen")


def test_a_client_with_the_ems_client_id_does_not_take_over_its_session(
    broker: SecureBroker, probes: list[Probe]
) -> None:
    ems = connect(broker, probes, "ems-1")
    assert ems.subscribe("sef/agents/+/status") == 1
    impostor = connect(broker, probes, "bat-b", client_id="ems-1")  # agent certificate
    assert impostor.connected
    assert "as bat-b" in broker.log_text  # the broker named it after its certificate
    agent = connect(broker, probes, "bat-a")
    assert agent.publish("sef/agents/bat-a/status", b"online") == 0
    ems.wait_for("sef/agents/bat-a/status", b"online")
    assert ems.connected and ems.disconnects == []
    assert impostor.received("sef/agents/bat-a/status") == []  # not the EMS's subscriptions


def test_one_connection_per_identity(broker: SecureBroker, probes: list[Probe]) -> None:
    """The client id is the identity: a second connection with the same certificate (a
    tool using the EMS's certificate, whatever client id it sends) takes the first one's
    session over. Every process needs an identity of its own."""
    first = connect(broker, probes, "ems-1")
    second = connect(broker, probes, "ems-1", client_id="ems-1-tool")
    wait_until(lambda: bool(first.disconnects))
    assert second.connected


def test_mqtt311_denied_publish_is_dropped_silently(
    broker: SecureBroker, pki: CertificateAuthority, probes: list[Probe]
) -> None:
    watcher = observer(broker, probes)
    agent = Probe(
        broker.port, security_for(pki, "bat-a", Role.AGENT).client_tls(), "bat-a", v5=False
    )
    probes.append(agent)
    assert agent.connect() == "connected"
    assert agent.publish("sef/agents/bat-b/call/x.y/M", b"forged") == 0  # no reason codes
    assert agent.publish("sef/agents/bat-a/status", b"sentinel") == 0
    watcher.wait_for("sef/agents/bat-a/status", b"sentinel")
    assert watcher.received("sef/agents/bat-b/call/x.y/M") == []


# -- gateways --------------------------------------------------------------------------------


def test_a_gateway_publishes_only_for_its_homes_agents(
    broker: SecureBroker, probes: list[Probe]
) -> None:
    watcher = observer(broker, probes)
    gateway = connect(broker, probes, "gw-h1")
    for topic in (
        "sef/agents/bat-a/status",
        "sef/agents/bat-c/props/x.y/P",
        "sef/gateways/h1/agents",
        "sef/gateways/h1/status",
        "sef/clients/ems-1/reply",
    ):
        assert gateway.publish(topic, b"bridged") == 0, topic
        watcher.wait_for(topic, b"bridged")
    for topic in (
        "sef/agents/bat-b/status",  # another home's agent
        "sef/agents/bat-b/props/x.y/P",
        "sef/agents/bat-a/call/x.y/M",  # calls come down, never up
        "sef/groups/g1/call/x.y/M",
        "sef/gateways/h2/status",  # another home's gateway
        "sef/hosts/ems-1/status",
    ):
        assert gateway.publish(topic, b"forged") == NOT_AUTHORIZED, topic
    assert gateway.publish("sef/agents/bat-a/status", b"sentinel") == 0
    watcher.wait_for("sef/agents/bat-a/status", b"sentinel")
    assert not any(payload == b"forged" for _, payload in watcher.messages)


def test_a_gateway_receives_only_its_homes_calls(broker: SecureBroker, probes: list[Probe]) -> None:
    gateway = connect(broker, probes, "gw-h1")
    for pattern in ("sef/agents/+/call/#", "sef/groups/+/call/#", "sef/hosts/+/status"):
        assert gateway.subscribe(pattern) == 1  # what the bridge subscribes to
    ems = connect(broker, probes, "ems-1")
    sent = {
        "sef/agents/bat-b/call/x.y/M": False,  # home h2
        "sef/groups/g2/call/x.y/M": False,  # no agent of h1 is in g2
        "sef/agents/bat-a/call/x.y/M": True,
        "sef/agents/bat-c/call/x.y/M": True,
        "sef/groups/g1/call/x.y/M": True,
        "sef/hosts/ems-1/status": True,
    }
    for topic in sent:
        assert ems.publish(topic, b"down") == 0
    gateway.wait_for("sef/hosts/ems-1/status", b"down")
    assert {topic for topic, _ in gateway.messages} == {t for t, ok in sent.items() if ok}


def test_security_client_tls_checks_the_broker_host_name(
    broker: SecureBroker, pki: CertificateAuthority, probes: list[Probe]
) -> None:
    """The broker certificate names 127.0.0.1, so ``client_tls()``'s host name check
    passes; a context that expects another name fails."""
    context = security_for(pki, "bat-a", Role.AGENT).client_tls()
    assert context.check_hostname and context.verify_mode is ssl.CERT_REQUIRED
    probe = Probe(broker.port, context, "bat-a")
    probes.append(probe)
    assert probe.connect() == "connected"

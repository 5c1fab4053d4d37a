"""A real Mosquitto bridge (a home gateway's uplink, the topics of ``sef.gateway``) with
the gateway's certificate, into the generated control broker: the gateway ACL lets its
own home's agents through and nothing of another home's."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from secure_stack import Probe, SecureBroker, make_pki, running_secure_broker, security_for
from sef.broker import Mosquitto
from sef.security import CertificateAuthority, Role

UPLINK_OUT = (
    "agents/+/status",
    "agents/+/about",
    "agents/+/interfaces/+",
    "agents/+/props/#",
    "agents/+/signals/#",
    "clients/+/reply",
)
UPLINK_IN = ("agents/+/call/#", "groups/+/call/#", "hosts/+/status")


def bridge_lines(ca: CertificateAuthority, port: int, gateway: str, home: str) -> str:
    """What ``sef gateway`` configures (docs/gateway.md), over TLS with its certificate."""
    return "\n".join(
        [
            *(["user root"] if os.geteuid() == 0 else []),
            f"connection sef-uplink-{home}",
            f"address 127.0.0.1:{port}",
            f"remote_clientid {gateway}",
            "bridge_protocol_version mqttv311",
            "try_private true",
            "cleansession false",
            "restart_timeout 1 2",
            "keepalive_interval 10",
            "notifications true",
            f"notification_topic sef/gateways/{home}/status",
            "bridge_attempt_unsubscribe false",
            f"bridge_cafile {ca.ca_path}",
            f"bridge_certfile {ca.cert_path(gateway)}",
            f"bridge_keyfile {ca.key_path(gateway)}",
            "bridge_insecure false",
            "bridge_tls_version tlsv1.2",
            *(f"topic sef/{pattern} out 1" for pattern in UPLINK_OUT),
            f"topic sef/gateways/{home}/agents out 1",
            *(f"topic sef/{pattern} in 1" for pattern in UPLINK_IN),
        ]
    )


@pytest.fixture
def control(tmp_path: Path) -> Iterator[SecureBroker]:
    ca = make_pki(
        tmp_path,
        [
            ("ems-1", Role.EMS, (), None),
            ("bat-a", Role.AGENT, ("g1",), "h1"),
            ("bat-b", Role.AGENT, ("g2",), "h2"),
            ("gw-h1", Role.GATEWAY, (), "h1"),
        ],
    )
    with running_secure_broker(ca, tmp_path) as broker:
        yield broker


def test_a_bridge_with_the_gateway_certificate_carries_only_its_home(
    control: SecureBroker, tmp_path: Path
) -> None:
    ca = control.ca
    ems = Probe(control.port, security_for(ca, "ems-1", Role.EMS).client_tls(), "ems-1")
    assert ems.connect() == "connected"
    home_dir = tmp_path / "home"
    home_dir.mkdir()
    home = Mosquitto(workdir=home_dir, extra_config=bridge_lines(ca, control.port, "gw-h1", "h1"))
    home.start()
    local: list[Probe] = []
    try:
        assert ems.subscribe("sef/#") == 1
        ems.wait_for("sef/gateways/h1/status", b"1", timeout_s=10.0)  # the bridge is up
        device = Probe(home.port, None, "local-tool")  # the home's own (plain) broker
        local.append(device)
        assert device.connect() == "connected"
        assert device.subscribe("sef/#") == 1

        # down: calls for the home's agents and groups; not another home's
        for topic in (
            "sef/agents/bat-b/call/x.y/M",
            "sef/groups/g2/call/x.y/M",
            "sef/agents/bat-a/call/x.y/M",
            "sef/groups/g1/call/x.y/M",
        ):
            assert ems.publish(topic, b"call") == 0
        device.wait_for("sef/groups/g1/call/x.y/M", b"call")
        device.wait_for("sef/agents/bat-a/call/x.y/M", b"call")

        # up: the home's agent's state; another home's agent's state is denied at the top
        device.publish("sef/agents/bat-b/status", b"forged")
        device.publish("sef/agents/bat-a/status", b"online")
        ems.wait_for("sef/agents/bat-a/status", b"online")
        assert ems.received("sef/agents/bat-b/status") == []
        assert {t for t, _ in device.messages if "call" in t} == {
            "sef/groups/g1/call/x.y/M",
            "sef/agents/bat-a/call/x.y/M",
        }
    finally:
        for probe in local:
            probe.close()
        ems.close()
        home.stop()

"""The relay in secure mode, MQTT 5 uplink, against the control broker of
``sef pki broker-config`` (mutual TLS + the generated ACL): everything the relay publishes
upstream is authorized (the home's agent topics, its status, agent list and statistics),
and the home ACL lets it publish what comes down (a call, the EMS's status)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from secure_stack import Probe, make_pki, secure_broker, security_for
from sef.bus import BrokerURL, Status
from sef.gateway import Gateway
from sef.security import Role
from support import wait_for

pytestmark = pytest.mark.timeout(60)


async def test_secure_relay_is_authorized_both_ways(tmp_path: Path) -> None:
    uid = uuid.uuid4().hex[:6]
    ca = make_pki(tmp_path)
    gw = security_for(ca, f"gw-{uid}", Role.GATEWAY, home="home-1")
    agent_id, ems_id = f"a1-{uid}", f"ems-{uid}"
    agent_security = security_for(ca, agent_id, Role.AGENT, ("g1",), "home-1")
    ems_security = security_for(ca, ems_id, Role.EMS)
    async with secure_broker(ca, tmp_path) as central:
        ems = Probe(central.port, ems_security.client_tls(), ems_id)
        assert ems.connect() == "connected"
        assert ems.subscribe("sef/gateways/home-1/#") == 1
        assert ems.subscribe(f"sef/agents/{agent_id}/#") == 1
        gateway = Gateway(
            BrokerURL.parse(central.url + "?version=5"),
            "home-1",
            advertise=False,
            keepalive_s=2,
            restart_s=(1, 2),
            security=gw,
        )
        async with gateway:
            ems.wait_for("sef/gateways/home-1/status", b"1")
            agent = Probe(
                gateway.listen_port, agent_security.client_tls(check_hostname=False), agent_id
            )
            assert agent.connect() == "connected"
            assert agent.subscribe(f"sef/agents/{agent_id}/call/#") == 1
            assert agent.subscribe("sef/hosts/+/status") == 1
            status = Status(True, 1, ts=time.time(), keepalive_s=30, seq=0).to_payload()
            assert agent.publish(f"sef/agents/{agent_id}/status", status) == 0
            ems.wait_for(f"sef/agents/{agent_id}/status", status)
            await wait_for(
                lambda: any(
                    agent_id in json.loads(p)["agents"]
                    for p in ems.received("sef/gateways/home-1/agents")
                ),
                5.0,
            )
            await wait_for(lambda: bool(ems.received("sef/gateways/home-1/stats")), 5.0)
            stats = json.loads(ems.received("sef/gateways/home-1/stats")[-1])
            assert (stats["home"], stats["dropped"]) == ("home-1", 0)

            # down through the relay: a call to the agent and the EMS's status
            assert ems.publish(f"sef/agents/{agent_id}/call/x.y/M", b"call") == 0
            assert ems.publish(f"sef/hosts/{ems_id}/status", b"up") == 0
            agent.wait_for(f"sef/agents/{agent_id}/call/x.y/M", b"call")
            agent.wait_for(f"sef/hosts/{ems_id}/status", b"up")

            # the relay's upstream publishes were all accepted (MQTT 5 PUBACK reason 0) …
            relay = gateway.relay
            assert relay is not None and relay.forwarded >= 3 and relay.dropped == 0
            assert relay.refused == 0
            # … and the control broker's ACL would have said otherwise: another home's agent
            assert relay.forward("sef/agents/b1/status", status, retain=True)
            await wait_for(lambda: relay.refused == 1, 5.0)
            agent.close()
        ems.wait_for("sef/gateways/home-1/status", b"0")  # the clean stop
        ems.close()

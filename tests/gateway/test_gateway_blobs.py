"""A home gateway carries the interface XML retained once per hash (protocol version 2,
``{root}/interfaces/{sha256}``) up to the control broker: an EMS there learns a vendor's
interface of an agent at home; in secure mode both ACLs (home and control) let it through
and let the EMS put back an altered copy. Real Mosquitto brokers and the real relay."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest

from blob_support import CHARGER_SHA, Charger
from secure_stack import Probe, make_pki, secure_broker, security_for
from sef.broker import Mosquitto
from sef.bus import BrokerURL, BusClient, Message, Topics
from sef.ems import EMS
from sef.gateway import UPLINK_OUT, Gateway
from sef.security import Role
from support import record, wait_for

pytestmark = pytest.mark.timeout(60)

T = Topics()
CHARGER = "com.example.charger"
XML = (
    f'<node><interface name="{CHARGER}"><property name="Mode" type="s" access="read"/>'
    "</interface></node>"
).encode()
SHA = hashlib.sha256(XML).hexdigest()


def test_the_relay_forwards_the_hash_topics() -> None:
    assert "interfaces/+" in UPLINK_OUT


async def test_ems_behind_the_uplink_learns_the_interface_of_a_home_agent(
    mosquitto: Mosquitto,
) -> None:
    uid = uuid.uuid4().hex[:6]
    async with (
        Gateway(BrokerURL.parse(mosquitto.url), f"home-{uid}", advertise=False) as gateway,
        EMS(mosquitto.url, f"ems-{uid}") as ems,
    ):
        agent = Charger(f"ch-{uid}", gateway.url)
        await agent.start()
        await wait_for(lambda: ems.registry.interface(CHARGER) is not None, 10.0)
        assert record(ems, agent.agent_id).interfaces[CHARGER] == CHARGER_SHA
        # retained at the control broker: an EMS started later finds it there
        seen: list[Message] = []
        late = BusClient(mosquitto.url, f"late-{uid}", on_message=seen.append)
        await late.subscribe(T.interface_blob(CHARGER_SHA))
        await late.start()
        await wait_for(lambda: bool(seen), 5.0)
        assert seen[0].retain
        await late.stop()
        await agent.stop()


async def test_secure_home_and_control_acls_carry_the_blob(tmp_path: Path) -> None:
    uid = uuid.uuid4().hex[:6]
    ca = make_pki(tmp_path)
    gw = security_for(ca, f"gw-{uid}", Role.GATEWAY, home="home-1")
    agent_id, ems_id = f"a1-{uid}", f"ems-{uid}"
    agent_security = security_for(ca, agent_id, Role.AGENT, ("g1",), "home-1")
    ems_security = security_for(ca, ems_id, Role.EMS)
    topic = T.interface_blob(SHA)
    async with secure_broker(ca, tmp_path) as central:
        ems = Probe(central.port, ems_security.client_tls(), ems_id)
        assert ems.connect() == "connected"
        assert ems.subscribe("sef/interfaces/+") == 1
        gateway = Gateway(
            BrokerURL.parse(central.url + "?version=5"),
            "home-1",
            advertise=False,
            keepalive_s=2,
            restart_s=(1, 2),
            security=gw,
        )
        async with gateway:
            agent = Probe(
                gateway.listen_port, agent_security.client_tls(check_hostname=False), agent_id
            )
            assert agent.connect() == "connected"
            assert agent.subscribe("sef/interfaces/+") == 1  # the agent's check reads it
            info = agent.client.publish(topic, XML, qos=1, retain=True)
            await wait_for(lambda: info.mid in agent.acks, 5.0)
            assert agent.acks[info.mid] == 0
            ems.wait_for(topic, XML)
            relay = gateway.relay
            assert relay is not None
            await wait_for(lambda: relay.forwarded >= 1, 5.0)
            assert relay.refused == 0
            # the EMS may put back an altered copy (BlobBook.repair)
            assert ems.publish(topic, XML) == 0
            agent.close()
        ems.close()

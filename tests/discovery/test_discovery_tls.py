"""Secure mDNS discovery: a component with credentials accepts only a broker that proves,
in a TLS handshake, a certificate of its deployment CA with the role ``broker`` (or the
``gateway`` of its own home). Real brokers advertised on loopback: Mosquitto in
mutual-TLS mode from the generated configuration (ours and another CA's), a plain-text
Mosquitto, and a TLS server with a gateway certificate of another home."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mdns_lock import mdns_lock
from proc_support import SefProcess
from secure_stack import make_pki, running_secure_broker, security_for
from sef.broker import Mosquitto, free_port
from sef.bus import BusError
from sef.discovery import MdnsResolver, advertise_broker, verified_broker_tls
from sef.ems import EMS
from sef.security import Role, Security
from support import wait_for


@contextlib.asynccontextmanager
async def tls_server(security: Security) -> AsyncIterator[int]:
    """A TLS listener presenting ``security``'s certificate (it speaks no MQTT)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    port = free_port()
    server = await asyncio.start_server(
        serve, "127.0.0.1", port, ssl=security.server_tls(require_client_cert=False)
    )
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()


def agent_tls(security: Security) -> MdnsResolver:
    tls = verified_broker_tls(
        security,
        roles=(Role.BROKER, Role.GATEWAY),
        home=security.identity.home,
        check_hostname=False,
    )
    return MdnsResolver(timeout_s=4.0, tls=tls)


@pytest.mark.timeout(90)
async def test_only_a_broker_proving_our_ca_is_accepted(
    tmp_path: Path, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    uid = uuid.uuid4().hex[:6]
    ours = make_pki(tmp_path / "ours")
    theirs = make_pki(tmp_path / "theirs")
    agent = security_for(ours, f"bat-{uid}", Role.AGENT, home="home-1")
    gateway_of_other_home = security_for(ours, f"gw-{uid}", Role.GATEWAY, home="home-9")
    caplog.set_level(logging.WARNING, logger="sef.discovery")
    with (
        running_secure_broker(ours, tmp_path / "ours") as genuine,
        running_secure_broker(theirs, tmp_path / "theirs") as foreign,
    ):
        async with (
            mdns_lock(exclusive=True),
            tls_server(gateway_of_other_home) as impostor_port,
            await advertise_broker("127.0.0.1", mosquitto.port, f"plain-{uid}"),
            await advertise_broker("127.0.0.1", foreign.port, f"foreign-{uid}", tls=True),
            await advertise_broker(
                "127.0.0.1", impostor_port, f"gw9-{uid}", role="gateway", tls=True
            ),
        ):
            with pytest.raises(BusError, match="no SEF broker"):
                await agent_tls(agent)()
            skipped = caplog.text
            assert f"skipping broker 'plain-{uid}'" in skipped and "plain-text" in skipped
            assert f"skipping broker 'foreign-{uid}'" in skipped
            assert f"skipping broker 'gw9-{uid}'" in skipped and "home-9" in skipped

            async with await advertise_broker("127.0.0.1", genuine.port, f"ours-{uid}", tls=True):
                resolver = agent_tls(agent)
                url = await resolver()
                assert (url.port, url.tls) == (genuine.port, True)
                assert resolver.last is not None and resolver.last.name == f"ours-{uid}"


@pytest.mark.timeout(90)
async def test_secure_agent_process_discovers_the_broker_past_a_rogue(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """``sef agent virtual-battery`` with credentials and no ``--broker``: a plain-text
    rogue is advertised too; the agent ends up at the EMS through the genuine broker."""
    uid = uuid.uuid4().hex[:6]
    ca = make_pki(tmp_path)
    agent_id = f"zc-{uid}"
    security_for(ca, agent_id, Role.AGENT)
    ems_security = security_for(ca, f"ems-{uid}", Role.EMS)
    with running_secure_broker(ca, tmp_path) as broker:
        async with (
            mdns_lock(exclusive=True),
            await advertise_broker("127.0.0.1", mosquitto.port, f"rogue-{uid}"),
            await advertise_broker("127.0.0.1", broker.port, f"ours-{uid}", tls=True),
            EMS(broker.url, f"ems-{uid}", security=ems_security) as ems,
        ):
            spawned = time.monotonic()
            proc = SefProcess(
                "agent", "virtual-battery", "--id", agent_id, "--step", "0.5",
                "--cert", str(ca.cert_path(agent_id)), "--key", str(ca.key_path(agent_id)),
                "--ca", str(ca.ca_path), env={"SEF_LOG_LEVEL": "INFO"},
            )  # fmt: skip
            try:
                await wait_for(
                    lambda: (r := ems.registry.get(agent_id)) is not None and r.online is True,
                    15.0,
                )
                print(f"online at the EMS {time.monotonic() - spawned:.2f} s after spawning")
                assert f"agent {agent_id} starting on mdns://" in proc.output()
                assert "INSECURE" not in proc.output()
            finally:
                proc.kill()


async def test_handshake_refuses_a_peer_of_the_wrong_role_or_home(tmp_path: Path) -> None:
    """The check runs in every handshake (not only in discovery): an EMS refuses a
    gateway posing as its broker; an agent refuses another home's gateway and accepts
    its own home's."""
    ca = make_pki(tmp_path)
    ems = security_for(ca, "ems-1", Role.EMS)
    agent = security_for(ca, "bat-1", Role.AGENT, home="home-1")
    ca.issue("gw-9", Role.GATEWAY, home="home-9", hosts=("127.0.0.1",))
    gateway = security_for(ca, "gw-9", Role.GATEWAY, home="home-9")
    ca.issue("gw-1", Role.GATEWAY, home="home-1", hosts=("127.0.0.1",))
    home_gateway = security_for(ca, "gw-1", Role.GATEWAY, home="home-1")

    async def handshake(server: Security, client: ssl.SSLContext) -> None:
        async with tls_server(server) as port:
            _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
            writer.close()

    with pytest.raises(ssl.SSLCertVerificationError, match="role gateway, not broker"):
        await handshake(gateway, verified_broker_tls(ems))
    agent_tls = verified_broker_tls(agent, roles=(Role.BROKER, Role.GATEWAY), home="home-1")
    with pytest.raises(ssl.SSLCertVerificationError, match="serves home 'home-9'"):
        await handshake(gateway, agent_tls)
    await handshake(home_gateway, agent_tls)  # its own home's gateway: accepted

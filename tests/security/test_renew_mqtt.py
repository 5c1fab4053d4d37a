"""An agent connected over mutual TLS to a real Mosquitto (the generated ACL) renews its
certificate without dropping its connection, and its next connection uses the new one:
shown by revoking only the old certificate at the broker before the reconnection."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import signal
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from enroll_stack import GENEROUS, enrollment_server
from secure_stack import SecureBroker, make_pki, running_secure_broker
from sef.agents.virtual_battery import VirtualBatteryAgent
from sef.bus import BusClient, BusError
from sef.security import (
    CertificateAuthority,
    CertificateRenewer,
    Role,
    Security,
    load_private_key,
)
from support import wait_for
from tcp_cut import CuttableLink


def revoke_only_at_broker(ca: CertificateAuthority, broker: SecureBroker, serial: int) -> None:
    """Give the broker a CRL (signed by the CA) that revokes just ``serial``, and wait
    until it has reloaded it (SIGHUP)."""
    key = load_private_key(ca.root / "ca.key")
    now = dt.datetime.now(dt.UTC)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=1))
        .add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        )
        .sign(key, hashes.SHA256())
    )
    broker.files.crl.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    before = broker.log_text.count("Reloading config")
    broker.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while broker.log_text.count("Reloading config") <= before:
        assert time.monotonic() < deadline, "mosquitto did not reload"
        time.sleep(0.01)
    time.sleep(0.05)


async def test_agent_renews_while_connected_and_reconnects_with_the_new_certificate(
    tmp_path: Path,
) -> None:
    ca = make_pki(tmp_path, [("bat-r", Role.AGENT, ("g1",), "h1")])
    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    shutil.copy(ca.cert_path("bat-r"), agent_dir / "cert.pem")
    shutil.copy(ca.key_path("bat-r"), agent_dir / "key.pem")
    security = Security.load(agent_dir / "cert.pem", agent_dir / "key.pem", ca.ca_path)
    old_serial = security.identity.serial
    old_tls = security.client_tls()
    with running_secure_broker(ca, tmp_path) as broker, enrollment_server(ca.root, GENEROUS) as enr:
        link = CuttableLink(broker.port)
        await link.restore()
        agent = VirtualBatteryAgent(
            "bat-r",
            f"mqtts://127.0.0.1:{link.port}",
            groups=["g1"],
            keepalive_s=2,
            step_s=0.2,
            security=security,
        )
        await agent.start()
        try:
            await wait_for(lambda: agent.bus.connected, 10.0)
            assert agent.bus.connections == 1
            renewer = CertificateRenewer(
                security,
                enr.url,
                on_renewed=lambda s: setattr(agent.bus, "tls", s.client_tls()),
            )
            await renewer.renew_once()
            assert security.identity.serial != old_serial
            # the connection made with the old certificate stays up: no outage
            await asyncio.sleep(3.0)  # more than a keepalive period
            assert agent.bus.connected and agent.bus.connections == 1
            # the broker now refuses the old certificate: a new connection with it fails
            revoke_only_at_broker(ca, broker, old_serial)
            stale = BusClient(broker.url, "stale-probe", tls=old_tls)
            try:
                with pytest.raises(BusError, match="could not connect"):
                    await stale.start(timeout_s=3.0)
            finally:
                await stale.stop()
            # a cut link makes the agent reconnect: with the new certificate it gets in
            await link.cut()
            await link.restore()
            await wait_for(lambda: agent.bus.connections >= 2 and agent.bus.connected, 20.0)
        finally:
            await agent.stop()
            await link.cut()

"""Zero-configuration discovery over mDNS on loopback, against real Mosquitto brokers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid

import pytest

from mdns_lock import mdns_lock
from sef.broker import Mosquitto
from sef.bus import BusClient, BusError
from sef.discovery import MdnsResolver, advertise_broker, browse_broker, is_mdns_url
from sef.ems import EMS
from support import wait_for


def test_mdns_url_forms() -> None:
    assert is_mdns_url("mdns") and is_mdns_url("mdns://") and is_mdns_url("MDNS://home-1")
    assert not is_mdns_url("mqtt://mdns.example:1883") and not is_mdns_url("mdnshost")
    assert MdnsResolver.parse("mdns://").name is None
    resolver = MdnsResolver.parse("mdns://home%201?timeout=1.5")
    assert (resolver.name, resolver.timeout_s, str(resolver)) == ("home 1", 1.5, "mdns://home 1")
    with pytest.raises(BusError):
        MdnsResolver.parse("mdns://x?timeout=soon")


async def test_agent_without_broker_address_connects_within_5s(mosquitto: Mosquitto) -> None:
    """The acceptance: ``sef agent virtual-battery`` with no ``--broker`` at all."""
    agent_id = f"zc-{uuid.uuid4().hex[:8]}"
    async with (
        mdns_lock(exclusive=True),
        await advertise_broker("127.0.0.1", mosquitto.port, f"sef-test-{agent_id}"),
        EMS(mosquitto.url, f"ems-{agent_id}") as ems,
    ):
        spawned = time.monotonic()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sef",
                "agent",
                "virtual-battery",
                "--insecure",
                "--id",
                agent_id,
            ],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            await wait_for(
                lambda: (r := ems.registry.get(agent_id)) is not None and r.online is True, 5.0
            )
            took = time.monotonic() - spawned
        finally:
            proc.terminate()
            out, _ = await asyncio.to_thread(proc.communicate, timeout=10)
        assert f"agent {agent_id} starting on mdns://" in out
        print(f"agent online at the EMS {took:.2f} s after its process was spawned")
        assert took < 5.0


async def test_client_follows_broker_to_another_port(tmp_path: object) -> None:
    """The broker goes away and comes back on another port: the client re-discovers it."""
    name = f"sef-test-{uuid.uuid4().hex[:8]}"
    first = Mosquitto().start()
    connections: list[int] = []

    async def connected() -> None:
        connections.append(client.url.port)

    client = BusClient(f"mdns://{name}", on_connect=connected, keepalive_s=2)
    second: Mosquitto | None = None
    try:
        async with mdns_lock():
            advert = await advertise_broker("127.0.0.1", first.port, name)
            try:
                await client.start(timeout_s=5.0)
                assert connections == [first.port]
                assert isinstance(client.resolver, MdnsResolver)
                assert client.resolver.last is not None
                assert client.resolver.last.name == name
            finally:
                await advert.close()
            await asyncio.to_thread(first.stop)
            await wait_for(lambda: not client.connected, 5.0)
            gone = time.monotonic()
            second = Mosquitto().start()
            assert second.port != first.port
            async with await advertise_broker("127.0.0.1", second.port, name):
                await wait_for(lambda: client.connected and connections[-1] == second.port, 15.0)
                print(
                    f"reconnected to the new port {time.monotonic() - gone:.2f} s after "
                    "the old broker went away"
                )
    finally:
        await client.stop()
        first.stop()
        if second is not None:
            second.stop()


async def test_browse_reads_txt_record_and_times_out_on_unknown_name(mosquitto: Mosquitto) -> None:
    name = f"sef-test-{uuid.uuid4().hex[:8]}"
    async with (
        mdns_lock(),
        await advertise_broker(
            "127.0.0.1", mosquitto.port, name, {"home": "h-1"}, mqtt_version="5", role="gateway"
        ) as advert,
    ):
        assert advert.name == name
        found = await browse_broker(3.0, name=name)
        assert found.url.port == mosquitto.port and found.url.version == 5
        assert found.role == "gateway" and found.properties["home"] == "h-1"
        assert found.properties["sef"] == "1"
        start = time.monotonic()
        with pytest.raises(BusError, match="no SEF broker"):
            await browse_broker(0.5, name=f"{name}-nobody")
        assert time.monotonic() - start < 2.0

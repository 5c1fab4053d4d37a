"""A refused subscription (SUBACK 0x80 and up) is not silent, against a real Mosquitto.

Mosquitto 2.0.11 refuses a SUBSCRIBE its *dynamic security plugin* denies (0x80 with
MQTT 3.1.1, 0x87 "not authorized" with MQTT 5), but grants one its ``acl_file`` denies
(code = requested QoS, both versions) and then delivers nothing: the client cannot see
that case, checked here too so a change of the broker's behaviour shows.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sef.broker import Mosquitto
from sef.bus import BusClient, SubackRetry, start_index
from support import wait_for

DYNSEC = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
DENIED = "sef/denied/#"
FAST = SubackRetry(first_s=0.05, max_s=0.2, tries=2)


def dynsec_broker(workdir: Path) -> Mosquitto:
    """A Mosquitto whose dynamic security plugin lets anonymous clients do anything but
    subscribe to :data:`DENIED`."""
    if not DYNSEC.exists():
        pytest.skip(f"Mosquitto's dynamic security plugin is not installed ({DYNSEC})")
    config = workdir / "dynsec.json"
    config.write_text(
        json.dumps(
            {
                "defaultACLAccess": dict.fromkeys(
                    ("publishClientSend", "publishClientReceive", "subscribe", "unsubscribe"),
                    True,
                ),
                "clients": [],
                "groups": [{"groupname": "anon", "roles": [{"rolename": "r"}], "clients": []}],
                "roles": [
                    {
                        "rolename": "r",
                        "acls": [{"acltype": "subscribePattern", "topic": DENIED, "allow": False}],
                    }
                ],
                "anonymousGroup": "anon",
            }
        )
    )
    config.chmod(0o666)
    return Mosquitto(
        workdir=workdir,
        extra_config=f"plugin {DYNSEC}\nplugin_opt_config_file {config}\n",
    ).start()


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory Mosquitto can read after it dropped root for user mosquitto (pytest's
    ``tmp_path`` sits below 0700 directories): plugin and ACL files go there."""
    path = Path(tempfile.mkdtemp(prefix="sef-suback-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def refusing(open_dir: Path) -> Iterator[Mosquitto]:
    broker = dynsec_broker(open_dir)
    yield broker
    broker.stop()


def refusals(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


@pytest.mark.parametrize(("version", "code"), [("3.1.1", 0x80), ("5", 0x87)])
async def test_a_refused_subscription_is_retried_then_the_connection_dropped(
    refusing: Mosquitto, caplog: pytest.LogCaptureFixture, version: str, code: int
) -> None:
    caplog.set_level(logging.WARNING, logger="sef.bus")
    client = BusClient(f"{refusing.url}?version={version}", "sub-refused")
    client.suback_retry = FAST
    await client.start()
    try:
        await client.subscribe("sef/allowed/x")  # granted: nothing said
        assert not refusals(caplog, "refused")
        await client.subscribe("sef/denied/x")
        asked = refusals(caplog, "refused the subscription 'sef/denied/x'")
        assert len(asked) == FAST.tries, asked
        assert f"SUBACK 0x{code:02x}" in asked[0]
        gave_up = refusals(caplog, "keeps refusing")
        assert len(gave_up) == 1 and f"'sef/denied/x' (SUBACK 0x{code:02x})" in gave_up[0]
        # dropped: the reconnection asks again (and is refused again, before any birth)
        await wait_for(lambda: len(refusals(caplog, "keeps refusing")) >= 2, 10.0)
        assert client.connections >= 2
        assert not client.connected, "a connection refusing a subscription is not kept"
    finally:
        await client.stop()


async def test_a_list_moves_on_from_a_broker_that_refuses_the_subscriptions(
    refusing: Mosquitto, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """The refusing broker is first for this client id; it ends on the other one, where
    ``on_connect`` (the birth) runs: never on the refusing one."""
    caplog.set_level(logging.WARNING, logger="sef.bus")
    client_id = next(f"agent-{n}" for n in range(100) if start_index(f"agent-{n}", 2) == 0)
    births: list[int] = []

    async def on_connect() -> None:
        births.append(client.url.port)

    client = BusClient([refusing.url, mosquitto.url], client_id, on_connect=on_connect)
    client.suback_retry = FAST
    await client.subscribe("sef/denied/x")
    await client.start(timeout_s=15.0)
    try:
        assert client.url.port == mosquitto.port and births == [mosquitto.port]
        moves = refusals(caplog, "fails over")
        assert len(moves) == 1 and "subscriptions refused" in moves[0], moves
        assert client.failed_attempts == 1
    finally:
        await client.stop()


async def test_an_acl_file_denial_is_granted_by_mosquitto_2_0(
    open_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What Mosquitto 2.0.11 does with an ``acl_file``: the SUBACK grants the filter, so
    the client stays connected and says nothing (no delivery follows)."""
    workdir = open_dir
    acl = workdir / "acl"
    acl.write_text("topic deny sef/denied/#\ntopic readwrite sef/#\n")
    acl.chmod(0o644)
    caplog.set_level(logging.WARNING, logger="sef.bus")
    with Mosquitto(workdir=workdir, extra_config=f"acl_file {acl}\n") as broker:
        got: list[str] = []
        client = BusClient(broker.url, "acl-sub", on_message=lambda m: got.append(m.topic))
        client.suback_retry = FAST
        await client.start()
        try:
            await client.subscribe("sef/denied/x")
            await client.subscribe("sef/ok/x")
            client.publish("sef/denied/x", b"1")
            client.publish("sef/ok/x", b"2")
            await wait_for(lambda: "sef/ok/x" in got, 5.0)
            await asyncio.sleep(0.2)
            assert got == ["sef/ok/x"] and client.connected and client.connections == 1
            assert not refusals(caplog, "refused")
        finally:
            await client.stop()

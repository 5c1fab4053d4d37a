"""An agent's home pin: the file that keeps it, the start-up rules, the resolver that
skips other homes' gateways (real mDNS adverts on loopback) and the CLI's refusals
(real ``python -m sef`` processes)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
import subprocess
import sys
import uuid
from collections.abc import Awaitable
from pathlib import Path

import pytest

from mdns_lock import mdns_lock
from proc_support import SefProcess
from secure_stack import make_pki
from sef.broker import Mosquitto
from sef.bus import BusError
from sef.discovery import (
    BrokerAdvertisement,
    MdnsResolver,
    PinError,
    PinFile,
    advertise_broker,
    default_state_dir,
    load_pin,
)
from sef.security import Role


def test_pin_file_round_trip_modes_and_corruption(tmp_path: Path) -> None:
    pin = PinFile.for_agent(tmp_path / "state", "bat-1")
    assert pin.path == tmp_path / "state" / "bat-1" / "home"
    assert pin.read() is None
    pin.write("home-1")
    assert pin.read() == "home-1"
    assert pin.path.read_text() == "home-1\n"
    assert stat.S_IMODE(pin.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(pin.path.parent.stat().st_mode) == 0o700
    assert [p.name for p in pin.path.parent.iterdir()] == ["home"]  # no temporary left
    for corrupt in (b"", b"\n", b"home-1\nhome-2\n", b"home 1", b"\xff\xfe", b"../etc"):
        pin.path.write_bytes(corrupt)
        with pytest.raises(PinError, match="is corrupt"):
            pin.read()
    with pytest.raises(PinError, match="not a valid home id"):
        pin.write("home/1")


def test_default_state_dir_order() -> None:
    assert default_state_dir({"SEF_STATE_DIR": "/s", "XDG_STATE_HOME": "/x"}) == Path("/s")
    assert default_state_dir({"XDG_STATE_HOME": "/x"}) == Path("/x/sef")
    assert default_state_dir({}) == Path.home() / ".local" / "state" / "sef"


def test_load_pin_rules(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sef.discovery")
    state = tmp_path / "state"
    assert (load_pin("a", state).home, load_pin("a", state).source) == (None, "none")
    configured = load_pin("a", state, "home-1")
    assert (configured.home, configured.source) == ("home-1", "--home")
    assert configured.file.read() == "home-1"  # kept for a restart without --home
    again = load_pin("a", state)
    assert (again.home, again.source) == ("home-1", "file")

    moved = load_pin("a", state, "home-2")  # --home wins over the file, and is kept
    assert moved.home == "home-2" and moved.file.read() == "home-2"
    assert "re-pinned from home 'home-1' to home 'home-2'" in caplog.text

    moved.file.path.write_text("garbage garbage\n")
    with pytest.raises(PinError, match=r"corrupt.*refusing to guess.*--home HOME"):
        load_pin("a", state)
    repaired = load_pin("a", state, "home-3")  # corrupt + --home: logged, written over
    assert repaired.home == "home-3" and repaired.file.read() == "home-3"
    assert any(r.levelno == logging.ERROR and "corrupt" in r.message for r in caplog.records)

    with pytest.raises(PinError, match="not a valid home id"):
        load_pin("a", state, "home 3")
    with pytest.raises(PinError, match="does not match the home of the certificate"):
        load_pin("a", state, "home-3", certificate_home="home-1", secure=True)
    with pytest.raises(PinError, match=r"pins 'a' to home 'home-3'.*certificate is for home"):
        load_pin("a", state, certificate_home="home-1", secure=True)
    assert load_pin("a", state, "home-1", certificate_home="home-1", secure=True).home == "home-1"


async def test_resolver_accepts_only_its_home_and_pins_on_first_join(
    tmp_path: Path, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """Two gateways and a plain broker advertised: a pinned resolver takes its home's
    gateway and logs each skip; an unpinned one pins to the first gateway it joins and
    then refuses the other home."""
    caplog.set_level(logging.INFO, logger="sef.discovery")
    uid = uuid.uuid4().hex[:6]
    home_1, home_2, plain = f"home-1-{uid}", f"home-2-{uid}", f"plain-{uid}"
    port = mosquitto.port

    def gateway(home: str) -> Awaitable[BrokerAdvertisement]:
        return advertise_broker(
            "127.0.0.1", port, home, {"home": home}, role="gateway", generic=False
        )

    # the lock is held for as long as anything is advertised
    async with mdns_lock(), contextlib.AsyncExitStack() as adverts:
        gw_1, *others = await asyncio.gather(
            gateway(home_1), gateway(home_2), advertise_broker("127.0.0.1", port, plain)
        )
        for advert in (gw_1, *others):
            adverts.push_async_callback(advert.close)
        pinned = MdnsResolver(timeout_s=4.0, home=home_1)
        await pinned()
        assert pinned.last is not None and pinned.last.name == home_1
        assert pinned.last.home == home_1

        # home-1's gateway gone: the pinned resolver finds nothing, skipping the others
        await gw_1.close()
        caplog.clear()
        with pytest.raises(BusError, match=f"of home '{home_1}'"):
            await MdnsResolver(timeout_s=3.0, home=home_1)()
        assert (
            f"skipping gateway '{home_2}': this agent is pinned to home '{home_1}' "
            f"(it serves home '{home_2}')" in caplog.text
        )
        assert f"skipping broker '{plain}': this agent is pinned to home '{home_1}'" in caplog.text
        assert caplog.text.count(f"skipping gateway '{home_2}'") == 1  # once per search

        # not pinned yet: the first gateway joined (here home-2, by name) becomes the pin
        pin_file = PinFile.for_agent(tmp_path / "state", f"bat-{uid}")
        fresh = MdnsResolver(name=home_2, timeout_s=4.0, pin=pin_file)
        url = await fresh()
        assert url.port == port and fresh.home == home_2
        assert pin_file.read() == home_2
        assert f"pinned to home '{home_2}'" in caplog.text
        # a plain broker (no home) joined by an unpinned agent does not pin it
        unpinned = MdnsResolver(name=plain, timeout_s=4.0, pin=PinFile(tmp_path / "p" / "home"))
        await unpinned()
        assert unpinned.home is None and not (tmp_path / "p").exists()
        # once pinned, even an explicitly named service of no/another home is refused
        fresh.name, fresh.timeout_s = plain, 1.5
        with pytest.raises(BusError):
            await fresh()


def run_agent_cli(*args: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    """``python -m sef agent virtual-battery ARGS`` to completion (a refusal exits at once)."""
    return subprocess.run(
        [sys.executable, "-m", "sef", "agent", "virtual-battery", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "COLUMNS": "300"},
    )


async def test_cli_refuses_a_corrupt_pin_without_home(tmp_path: Path) -> None:
    pin = PinFile.for_agent(tmp_path, "bat-x")
    pin.path.parent.mkdir(parents=True)
    pin.path.write_bytes(b"\x00\x01not a home\n")
    done = await asyncio.to_thread(
        run_agent_cli, "--insecure", "--id", "bat-x", "--state-dir", str(tmp_path)
    )
    assert done.returncode == 2, done.stderr
    assert "is corrupt" in done.stderr and "refusing to guess" in done.stderr
    assert str(pin.path) in done.stderr.replace("\n", "")
    assert pin.path.read_bytes() == b"\x00\x01not a home\n"  # left for the operator


async def test_cli_with_home_repairs_a_corrupt_pin(tmp_path: Path) -> None:
    """A corrupt file and ``--home``: the error is logged, the agent runs pinned to the
    configured home, and the file holds it again."""
    uid = uuid.uuid4().hex[:6]
    pin = PinFile.for_agent(tmp_path, f"bat-{uid}")
    pin.path.parent.mkdir(parents=True)
    pin.path.write_bytes(b"home-1\nhome-2\n")
    proc = SefProcess(
        "agent", "virtual-battery", "--insecure", "--id", f"bat-{uid}", "--state-dir",
        str(tmp_path), "--home", f"home-{uid}", "--broker", f"mdns://nobody-{uid}?timeout=0.5",
    )  # fmt: skip
    try:
        proc.wait_line(f"starting on mdns://nobody-{uid}, pinned to home 'home-{uid}'", 20.0)
        proc.wait_line("ERROR .* is corrupt", 5.0)
        logged = " ".join(proc.output().split())  # the log handler wraps long lines
        assert f"using --home home-{uid} and writing it over the file" in logged
        assert pin.read() == f"home-{uid}"
        assert proc.signal_and_wait(signal.SIGTERM) == 0
    finally:
        proc.kill()


async def test_cli_refuses_home_not_in_the_certificate(tmp_path: Path) -> None:
    ca = make_pki(tmp_path)
    ca.issue("bat-s", Role.AGENT, home="home-1")
    creds = ("--cert", str(ca.cert_path("bat-s")), "--key", str(ca.key_path("bat-s")))
    common = ("--id", "bat-s", *creds, "--ca", str(ca.ca_path), "--state-dir", str(tmp_path))
    done = await asyncio.to_thread(run_agent_cli, *common, "--home", "home-2")
    assert done.returncode == 2, done.stderr
    assert "--home 'home-2' does not match the home of the certificate" in done.stderr
    assert "'home-1'" in done.stderr
    assert not (tmp_path / "bat-s").exists()  # nothing pinned


async def test_cli_refuses_a_pin_file_of_another_home_than_the_certificate(tmp_path: Path) -> None:
    ca = make_pki(tmp_path)
    ca.issue("bat-f", Role.AGENT, home="home-1")
    PinFile.for_agent(tmp_path / "state", "bat-f").write("home-9")
    done = await asyncio.to_thread(
        run_agent_cli,
        "--id", "bat-f", "--cert", str(ca.cert_path("bat-f")), "--key",
        str(ca.key_path("bat-f")), "--ca", str(ca.ca_path), "--state-dir",
        str(tmp_path / "state"),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "to home 'home-9', but its certificate is for home 'home-1'" in done.stderr

"""Acceptance of home pinning: two homes' gateways in mDNS range of the same agents.

Two real gateways (:class:`~sef.gateway.Gateway`: Mosquitto + uplink bridge to the
control Mosquitto + mDNS advertisement) serve ``home-1`` and ``home-2``. Two agent
processes run with no ``--broker``: one pinned with ``--home``, one that pins itself to
the first gateway it joins. home-1's gateway goes away: the agents must not move to
home-2; it comes back on another port: they must be back within seconds; an agent
restarted without ``--home`` keeps its pin.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mdns_lock import mdns_lock
from proc_support import SefProcess
from sef.broker import Mosquitto, free_port
from sef.bus import BrokerURL
from sef.discovery import PinFile
from sef.gateway import Gateway
from support import wait_for

AWAY_S = 5.0
"""How long home-1's gateway stays away, s."""
REJOIN_LIMIT_S = 15.0
"""Longest accepted time from home-1's gateway being back to its agents online there, s."""


def agent(agent_id: str, state_dir: Path, *extra: str) -> SefProcess:
    """``sef agent virtual-battery`` with no ``--broker`` (mDNS discovery)."""
    return SefProcess(
        "agent", "virtual-battery", "--insecure", "--id", agent_id, "--keepalive", "2",
        "--step", "0.5", "--state-dir", str(state_dir), *extra, env={"SEF_LOG_LEVEL": "INFO"},
    )  # fmt: skip


@pytest.fixture
def processes() -> Iterator[list[SefProcess]]:
    started: list[SefProcess] = []
    yield started
    for process in started:
        process.kill()


def new_port(old: int) -> int:
    """A free port other than ``old`` (the gateway really comes back elsewhere)."""
    port = free_port()
    while port == old:
        port = free_port()
    return port


@pytest.mark.timeout(120)
async def test_agents_wait_for_their_home_and_rejoin_it(
    tmp_path: Path, mosquitto: Mosquitto, processes: list[SefProcess]
) -> None:
    uid = uuid.uuid4().hex[:6]
    home_1, home_2 = f"home-1-{uid}", f"home-2-{uid}"
    configured, self_pinned = f"pin-cfg-{uid}", f"pin-self-{uid}"
    ids = (configured, self_pinned)
    state = tmp_path / "state"
    uplink = BrokerURL.parse(mosquitto.url)
    visited_home_2: set[str] = set()

    def at_home_2(gw_2: Gateway) -> bool:
        visited_home_2.update(a for a in ids if a in gw_2.agents)
        return bool(visited_home_2)

    async with mdns_lock(exclusive=True):  # the agents take any gateway of their home
        gw_1 = await Gateway(uplink, home_1, keepalive_s=2).start()
        gateways = [gw_1]
        try:
            processes.append(agent(configured, state, "--home", home_1))
            processes.append(agent(self_pinned, state))
            await wait_for(lambda: all(gw_1.agents.get(a) is True for a in ids), 15.0)
            assert PinFile.for_agent(state, configured).read() == home_1
            assert PinFile.for_agent(state, self_pinned).read() == home_1
            processes[1].wait_line(f"pinned to home '{home_1}'", 1.0)

            gw_2 = await Gateway(uplink, home_2, keepalive_s=2).start()
            gateways.append(gw_2)
            old_port = gw_1.listen_port
            await gw_1.stop()
            deadline = time.monotonic() + AWAY_S
            while time.monotonic() < deadline:  # home-1 away: nobody goes next door
                assert not at_home_2(gw_2), f"{visited_home_2} moved to {home_2}"
                await asyncio.sleep(0.05)
            for process in processes:
                process.wait_line(
                    f"skipping gateway '{home_2}': this agent is pinned to home '{home_1}'", 1.0
                )

            gw_1 = Gateway(uplink, home_1, listen_port=new_port(old_port), keepalive_s=2)
            gateways.append(gw_1)
            restarting = time.monotonic()
            rejoined = asyncio.create_task(  # the agents may join before start() returns
                wait_for(lambda: all(gw_1.agents.get(a) is True for a in ids), REJOIN_LIMIT_S)
            )
            await gw_1.start()  # Mosquitto, bridge, then mDNS probing and announcing
            started_s = time.monotonic() - restarting
            rejoined_s = await rejoined
            print(
                f"home-1's gateway back on port {gw_1.listen_port} (was {old_port}): its "
                f"agents online there {rejoined_s:.2f} s after its restart began (the "
                f"gateway's own start took {started_s:.2f} s)"
            )
            assert rejoined_s < REJOIN_LIMIT_S
            assert not at_home_2(gw_2)

            # restarted without --home, the self-pinned agent keeps its home
            assert processes[1].signal_and_wait(signal.SIGTERM) == 0
            await wait_for(lambda: gw_1.agents.get(self_pinned) is False, 5.0)
            processes.append(agent(self_pinned, state))
            processes[-1].wait_line(f"starting on mdns://, pinned to home '{home_1}'", 10.0)
            await wait_for(lambda: gw_1.agents.get(self_pinned) is True, 15.0)
            assert not at_home_2(gw_2)
        finally:
            for gateway in gateways:
                await gateway.stop()

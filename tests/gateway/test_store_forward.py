"""Acceptance of home-gateway store-and-forward (issue 19), on the rig of ``store_forward``.

A real control Mosquitto, an EMS with a SQLite store, one gateway whose uplink runs
through a :class:`~tcp_cut.CuttableLink`, in-process virtual batteries at 1 s telemetry
(keepalive 2 s). Each test makes one outage and then checks, sample by sample (agent,
key, sender ts), that what the agents produced reached the store exactly once.

The short versions of the issue's scenarios; ``bench/gateway_outage.py`` runs the long
ones (10-minute and 30-minute cuts, 200 agents).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sef.broker import Mosquitto
from store_forward import OutageFigures, RigConfig, StoreForwardRig

pytestmark = pytest.mark.timeout(120)


def explain(figures: OutageFigures) -> str:
    """The figures, for an assertion message."""
    return ", ".join(f"{k}={v}" for k, v in vars(figures).items())


async def test_uplink_cut_20s_every_sample_stored_once(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    async with StoreForwardRig(
        mosquitto, tmp_path, RigConfig(agents=1, telemetry_s=1.0, catch_up_timeout_s=20.0)
    ) as rig:
        figures = await rig.cut(20.0)
    assert figures.produced_outage >= 15, explain(figures)
    assert figures.missing == 0, explain(figures)
    assert figures.stored_more_than_once == 0, explain(figures)
    assert figures.gaps == 0, explain(figures)
    assert figures.relay["dropped"] == 0, explain(figures)


async def test_home_broker_frozen_buffered_samples_arrive(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """SIGSTOP of the home broker for 10 s, agent keepalive 2 s.

    The agent's MQTT client (gmqtt) closes a connection on which nothing arrived for two
    keepalives (4 s, checked every keepalive/2), so a 10 s freeze has both kinds of
    samples the agent must keep (protocol.md §4.7): those of the first ~4 s, published
    into a socket nobody reads (never acknowledged), and the rest, produced with no
    connection at all. A freeze under two keepalives would be ridden out by the socket
    alone and test nothing. The agent comes back in a new session (the broker, running
    again, finds the old connection closed) and backfills after its birth.
    """
    async with StoreForwardRig(
        mosquitto, tmp_path, RigConfig(agents=1, telemetry_s=1.0, catch_up_timeout_s=20.0)
    ) as rig:
        figures = await rig.freeze_home(10.0)
    assert figures.produced_outage >= 8, explain(figures)
    assert figures.backfilled > 0, f"the agent never lost its broker: {explain(figures)}"
    assert figures.missing == 0, explain(figures)
    assert figures.stored_more_than_once == 0, explain(figures)
    assert figures.gaps == 0, explain(figures)


async def test_twenty_agents_uplink_cut_relay_drops_nothing(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    config = RigConfig(agents=20, telemetry_s=1.0, catch_up_timeout_s=20.0)
    async with StoreForwardRig(mosquitto, tmp_path, config) as rig:
        figures = await rig.cut(20.0)
    assert figures.produced_outage >= 20 * 15, explain(figures)
    assert figures.relay["dropped"] == 0, explain(figures)
    assert figures.dropped_log_gateway == figures.dropped_log_control == 0, explain(figures)
    assert figures.missing == 0, explain(figures)
    assert figures.stored_more_than_once == 0, explain(figures)
    assert figures.gaps == 0, explain(figures)

"""Hostile home (gateway) messages at a real EMS over real Mosquitto: huge agent lists,
bad JSON, stats with negative, NaN, 2**64, float or text counters, oversized stats, stats
of another or an unknown home, a home id no topic may name, more homes than the cap, and a
flood of bad stats. Each is refused, counted as a bad message and logged (throttled);
nothing crashes, the good messages around them still count, and ``/homes`` answers."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from registry_stack import TOPICS, RegStack, start_stack

from sef.bus import GatewayAgents
from sef.ems._homes import MAX_STATS_BYTES
from sef.ems._registry import MAX_GATEWAY_AGENTS
from support import wait_for


def stats(home: str, **fields: Any) -> bytes:
    body = {"v": 1, "home": home, "ts": int(time.time()), "queued": 1, "dropped": 0}
    return json.dumps({**body, **fields}).encode()


async def bad_count_grows(stack: RegStack, before: int, by: int) -> None:
    await wait_for(lambda: stack.ems.registry.bad_messages >= before + by, 5.0)
    await stack.ems.settle(0.1, 1.0)
    assert stack.ems.registry.bad_messages == before + by


async def test_hostile_home_messages(broker_url: str, caplog: pytest.LogCaptureFixture) -> None:
    stack = await start_stack(broker_url)
    ems, rogue = stack.ems, stack.rogue
    try:
        rogue.publish(TOPICS.gateway_agents("h1"), GatewayAgents("h1", ["a1"]).to_payload())
        rogue.publish(TOPICS.gateway_status("h1"), b"1")
        rogue.publish(TOPICS.gateway_stats("h1"), stats("h1", queued=5))
        await wait_for(lambda: (h := ems.homes.get("h1")) is not None and h.stats is not None, 5)

        with caplog.at_level(logging.WARNING):
            before = ems.registry.bad_messages
            hostile: list[tuple[str, bytes]] = [
                (TOPICS.gateway_stats("ghost"), stats("ghost")),  # unknown home
                # agent lists (the registry refuses them; the home book never sees them)
                (
                    TOPICS.gateway_agents("h1"),
                    GatewayAgents(
                        "h1", [f"x{i}" for i in range(MAX_GATEWAY_AGENTS + 1)]
                    ).to_payload(),
                ),
                (TOPICS.gateway_agents("h1"), b'{"v":1,"home":"h1","agents":[1,2'),
                (TOPICS.gateway_agents("h1"), b'{"v":1,"home":"h1","agents":"a1"}'),
                # stats
                (TOPICS.gateway_stats("h1"), stats("h1", queued=-1)),
                (TOPICS.gateway_stats("h1"), b'{"v":1,"home":"h1","queued":NaN}'),
                (TOPICS.gateway_stats("h1"), stats("h1", dropped=2**64)),
                (TOPICS.gateway_stats("h1"), stats("h1", forwarded=1.5)),
                (TOPICS.gateway_stats("h1"), stats("h1", queued="5")),
                (TOPICS.gateway_stats("h1"), b'{"v":1,"home":"h1","queued":1,"ts":1e999}'),
                (TOPICS.gateway_stats("h1"), b"{not json"),
                (TOPICS.gateway_stats("h1"), b"\xff\xfe"),
                (TOPICS.gateway_stats("h1"), stats("h1", pad="x" * MAX_STATS_BYTES)),
                (TOPICS.gateway_stats("h1"), stats("h2")),  # names another home
                ("sef/gateways/bad home!/stats", stats("bad home!")),  # no valid home id
            ]
            for topic, payload in hostile:
                rogue.publish(topic, payload)
            await bad_count_grows(stack, before, len(hostile))
        home = ems.homes.get("h1")
        assert home is not None and home.stats is not None
        assert home.stats["queued"] == 5 and ems.homes.members("h1") == ["a1"]
        assert ems.homes.get("ghost") is None and "x0" not in ems.homes.home_of
        # (the first 10 lines of a 10 s window in full, the rest counted in a summary)
        refused = [r for r in caplog.records if "message refused" in r.getMessage()]
        assert any("'queued'" in r.getMessage() for r in refused), refused
        assert any("unknown home 'ghost'" in r.getMessage() for r in refused), refused

        # more homes than the cap: the extra ones are refused, the known ones still change
        ems.homes.max_homes = 3
        before = ems.registry.bad_messages
        for i in range(2, 6):
            rogue.publish(TOPICS.gateway_status(f"h{i}"), b"0")
        await bad_count_grows(stack, before, 2)
        assert sorted(ems.homes.homes) == ["h1", "h2", "h3"]
        rogue.publish(TOPICS.gateway_status("h1"), b"0")
        await wait_for(lambda: ems.homes.homes["h1"].up is False, 5)

        # a flood of bad stats: counted, a bounded number of log lines
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="sef.ems"):
            before = ems.registry.bad_messages
            for i in range(500):
                rogue.publish(TOPICS.gateway_stats("h1"), stats("h1", queued=-i - 1))
            await bad_count_grows(stack, before, 500)
        lines = [r for r in caplog.records if "home h1" in r.getMessage()]
        assert len(lines) <= 20, len(lines)  # (the window's first lines may be spent above)

        # still serving: a good stats message counts, the API answers
        rogue.publish(TOPICS.gateway_stats("h1"), stats("h1", queued=9))
        await wait_for(lambda: (ems.homes.homes["h1"].stats or {}).get("queued") == 9, 5)
        answer = await stack.http.get("/homes")
        assert answer.status_code == 200
        assert [(h["home"], h["uplink"]) for h in answer.json()] == [
            ("h1", "down"),
            ("h2", "down"),
            ("h3", "down"),
        ]
        assert ems.bus.connected
    finally:
        await stack.stop()

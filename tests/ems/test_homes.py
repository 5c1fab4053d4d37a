"""HomeBook, cycle by cycle: uplink state and since, agent lists and each agent's home
(the newer list wins), relay statistics parsed defensively, the cap on homes."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from sef.bus import TopicKind, Topics
from sef.ems._homes import MAX_STATS_BYTES, HomeBook, HomeRefused, parse_stats
from sef.ems._registry import MAX_GATEWAYS


def stats(home: str = "h1", **fields: Any) -> bytes:
    body: dict[str, Any] = {
        "v": 1,
        "home": home,
        "ts": 1_700_000_000,
        "queued": 3,
        "queue_limit": 1000,
        "dropped": 0,
        "forwarded": 42,
        "high_water": 7,
        "uplink_down_s": 0,
    }
    body.update(fields)
    return json.dumps(body).encode()


def test_uplink_state_and_since() -> None:
    book = HomeBook()
    assert book.get("h1") is None
    assert book.uplink("h1", True, 100.0) is True
    home = book.get("h1")
    assert home is not None and home.uplink == "up" and home.since == 100.0
    assert book.uplink("h1", True, 110.0) is False  # no change: since stays
    assert home.since == 100.0
    assert book.uplink("h1", False, 120.0) is True
    assert (home.uplink, home.since) == ("down", 120.0)
    assert book.uplink("h1", True, 130.0) is True
    assert (home.uplink, home.since) == ("up", 130.0)


def test_home_known_by_list_only_is_unknown_uplink() -> None:
    book = HomeBook()
    book.agent_list("h1", ["a1", "a2"], 50.0)
    home = book.get("h1")
    assert home is not None and home.uplink == "unknown" and home.since == 50.0
    assert book.members("h1") == ["a1", "a2"]
    assert book.summary(home, lambda a: a == "a2") == {
        "home": "h1",
        "uplink": "unknown",
        "since": 50.0,
        "agents": 2,
        "online_agents": 1,
        "stats": None,
        "stats_ts": None,
        "stats_at": None,
    }


def test_agent_home_follows_the_lists() -> None:
    book = HomeBook()
    book.agent_list("h1", ["a1", "a2"], 1.0)
    assert book.home_of == {"a1": "h1", "a2": "h1"}
    book.agent_list("h1", ["a2", "a3"], 2.0)  # a1 left h1
    assert book.home_of == {"a2": "h1", "a3": "h1"}
    book.agent_list("h1", [], 3.0)
    assert book.home_of == {} and book.members("h1") == []


def test_two_homes_name_one_agent_newer_list_wins_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    book = HomeBook()
    book.agent_list("h1", ["a1", "a2"], 1.0)
    with caplog.at_level(logging.INFO, logger="sef.ems.homes"):
        book.agent_list("h2", ["a1"], 2.0)
        assert book.home_of["a1"] == "h2" and book.home_of["a2"] == "h1"
        assert book.members("h1") == ["a2"] and book.members("h2") == ["a1"]
        book.agent_list("h1", ["a1", "a2"], 3.0)  # h1 names it again: now h1 is newer
        assert book.home_of["a1"] == "h1"
        book.agent_list("h2", ["a1"], 4.0)
    lines = [r.getMessage() for r in caplog.records if "named by homes" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "a1" in lines[0]
    # h2 drops a1: it is then behind no home (h1's list is older)
    book.agent_list("h2", [], 5.0)
    assert "a1" not in book.home_of
    assert book.members("h1") == ["a2"]


def test_invalid_and_duplicate_ids_left_out() -> None:
    book = HomeBook()
    book.agent_list("h1", ["a1", "a1", "", "bad id", "x" * 65, "+", "ok.2"], 1.0)
    assert book.members("h1") == ["a1", "ok.2"]


def test_stats_taken_for_a_known_home() -> None:
    book = HomeBook()
    with pytest.raises(HomeRefused, match="unknown home"):
        book.stats("h1", stats(), 10.0)
    book.uplink("h1", False, 5.0)
    home = book.stats("h1", stats(dropped=5, uplink_down_s=12.5), 10.0)
    assert home.stats is not None
    assert home.stats["dropped"] == 5 and home.stats["queued"] == 3
    assert home.stats["uplink_down_s"] == 12.5
    assert home.stats_ts == 1_700_000_000 and home.stats_at == 10.0
    # a bad one leaves the last good stats in place
    with pytest.raises(HomeRefused):
        book.stats("h1", stats(dropped=-1), 20.0)
    assert home.stats["dropped"] == 5 and home.stats_at == 10.0


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{", "not JSON"),
        (b"[1]", "JSON object"),
        (json.dumps({"v": 2, "home": "h1", "queued": 1}).encode(), "version"),
        (stats(home="h2"), "not 'h1'"),
        (stats(queued=-1), "'queued'"),
        (stats(dropped=2**64), "'dropped'"),
        (stats(forwarded=1.5), "'forwarded'"),
        (stats(high_water=True), "'high_water'"),
        (stats(queue_limit="10"), "'queue_limit'"),
        (stats(ts=-5), "'ts'"),
        (b'{"v":1,"home":"h1","queued":1,"ts":NaN}', "not JSON"),
        (b'{"v":1,"home":"h1","queued":1,"uplink_down_s":1e999}', "not JSON"),
        (json.dumps({"v": 1, "home": "h1", "ts": 5}).encode(), "without any counter"),
        (stats(pad="x" * MAX_STATS_BYTES), "bytes"),
    ],
)
def test_bad_stats_refused(payload: bytes, reason: str) -> None:
    with pytest.raises(HomeRefused, match=reason):
        parse_stats(payload, "h1")


def test_stats_as_the_relay_sends_them() -> None:
    """``sef.gateway``'s relay sends ``ts`` and ``uplink_down_s`` with milliseconds."""
    fields = parse_stats(stats(ts=1_700_000_000.123, uplink_down_s=3.25), "h1")
    assert fields["ts"] == 1_700_000_000.123 and fields["uplink_down_s"] == 3.25


def test_stats_missing_fields_are_none_extra_ignored() -> None:
    fields = parse_stats(b'{"v":1,"home":"h1","dropped":2,"extra":[1,2]}', "h1")
    assert fields["dropped"] == 2 and fields["queued"] is None and "extra" not in fields


def test_cap_on_homes() -> None:
    book = HomeBook(max_homes=2)
    book.uplink("h1", True, 1.0)
    book.agent_list("h2", ["a"], 1.0)
    with pytest.raises(HomeRefused, match="more than 2 homes"):
        book.uplink("h3", True, 1.0)
    with pytest.raises(HomeRefused):
        book.agent_list("h3", ["b"], 1.0)
    assert sorted(book.homes) == ["h1", "h2"] and "b" not in book.home_of
    book.uplink("h1", False, 2.0)  # known homes still change
    assert HomeBook().max_homes == MAX_GATEWAYS


def test_stats_topic() -> None:
    topics = Topics("site")
    stats = topics.parse(topics.gateway_stats("h-1"))
    assert stats is not None and (stats.kind, stats.owner) == (TopicKind.GATEWAY_STATS, "h-1")
    status = topics.parse("site/gateways/h-1/status")
    assert status is not None and status.kind is TopicKind.GATEWAY_STATUS
    assert topics.parse("site/gateways/a/b/stats") is None
    assert topics.parse("site/gateways/-bad/stats") is None
    assert topics.parse("sef/gateways/h1/stats") is None
    assert topics.all_gateway_stats() == "site/gateways/+/stats"

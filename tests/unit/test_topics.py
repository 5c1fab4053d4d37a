"""Unit tests for sef.bus Topics: exact builder strings, parse() as their inverse, names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sef.bus import InvalidName, ParsedTopic, TopicKind, Topics, check_id

DEMO = "edu.pdx.powerlab.demo"
T = Topics()

ids = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}", fullmatch=True)
_word = r"[A-Za-z_][A-Za-z0-9_]{0,12}"
interfaces = st.from_regex(rf"{_word}(\.{_word}){{1,4}}", fullmatch=True)
members = st.from_regex(_word, fullmatch=True)
roots = st.from_regex(r"[a-z][a-z0-9]{0,8}(/[a-z0-9]{1,8}){0,2}", fullmatch=True)


# -- builders: exact strings ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("built", "expected"),
    [
        (T.agent_prefix("bat-1"), "sef/agents/bat-1"),
        (T.status("bat-1"), "sef/agents/bat-1/status"),
        (T.about("bat-1"), "sef/agents/bat-1/about"),
        (T.interface_xml("bat-1", DEMO), "sef/agents/bat-1/interfaces/edu.pdx.powerlab.demo"),
        (
            T.prop("bat-1", DEMO, "Telemetry"),
            "sef/agents/bat-1/props/edu.pdx.powerlab.demo/Telemetry",
        ),
        (T.signal("bat-1", DEMO, "Alarm"), "sef/agents/bat-1/signals/edu.pdx.powerlab.demo/Alarm"),
        (
            T.call("bat-1", DEMO, "EnergyMethod"),
            "sef/agents/bat-1/call/edu.pdx.powerlab.demo/EnergyMethod",
        ),
        (
            T.group_call("fleet.west", DEMO, "EnergyMethod"),
            "sef/groups/fleet.west/call/edu.pdx.powerlab.demo/EnergyMethod",
        ),
        (T.host_status("ems_1"), "sef/hosts/ems_1/status"),
        (T.reply("cli-7f3a"), "sef/clients/cli-7f3a/reply"),
        (T.all_hosts(), "sef/hosts/+/status"),
    ],
)
def test_builder_exact_strings(built: str, expected: str) -> None:
    assert built == expected


def test_all_agents_patterns() -> None:
    assert T.all_agents() == [
        "sef/interfaces/+",  # first: the XML before the Abouts that refer to it
        "sef/agents/+/status",
        "sef/agents/+/about",
        "sef/agents/+/interfaces/+",
        "sef/agents/+/props/#",
        "sef/agents/+/signals/#",
    ]


def test_custom_root() -> None:
    topics = Topics("lab/sef2")
    assert topics.prop("b", "a.b", "P") == "lab/sef2/agents/b/props/a.b/P"
    assert topics.reply("c") == "lab/sef2/clients/c/reply"
    assert topics.all_agents()[:2] == ["lab/sef2/interfaces/+", "lab/sef2/agents/+/status"]
    assert topics.parse("lab/sef2/agents/b/status") == ParsedTopic(TopicKind.STATUS, "b")
    # topics of another root are foreign
    assert topics.parse("sef/agents/b/status") is None
    assert T.parse("lab/sef2/agents/b/status") is None
    assert topics.parse("lab/sef2x/agents/b/status") is None


@pytest.mark.parametrize("root", ["", "sef/", "sef/+", "#", "a+b"])
def test_invalid_root(root: str) -> None:
    with pytest.raises(InvalidName):
        Topics(root)


# -- parse -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("sef/agents/bat-1/status", ParsedTopic(TopicKind.STATUS, "bat-1")),
        ("sef/agents/bat-1/about", ParsedTopic(TopicKind.ABOUT, "bat-1")),
        ("sef/agents/bat-1/interfaces/a.b", ParsedTopic(TopicKind.INTERFACE, "bat-1", "a.b")),
        ("sef/agents/bat-1/props/a.b/P", ParsedTopic(TopicKind.PROPERTY, "bat-1", "a.b", "P")),
        ("sef/agents/bat-1/signals/a.b/S", ParsedTopic(TopicKind.SIGNAL, "bat-1", "a.b", "S")),
        ("sef/agents/bat-1/call/a.b/M", ParsedTopic(TopicKind.CALL, "bat-1", "a.b", "M")),
        ("sef/groups/g/call/a.b/M", ParsedTopic(TopicKind.GROUP_CALL, "g", "a.b", "M")),
        ("sef/hosts/h/status", ParsedTopic(TopicKind.HOST_STATUS, "h")),
        ("sef/clients/c/reply", ParsedTopic(TopicKind.REPLY, "c")),
    ],
)
def test_parse_known(topic: str, expected: ParsedTopic) -> None:
    assert T.parse(topic) == expected


@given(agent=ids, interface=interfaces, member=members, root=roots)
def test_parse_inverts_every_builder(agent: str, interface: str, member: str, root: str) -> None:
    t = Topics(root)
    cases = [
        (t.status(agent), ParsedTopic(TopicKind.STATUS, agent)),
        (t.about(agent), ParsedTopic(TopicKind.ABOUT, agent)),
        (t.interface_xml(agent, interface), ParsedTopic(TopicKind.INTERFACE, agent, interface)),
        (
            t.prop(agent, interface, member),
            ParsedTopic(TopicKind.PROPERTY, agent, interface, member),
        ),
        (
            t.signal(agent, interface, member),
            ParsedTopic(TopicKind.SIGNAL, agent, interface, member),
        ),
        (t.call(agent, interface, member), ParsedTopic(TopicKind.CALL, agent, interface, member)),
        (
            t.group_call(agent, interface, member),
            ParsedTopic(TopicKind.GROUP_CALL, agent, interface, member),
        ),
        (t.host_status(agent), ParsedTopic(TopicKind.HOST_STATUS, agent)),
        (t.reply(agent), ParsedTopic(TopicKind.REPLY, agent)),
    ]
    for topic, expected in cases:
        assert topic.startswith(root + "/")
        assert t.parse(topic) == expected, topic


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "sef",
        "sef/",
        "sefx/agents/a/status",
        "other/agents/a/status",
        "/sef/agents/a/status",
        "sef/agents",
        "sef/agents/a",
        "sef/agents/a/bogus",
        "sef/agents/a/status/extra",
        "sef/agents/a/about/x",
        "sef/agents/a/interfaces",
        "sef/agents/a/interfaces/a.b/extra",
        "sef/agents/a/props/a.b",
        "sef/agents/a/props/a.b/P/extra",
        "sef/agents/a/signals/a.b",
        "sef/agents/a/call/a.b",
        "sef/groups/g/call/a.b",
        "sef/groups/g/status",
        "sef/hosts/h",
        "sef/hosts/h/about",
        "sef/clients/c",
        "sef/clients/c/reply/x",
        "sef/unknown/x/status",
    ],
)
def test_parse_foreign_or_malformed_is_none(topic: str) -> None:
    assert T.parse(topic) is None


@pytest.mark.parametrize(
    "topic",
    [
        "sef/agents//status",  # empty agent id
        "sef/agents/+/status",  # wildcard as id
        "sef/agents/-bad/about",  # id with a leading '-'
        "sef/agents/a/props/nodots/P",  # interface name without a dot
        "sef/agents/a/props/a.b/",  # empty member
        "sef/agents/a/interfaces/",  # empty interface
        "sef/clients//reply",
    ],
)
def test_parse_rejects_invalid_segments(topic: str) -> None:
    """A topic no builder can produce (invalid id / names) is not 'one of ours'."""
    assert T.parse(topic) is None


@given(st.text(max_size=200))
def test_parse_arbitrary_text_never_raises(text: str) -> None:
    result = T.parse(text)
    assert result is None or isinstance(result, ParsedTopic)


@given(
    st.lists(
        st.sampled_from(
            [
                "sef",
                "agents",
                "groups",
                "hosts",
                "clients",
                "status",
                "about",
                "interfaces",
                "props",
                "signals",
                "call",
                "reply",
                "a",
                "a.b",
                "M",
                "",
                "+",
                "#",
            ]
        ),
        max_size=7,
    )
)
def test_parse_topic_like_text_never_raises(parts: list[str]) -> None:
    result = T.parse("/".join(parts))
    assert result is None or isinstance(result, ParsedTopic)


# -- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "a/b",
        "a+b",
        "a#",
        "+",
        "#",
        "x" * 65,
        "-lead",
        ".lead",
        "sp ace",
        "bat-1\n",
        "ü",
        "a\x00b",
    ],
)
def test_invalid_ids_raise(bad: str) -> None:
    with pytest.raises(InvalidName, match="invalid agent id"):
        check_id("agent", bad)
    with pytest.raises(InvalidName):
        T.status(bad)
    with pytest.raises(InvalidName):
        T.group_call(bad, DEMO, "M")
    with pytest.raises(InvalidName):
        T.host_status(bad)
    with pytest.raises(InvalidName):
        T.reply(bad)


@pytest.mark.parametrize("good", ["a", "x" * 64, "0", "_", "bat-1", "a.b-c_d", "A9"])
def test_valid_ids(good: str) -> None:
    assert check_id("agent", good) == good
    assert T.status(good) == f"sef/agents/{good}/status"


def test_check_id_rejects_non_string() -> None:
    with pytest.raises(InvalidName):
        check_id("agent", 5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "nodots",
        "a..b",
        ".a.b",
        "a.b.",
        "a.1b",
        "a/b.c",
        "a.b+",
        "a.b#",
        "a.b\n",
        "a." + "b" * 254,
    ],
)
def test_invalid_interface_names(bad: str) -> None:
    with pytest.raises(InvalidName, match="interface"):
        T.prop("a", bad, "P")
    with pytest.raises(InvalidName):
        T.interface_xml("a", bad)


@pytest.mark.parametrize("bad", ["", "1P", "a.b", "a/b", "P+", "#", "P\n", "x" * 256])
def test_invalid_member_names(bad: str) -> None:
    with pytest.raises(InvalidName, match="member"):
        T.prop("a", DEMO, bad)
    with pytest.raises(InvalidName):
        T.call("a", DEMO, bad)
    with pytest.raises(InvalidName):
        T.signal("a", DEMO, bad)


@given(st.text(max_size=80))
def test_check_id_accepts_only_the_documented_alphabet(text: str) -> None:
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
    valid = 1 <= len(text) <= 64 and set(text) <= allowed and text[0] not in ".-"
    if valid:
        assert check_id("agent", text) == text
    else:
        with pytest.raises(InvalidName):
            check_id("agent", text)

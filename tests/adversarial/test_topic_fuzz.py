"""Issue 11, the standing adversarial suite: "Hypothesis generates hostile payloads for
every topic kind".

Payloads: arbitrary bytes, JSON objects with the protocol's field names and wrong types,
integers of 2**64 and beyond, ``NaN``/``Infinity`` literals, deep nesting, long strings,
oversized messages. Topics: one of every :class:`sef.bus.TopicKind`.

* Pure: the EMS's :class:`Registry` (every kind), the EMS's reply handling and the payload
  decoders of the kinds the registry does not read never raise anything but
  :class:`PayloadError` (decoders) and count what they refuse.
* Real broker: a sample of them published to a real EMS (with its API) and a real agent
  on a real Mosquitto: both stay on their first connection, the agent still answers a
  legitimate call, and the EMS still lists it online.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from sef.agents.virtual_battery import VirtualBatteryAgent
from sef.bus import (
    BusClient,
    BusError,
    Call,
    GatewayAgents,
    Message,
    PayloadError,
    Reply,
    Status,
    TopicKind,
    Topics,
    decode_bridge_state,
    decode_object,
)
from sef.clock import default_clock
from sef.ems import EMS, Admission, Registry
from sef.ems._caller import Caller
from sef.ems._homes import HomeRefused, parse_stats
from sef.ems.api import ApiAuth, serve_api
from support import is_online, wait_for

T = Topics()
DEMO = "edu.pdx.powerlab.demo"
AGENT = "bat-1"
HOST = "ems-fuzz"
GROUP = "feeder-f"

TOPICS: dict[TopicKind, list[str]] = {
    TopicKind.STATUS: [T.status(AGENT), T.status("ghost-1")],
    TopicKind.ABOUT: [T.about(AGENT), T.about("ghost-2")],
    TopicKind.INTERFACE: [T.interface_xml(AGENT, DEMO), T.interface_xml("ghost-3", "org.x.Y")],
    TopicKind.PROPERTY: [T.prop(AGENT, DEMO, "Telemetry"), T.prop("ghost-4", DEMO, "AssetName")],
    TopicKind.SIGNAL: [T.signal(AGENT, DEMO, "Alarm"), T.signal("ghost-5", "org.x.Y", "Z")],
    TopicKind.CALL: [T.call(AGENT, DEMO, "EnergyMethod")],
    TopicKind.GROUP_CALL: [T.group_call(GROUP, DEMO, "EnergyMethod")],
    TopicKind.HOST_STATUS: [T.host_status(HOST), T.host_status("other-host")],
    TopicKind.REPLY: [T.reply(HOST)],
    TopicKind.GATEWAY_STATUS: [T.gateway_status("home-1")],
    TopicKind.GATEWAY_AGENTS: [T.gateway_agents("home-1")],
    TopicKind.GATEWAY_STATS: [T.gateway_stats("home-1")],
    TopicKind.SEAL: [T.seal(AGENT), T.seal("ghost-6")],
    TopicKind.INTERFACE_BLOB: [  # the demo XML's hash (a known one) and another
        T.interface_blob("9" * 64),
        T.interface_blob("0123456789abcdef" * 4),
    ],
}
assert set(TOPICS) == set(TopicKind), "a topic kind without a fuzzed topic"

# -- hostile payloads ---------------------------------------------------------------------------

HUGE = [2**63 - 1, 2**63, 2**64, 2**64 + 5, -(2**63) - 1, 10**40, -(10**40)]
SPECIAL_TEXT = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    "5e-324",
    "1" * 5000,
    "-0",
    "null",
    "true",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(HUGE),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.text(min_size=300, max_size=3000),
    st.sampled_from(["", "+", "#", "sef/#", "a/+/b", "x\x00y", "\ud7ff", "../../etc"]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)
FIELDS = [
    "v",
    "state",
    "bdseq",
    "ts",
    "seq",
    "value",
    "args",
    "id",
    "exp",
    "reply_to",
    "sender",
    "agent",
    "ok",
    "result",
    "error",
    "applied",
    "fault",
    "interfaces",
    "groups",
    "about",
    "reason",
    "keepalive",
    "home",
    "agents",
]
protocol_objects = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=len(FIELDS)).map(
    lambda obj: {"v": 1, **obj} if "v" not in obj else obj
)
"""Objects that look like the protocol's: its field names (``v`` 1 mostly), any values."""


def _dumps(obj: Any) -> bytes:
    """JSON as a careless sender writes it: NaN and Infinity literals, lone surrogates."""
    return json.dumps(obj, allow_nan=True).encode("utf-8", "surrogatepass")


def _nested(depth: int, opener: str) -> bytes:
    closer = {"[": "]", "{": "}"}[opener]
    if opener == "[":
        return ('{"v":1,"value":' + "[" * depth + "]" * depth + "}").encode()
    return ('{"v":1,"value":' + '{"a":' * depth + "1" + closer * depth + "}").encode()


def _numbers(field: str, literal: str) -> bytes:
    return (
        f'{{"v":1,"state":"online","bdseq":{literal},"ts":{literal},"{field}":{literal}}}'.encode()
    )


NOW_MS = int(time.time() * 1000)
ABOUT_FIELDS = {
    k: "x"
    for k in (
        "AppId",
        "DeviceId",
        "AppName",
        "Manufacturer",
        "ModelNumber",
        "DefaultLanguage",
        "DeviceName",
        "SoftwareVersion",
    )
}
TEMPLATES: list[dict[str, Any]] = [
    {"v": 1, "state": "online", "bdseq": NOW_MS, "ts": 1.0, "keepalive_s": 10, "seq": 0},
    {"v": 1, "state": "offline", "bdseq": NOW_MS, "reason": "will"},
    {
        "v": 1,
        "seq": 1,
        "ts": 1.0,
        "bdseq": NOW_MS,
        "about": ABOUT_FIELDS,
        "interfaces": [{"name": DEMO, "sha256": "0" * 64}],
        "groups": [GROUP],
    },
    {"v": 1, "seq": 2, "ts": 1.0, "value": {"TimeStamp": ["u", 1], "Sys_SOC": ["d", 50.0]}},
    {"v": 1, "seq": 3, "ts": 1.0, "args": ["Alarm", 1]},
    {"v": 1, "id": "c-1", "ts": 1.0, "exp": 4e9, "args": [[["idle", 0, 0]]], "reply_to": "x/y"},
    {"v": 1, "id": "c-1", "agent": AGENT, "ok": True, "result": [], "applied": False},
    {"v": 1, "id": "c-1", "agent": AGENT, "ok": False, "error": {"name": "e", "message": "m"}},
    {"v": 1, "home": "home-1", "agents": [AGENT, "ghost-6"]},
]
"""Valid payloads of each kind, to be spoiled one field at a time."""


def _spoiled(template: dict[str, Any], key: str, literal: str, drop: bool) -> bytes:
    """``template`` with the value of ``key`` (or of a new key) replaced by the raw JSON
    ``literal`` (``NaN``, ``1e400``, 2**64, ...), or with ``key`` removed."""
    obj = {k: v for k, v in template.items() if not (drop and k == key)}
    if drop:
        return json.dumps(obj).encode()
    obj[key] = "\u0000SPOT\u0000"
    return json.dumps(obj).replace('"\\u0000SPOT\\u0000"', literal).encode()


literals = st.one_of(
    st.sampled_from(SPECIAL_TEXT),
    st.sampled_from(HUGE).map(str),
    json_values.map(lambda value: json.dumps(value, allow_nan=True)),
)
spoiled = st.sampled_from(TEMPLATES).flatmap(
    lambda template: st.builds(
        _spoiled,
        st.just(template),
        st.sampled_from(sorted({*template, *FIELDS})),
        literals,
        st.booleans(),
    )
)
"""Near-valid payloads: one field of a valid payload wrong, missing or hostile."""

payloads = st.one_of(
    st.binary(max_size=300),
    spoiled,
    spoiled,
    st.sampled_from(TEMPLATES).map(_dumps),
    protocol_objects.map(_dumps),
    json_values.map(_dumps),
    st.builds(_nested, st.integers(1, 100_000), st.sampled_from("[{")),
    st.builds(_numbers, st.sampled_from(FIELDS), st.sampled_from(SPECIAL_TEXT)),
    st.builds(
        lambda field, size: _dumps({"v": 1, field: "x" * size}),
        st.sampled_from(FIELDS),
        st.integers(1000, 300_000),
    ),
    st.sampled_from(
        [
            b"",
            b"\xef\xbb\xbf{}",
            b'{"v":1,"v":2}',
            b'{"v":1.0}',
            b'{"v":true}',
            b'{"jws":"x","v":1}',
            b"<node><interface name='edu.pdx.powerlab.demo'/></node>",
            b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>',
            b"<node>" * 10_000,
            b"1",
            b"0",
            b" 1 ",
            b"\x00",
        ]
    ),
)
messages = st.tuples(
    st.sampled_from(sorted(TOPICS)).flatmap(lambda kind: st.sampled_from(TOPICS[kind])),
    payloads,
    st.booleans(),
)

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- pure ---------------------------------------------------------------------------------------


def _registry() -> Registry:
    return Registry(T, admission=Admission.open(), wall_clock=time.time)


def _is_protocol_object(payload: bytes) -> bool:
    try:
        decode_object(payload)
    except PayloadError:
        return False
    return True


@FUZZ
@given(st.lists(messages, min_size=1, max_size=8))
def test_registry_takes_any_message(batch: list[tuple[str, bytes, bool]]) -> None:
    """The registry returns events for every message, and counts the ones it cannot
    read: nothing raises, whatever the topic kind."""
    reg = _registry()
    for now, (topic, payload, retain) in enumerate(batch, start=1):
        kind = T.parse(topic)
        assert kind is not None
        bad_before = reg.bad_messages
        events = reg.handle(Message(topic, payload, 1, retain), float(now))
        assert isinstance(events, list)
        if (
            kind.kind in (TopicKind.STATUS, TopicKind.ABOUT, TopicKind.PROPERTY, TopicKind.SIGNAL)
            and payload
            and not _is_protocol_object(payload)
        ):
            assert reg.bad_messages == bad_before + 1, (topic, payload[:80], events)
            assert [e.kind for e in events] == ["bad_message"], events
        if kind.kind is TopicKind.INTERFACE_BLOB and payload:  # never the topic's SHA-256
            assert reg.bad_messages == bad_before + 1, (topic, payload[:80])
            assert not reg.blob_book.raw
    for record in reg.agents.values():
        assert record.bdseq is None or 0 <= record.bdseq < 2**63
        assert all(
            value.ts is None or math.isfinite(value.ts) for value in record.properties.values()
        )
    json.dumps([r.summary() for r in reg.agents.values()], allow_nan=False, default=str)


@FUZZ
@given(messages)
def test_decoders_raise_only_payload_errors(message: tuple[str, bytes, bool]) -> None:
    """The payload readers of every kind (also those the registry ignores: calls, replies,
    host status, gateways) accept a payload or say why not with a PayloadError."""
    topic, payload, _ = message
    parsed = T.parse(topic)
    assert parsed is not None
    if parsed.kind is TopicKind.GATEWAY_STATUS:
        with contextlib.suppress(PayloadError):
            decode_bridge_state(payload)
        return
    if parsed.kind is TopicKind.GATEWAY_STATS:
        with contextlib.suppress(HomeRefused):
            parse_stats(payload, parsed.owner)
        return
    readers = {
        TopicKind.CALL: Call.from_object,
        TopicKind.GROUP_CALL: Call.from_object,
        TopicKind.REPLY: Reply.from_object,
        TopicKind.HOST_STATUS: Status.from_object,
        TopicKind.STATUS: Status.from_object,
        TopicKind.GATEWAY_AGENTS: GatewayAgents.from_object,
    }
    with contextlib.suppress(PayloadError):
        obj = decode_object(payload)
        reader = readers.get(parsed.kind)
        if reader is not None:
            reader(obj)


async def _caller_handles(batch: list[bytes]) -> None:
    caller = Caller(BusClient("mqtt://127.0.0.1:9"), default_clock(), T, sender=HOST)
    for payload in batch:
        assert caller.handle(Message(caller.reply_topic, payload, 1, False)) is True
    assert sum(caller.rejected.total.values()) == len(batch)


@FUZZ
@given(st.lists(payloads, min_size=1, max_size=5))
def test_ems_reply_handling_takes_any_reply(batch: list[bytes]) -> None:
    """Replies to the EMS: anything is rejected with a reason (no call is open)."""
    asyncio.run(_caller_handles(batch))


# -- real broker --------------------------------------------------------------------------------


def _sample(n: int) -> list[tuple[str, bytes, bool]]:
    """``n`` hostile messages drawn by hypothesis, at most 200 kB each (a larger packet
    is the broker's to refuse: it disconnects the rogue, see test_process_broker_limits)."""
    drawn: list[tuple[str, bytes, bool]] = []

    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(messages)
    def draw(message: tuple[str, bytes, bool]) -> None:
        if len(message[1]) <= 200_000:
            drawn.append(message)

    draw()
    return drawn


async def test_hostile_payloads_on_a_real_bus(broker_url: str) -> None:
    sample = _sample(300)
    kinds = {p.kind for t, _, _ in sample if (p := T.parse(t)) is not None}
    assert kinds == set(TopicKind), kinds
    ems = EMS(broker_url, HOST, keepalive_s=2)
    await ems.start()
    server = await serve_api(ems, "127.0.0.1", 0, auth=ApiAuth.open())
    http = httpx.AsyncClient(base_url=server.url, timeout=20.0)
    agent = VirtualBatteryAgent(AGENT, broker_url, step_s=1.0, groups=[GROUP], keepalive_s=2)
    await agent.start()
    rogue = BusClient(broker_url, "rogue-fuzz")
    await rogue.start()
    try:
        await wait_for(lambda: (r := ems.registry.get(AGENT)) is not None and r.online is True, 10)
        sent = 0
        for topic, payload, retain in sample:
            with contextlib.suppress(BusError):
                # retained only on made-up ids: a retained forgery on the agent's own
                # topics is another test's subject (bdseq, host status repair)
                rogue.publish(topic, payload, retain=retain and "ghost" in topic)
                sent += 1
            if sent % 20 == 0:
                await asyncio.sleep(0.02)
        await asyncio.sleep(1.0)  # let both digest it

        assert ems.bus.connected and ems.bus.connections == 1, ems.bus.connections
        assert agent.bus.connected and agent.bus.connections == 1, agent.bus.connections
        response = await http.post(
            f"/agents/{AGENT}/commands", json={"cmds": [["charge", 2, 0]], "timeout_s": 10}
        )
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "ok", response.text
        listed = await http.get(f"/agents/{AGENT}")
        assert listed.status_code == 200, listed.text
        assert listed.json()["status"] == "online", listed.text
        assert ems.registry.get(AGENT) is not None and is_online(ems, AGENT)
        assert (await http.get("/health")).status_code == 200
        assert ems.registry.bad_messages > 0
        assert ems.caller.reply_topic == T.reply(HOST)
        assert ems.caller.rejected.total["malformed"] > 0  # the replies reached it
    finally:
        await rogue.stop()
        await agent.stop()
        await http.aclose()
        await server.stop()
        await ems.stop()

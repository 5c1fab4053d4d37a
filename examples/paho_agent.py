"""A complete SEF protocol-v1 agent written from ``docs/protocol.md`` alone.

It emulates a home battery (13.5 kWh, 5 kW) behind the ``edu.pdx.powerlab.demo``
interface, with nothing but paho-mqtt 2.x and the Python standard library: no ``sef``
import, as a device vendor would write it. Run it against any MQTT broker::

    python examples/paho_agent.py --broker mqtt://localhost:1883 --id bat-17 --group feeder-7

Section numbers (§) refer to ``docs/protocol.md``. Power convention of the telemetry:
``Sys_Power_kW`` > 0 charges the battery, < 0 discharges it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import random
import re
import signal
import time
import uuid
import xml.etree.ElementTree as ET
from collections import OrderedDict
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger("paho_agent")

AGENT_IFACE, DEMO_IFACE = "sef.Agent", "edu.pdx.powerlab.demo"
INTERFACE_DIR = Path(__file__).with_name("paho_agent_interfaces")
MAX_PAYLOAD_BYTES = 262_144  # §5: larger payloads are refused unread
ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")  # §2: agent, group, client ids
SEEN_CALLS = 4096  # §6 step 2: how many (sender, id) pairs are remembered
COMMANDS = ("charge", "discharge", "idle", "shed", "endshed")
MAX_EVENTS = 256  # EnergyMethod takes 1..256 events
INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
# D-Bus integer types (§8): JSON integers within these ranges, bool is not an integer
INT_RANGES = {
    "y": ("byte", 0, 2**8 - 1), "n": ("int16", -(2**15), 2**15 - 1),
    "q": ("uint16", 0, 2**16 - 1), "i": ("int32", -(2**31), 2**31 - 1),
    "u": ("uint32", 0, 2**32 - 1), "x": ("int64", -(2**63), 2**63 - 1),
    "t": ("uint64", 0, 2**64 - 1),
}  # fmt: skip


class CallRefused(Exception):
    """A call that is answered with an error: ``name`` (§6) and the message."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


# -- D-Bus signatures (§8), enough to validate any in-argument ------------------------------
def split_signature(sig: str) -> list[str]:
    """The complete types of a signature, e.g. ``"sa(nn)"`` -> ``["s", "a(nn)"]``."""
    types, i = [], 0
    while i < len(sig):
        j = i
        while sig[j] == "a":
            j += 1
        if sig[j] in "({":
            depth, close = 0, {"(": ")", "{": "}"}[sig[j]]
            for k in range(j, len(sig)):
                depth += sig[k] == sig[j]
                depth -= sig[k] == close
                if depth == 0:
                    j = k
                    break
        types.append(sig[i : j + 1])
        i = j + 1
    return types


def check_value(sig: str, value: Any, path: str) -> None:
    """Raise ``CallRefused(InvalidArgs)`` if ``value`` is not the JSON mapping of ``sig``."""

    def bad(why: str) -> CallRefused:
        return CallRefused(INVALID_ARGS, f"{path}: {why}")

    if sig in INT_RANGES:
        name, low, high = INT_RANGES[sig]
        if type(value) is not int:  # true/false and 3.0 are not integers (§8)
            raise bad(f"expected {name} '{sig}', got {type(value).__name__} {value!r:.40}")
        if not low <= value <= high:
            raise bad(f"{value} out of range for {name} '{sig}' ({low}..{high})")
    elif sig == "b" and type(value) is not bool:
        raise bad(f"expected boolean 'b', got {value!r:.40}")
    elif sig == "d" and (
        type(value) not in (int, float) or not math.isfinite(value)  # NaN cannot reach here
    ):
        raise bad(f"expected a finite number 'd', got {value!r:.40}")
    elif sig in "sog" and len(sig) == 1 and (not isinstance(value, str) or "\0" in value):
        raise bad(f"expected a string '{sig}', got {value!r:.40}")
    elif sig == "v" and not (isinstance(value, (str, int, float, bool)) or (
        isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
    )):  # fmt: skip
        raise bad(f"expected a variant, got {value!r:.40}")
    elif sig.startswith("a{"):
        if not isinstance(value, dict):
            raise bad(f"expected an object for '{sig}'")
        for key, item in value.items():
            check_value(split_signature(sig[2:-1])[1], item, f"{path}[{key!r}]")
    elif sig.startswith("a"):
        if not isinstance(value, list):
            raise bad(f"expected an array for '{sig}', got {type(value).__name__}")
        for index, item in enumerate(value):
            check_value(sig[1:], item, f"{path}[{index}]")
    elif sig.startswith("("):
        members = split_signature(sig[1:-1])
        if not isinstance(value, list) or len(value) != len(members):
            raise bad(f"expected struct '{sig}' with {len(members)} fields")
        for index, (member, item) in enumerate(zip(members, value, strict=True)):
            check_value(member, item, f"{path}[{index}]")


def load_interface(xml: bytes) -> tuple[str, dict[str, list[tuple[str, str]]]]:
    """Name and methods (name -> in-args as (name, signature)) of a D-Bus introspection
    document with one interface. (Its properties are ours to publish: AssetName, whose
    EmitsChangedSignal is false, in the birth only; Telemetry on every change; Nameplate,
    the ratings, which never change here.)"""
    iface = ET.fromstring(xml).find("interface")
    assert iface is not None
    methods = {
        m.attrib["name"]: [
            (a.attrib.get("name", f"arg{i}"), a.attrib["type"])
            for i, a in enumerate(m.findall("arg"))
            if a.attrib.get("direction", "in") == "in"
        ]
        for m in iface.findall("method")
    }
    return iface.attrib["name"], methods


# -- payloads (§5) ---------------------------------------------------------------------------
def json_object(payload: bytes) -> dict[str, Any] | None:
    """The payload as a JSON object (RFC 8259: no NaN or Infinity), else ``None``."""

    def no_constants(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    try:
        obj = json.loads(payload.decode("utf-8"), parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def decode(payload: bytes) -> dict[str, Any]:
    """A version-1 payload object, or ``CallRefused`` naming why not (§5)."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise CallRefused("sef.Error.PayloadTooLarge", f"payload of {len(payload)} bytes")
    obj = json_object(payload)
    if obj is None:
        raise CallRefused("sef.Error.MalformedPayload", "not a UTF-8 JSON object")
    if "jws" in obj or "cose" in obj or type(obj.get("v")) is not int or obj["v"] != 1:
        raise CallRefused("sef.Error.UnsupportedVersion", "unsupported protocol version")
    return obj


def check_call(obj: dict[str, Any]) -> None:
    """Raise ``CallRefused(MalformedPayload)`` unless ``obj`` is a valid Call (§5.5)."""

    def number(key: str) -> bool:
        value = obj.get(key)
        return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]

    problems = [
        (not isinstance(obj.get("id"), str) or not 1 <= len(obj["id"]) <= 128, "id"),
        (not number("ts"), "ts"),
        (not number("exp"), "exp"),
        (not isinstance(obj.get("args"), list), "args"),
        ("reply_to" in obj and not isinstance(obj["reply_to"], str), "reply_to"),
        ("sender" in obj and not isinstance(obj["sender"], str), "sender"),
    ]
    for broken, key in problems:
        if broken:
            raise CallRefused("sef.Error.MalformedPayload", f"field {key!r} missing or invalid")


class BatteryAgent:
    """One battery on the SEF bus. Each step of the protocol is one method, so that a
    variant can change exactly one (the certification suite's broken agents do)."""

    rated_kwh, rated_kw = 13.5, 5.0

    def __init__(
        self,
        broker: str,
        agent_id: str,
        groups: list[str],
        root: str = "sef",
        keepalive_s: int = 10,
        telemetry_s: float = 1.0,
        host_loss_grace_s: float = 60.0,
    ) -> None:
        url = urlparse(broker)
        self.host, self.port = url.hostname or "localhost", url.port or 1883
        self.agent_id, self.groups, self.root = agent_id, groups, root
        self.keepalive_s, self.telemetry_s = keepalive_s, telemetry_s
        self.prefix = f"{root}/agents/{agent_id}"
        self.xml = {p.name[:-4]: p.read_bytes() for p in sorted(INTERFACE_DIR.glob("*.xml"))}
        self.methods: dict[str, dict[str, list[tuple[str, str]]]] = {}
        for xml in self.xml.values():
            name, methods = load_interface(xml)
            self.methods[name] = methods
        self.bdseq, self.seq = 0, 0
        self.client: mqtt.Client | None = None
        self.connected = self.born = self.stopping = False
        self.seen_calls: OrderedDict[tuple[str | None, str], None] = OrderedDict()
        # controllers (§4.4): last bdseq and state per host; the host-loss policy
        self.host_bdseq: dict[str, int] = {}
        self.hosts_online: dict[str, bool] = {}
        self.host_loss_grace_s = host_loss_grace_s
        self.no_host_since: float | None = None  # time.monotonic() when the loss began
        self.host_loss_applied = False
        # the battery: stored energy (kWh), power (kW, + = charging), the event sequence
        self.energy_kwh, self.power_kw = self.rated_kwh / 2, 0.0
        self.events: list[tuple[str, int, int]] = []  # (cmd, rate_kW, duration_s)
        self.event: tuple[str, int, int] = ("idle", 0, 0)
        self.event_ends: float | None = None  # time.time() when the running event ends
        self.last_model = self.last_telemetry = time.time()

    # -- session numbers (§4.1) ---------------------------------------------------------
    def new_bdseq(self) -> int:
        """Strictly greater than every earlier session, also across restarts: Unix ms."""
        return max(self.bdseq + 1, int(time.time() * 1000))

    def next_seq(self) -> int:
        """The seq of the next message under our subtree (§4.1), wrapping at 2**32."""
        seq, self.seq = self.seq, (self.seq + 1) % 2**32
        return seq

    # -- publishing ------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, retain: bool = False) -> mqtt.MQTTMessageInfo:
        """Publish at QoS 1 (§1)."""
        assert self.client is not None
        return self.client.publish(topic, payload, qos=1, retain=retain)

    def publish_own(
        self, suffix: str, obj: dict[str, Any], retain: bool = True
    ) -> mqtt.MQTTMessageInfo:
        """A JSON message under the agent's own subtree, with the next ``seq``."""
        body = {"v": 1, "seq": self.next_seq(), "ts": time.time(), **obj}
        return self.publish(f"{self.prefix}/{suffix}", json.dumps(body).encode(), retain)

    def will(self) -> dict[str, Any] | None:
        """The will of this session (§4.2)."""
        return {"v": 1, "state": "offline", "bdseq": self.bdseq, "reason": "will"}

    def publish_status(self) -> None:
        """The online status of this session, with the next seq."""
        status = {"state": "online", "bdseq": self.bdseq, "keepalive_s": self.keepalive_s}
        self.publish_own("status", status)

    def about(self) -> dict[str, Any]:
        """The About payload (§5.2) without v, seq and ts."""
        return {
            "bdseq": self.bdseq,
            "about": {
                "AppId": uuid.uuid5(uuid.NAMESPACE_DNS, f"{self.agent_id}.paho-agent").hex,
                "DefaultLanguage": "en", "DeviceName": f"Example battery {self.agent_id}",
                "DeviceId": self.agent_id, "AppName": "paho example agent",
                "Manufacturer": "Example Vendor", "ModelNumber": "EX-BAT-13",
                "SoftwareVersion": "1.0.0", "SupportedLanguages": ["en"],
                "Description": "A 13.5 kWh battery emulated by examples/paho_agent.py",
            },
            "interfaces": [
                {"name": name, "sha256": hashlib.sha256(xml).hexdigest()}
                for name, xml in self.xml.items()
            ],
            "groups": self.groups,
        }  # fmt: skip

    def property_values(self) -> dict[tuple[str, str], Any]:
        """Every property's current value, by (interface, name)."""
        return {
            (DEMO_IFACE, "AssetName"): self.agent_id,
            (DEMO_IFACE, "Telemetry"): self.telemetry(),
            (DEMO_IFACE, "Nameplate"): self.nameplate(),
        }

    def nameplate(self) -> dict[str, Any]:
        """The Nameplate property (a{sv}): the ratings, units in the key names
        (docs/interfaces.md, Nameplate keys). This battery stores every kWh it takes."""
        return {
            "DeviceType": ["s", "battery"],
            "Charge_Rate_kW": ["d", self.rated_kw], "Discharge_Rate_kW": ["d", self.rated_kw],
            "Capacity_kWh": ["d", self.rated_kwh],
            "SOC_Min_pct": ["d", 0.0], "SOC_Max_pct": ["d", 100.0],
            "Charge_Efficiency_pct": ["d", 100.0], "Discharge_Efficiency_pct": ["d", 100.0],
        }  # fmt: skip

    def publish_property(self, iface: str, name: str, value: Any) -> None:
        """A PropertyUpdate (§5.3), retained."""
        self.publish_own(f"props/{iface}/{name}", {"value": value})

    def publish_birth(self) -> None:
        """§4.2: status (seq 0), About (seq 1), every interface XML, every property."""
        self.seq = 0
        self.publish_status()
        self.publish_own("about", self.about())
        # protocol version 1: the XML on the agent's own topics (an EMS of any version
        # reads them); version 2 retains each XML once for the whole fleet on
        # {root}/interfaces/{sha256} instead (§4.2.1: publish it there at every birth)
        for name, xml in self.xml.items():
            self.publish(f"{self.prefix}/interfaces/{name}", xml, retain=True)
        for (iface, name), value in self.property_values().items():
            self.publish_property(iface, name, value)
        self.born = True
        self.last_telemetry = time.time()
        log.info("born: bdseq %d", self.bdseq)

    def telemetry(self) -> dict[str, Any]:
        """The Telemetry property (a{sv}); TimeStamp is required."""
        return {
            "TimeStamp": ["u", int(time.time())],
            "Sys_Rated_Energy": ["d", self.rated_kwh],
            "Sys_Rated_Power": ["d", self.rated_kw],
            "Sys_Energy_kWh": ["d", round(self.energy_kwh, 4)],
            "Sys_SOC": ["d", round(100 * self.energy_kwh / self.rated_kwh, 3)],
            "Sys_Power_kW": ["d", round(self.power_kw, 3)],
            "Event": ["s", self.event[0]],
            "Event_Rate_kW": ["n", self.event[1]],
        }

    def publish_telemetry(self) -> None:
        """Publish the Telemetry property (when born and connected)."""
        if self.born and self.connected:
            self.publish_property(DEMO_IFACE, "Telemetry", self.telemetry())
            self.last_telemetry = time.time()

    # -- MQTT callbacks --------------------------------------------------------------------
    def subscriptions(self) -> list[str]:
        """§3: own calls, group calls, own status (§4.3), controller status (§4.4)."""
        groups = [f"{self.root}/groups/{g}/call/+/+" for g in self.groups]
        return [f"{self.prefix}/call/+/+", *groups, f"{self.prefix}/status",
                f"{self.root}/hosts/+/status"]  # fmt: skip

    def on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        """CONNACK: subscribe (the birth follows the SUBACK)."""
        if rc.is_failure:
            log.warning("connection refused: %s", rc)
            return
        self.connected = True
        client.subscribe([(topic, 1) for topic in self.subscriptions()])

    def on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, codes: Any, _p: Any) -> None:
        """SUBACK: publish the birth."""
        self.publish_birth()  # after the SUBACK: no call sent after our birth is missed

    def on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        """The connection is gone; :meth:`run` reconnects."""
        self.connected = self.born = False
        log.warning("disconnected: %s", rc)

    def on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        """Every incoming message; nothing that arrives may stop the agent."""
        if msg.retain and msg.topic == f"{self.prefix}/status":
            return  # §4.3: our previous connection's will, already replaced by our birth
        try:  # whatever arrives, the agent keeps running (§6)
            self.dispatch(msg.topic, bytes(msg.payload))
        except Exception:
            log.exception("message on %s not handled", msg.topic[:200])

    def dispatch(self, topic: str, payload: bytes) -> None:
        """Route a message by its topic."""
        parts = topic.split("/")
        rest = topic[len(self.root) + 1 :].split("/") if topic.startswith(self.root + "/") else []
        if topic == f"{self.prefix}/status":
            self.on_own_status(payload)
        elif len(rest) == 3 and rest[0] == "hosts" and rest[2] == "status":
            self.on_host_status(rest[1], payload)
        elif len(rest) == 5 and rest[2] == "call" and self.addressed_to_me(rest[0], rest[1]):
            self.on_call(parts[-2], parts[-1], payload)

    def addressed_to_me(self, kind: str, owner: str) -> bool:
        """Whether a call topic names this agent or one of its groups."""
        return (kind == "agents" and owner == self.agent_id) or (
            kind == "groups" and owner in self.groups
        )

    def on_own_status(self, payload: bytes) -> None:
        """§4.3: a late will of an older session (delivered live) overwrote our birth: say
        online again."""
        try:
            status = decode(payload)
        except CallRefused:
            return  # empty (cleared) or unreadable
        bdseq = status.get("bdseq")
        stale = status.get("state") == "offline" and type(bdseq) is int and bdseq < self.bdseq
        if stale and self.connected and self.born:
            log.info("stale death of session %s repaired", bdseq)
            self.publish_status()

    def on_host_status(self, host: str, payload: bytes) -> None:
        """§4.4: whether each controller is online, ignoring late and forged statuses."""
        try:
            status = decode(payload)
        except CallRefused:
            return  # cleared or unreadable
        bdseq, online = status.get("bdseq"), status.get("state") == "online"
        if type(bdseq) is not int or not 0 <= bdseq < min(2**63, (time.time() + 86400) * 1000):
            return  # only a forged status runs past 2**63 or a day ahead of our clock
        last = self.host_bdseq.get(host)
        if last is not None and bdseq < last:
            return  # the late will of an older session
        if not online and self.hosts_online.get(host) and last is not None and bdseq > last:
            return  # the death of a session that never announced itself: forged
        self.host_bdseq[host] = bdseq
        if self.hosts_online.get(host) != online:
            self.hosts_online[host] = online
            log.info("controller %s is %s", host, "online" if online else "offline")

    def check_host_loss(self) -> None:
        """§4.4 host-loss policy: when no controller is online (every one seen says
        offline, or the broker is lost) for ``host_loss_grace_s``, a running open-ended
        event ends (idle) and a timed one runs to its end without the rest of its sequence."""
        seen = self.hosts_online.values()
        if self.connected and (not seen or any(seen)):
            self.no_host_since, self.host_loss_applied = None, False
            return
        now = time.monotonic()
        if self.no_host_since is None:
            self.no_host_since = now
            log.warning("no controller online: host-loss policy in %.0f s", self.host_loss_grace_s)
        if self.host_loss_applied or now - self.no_host_since < self.host_loss_grace_s:
            return
        self.host_loss_applied = True
        if self.event_ends is None and self.event[0] != "idle":
            log.warning("host lost: open-ended %s ends", self.event)
            self.events = []
            self.start_next_event()
        elif self.events:
            log.warning("host lost: %s runs to its end, %d events dropped", self.event,
                        len(self.events))  # fmt: skip
            self.events = []

    # -- calls (§6) ------------------------------------------------------------------------
    def valid_reply_to(self, reply_to: Any) -> bool:
        """Only ``{root}/clients/{valid id}/reply`` (§6 step 1)."""
        prefix, suffix = f"{self.root}/clients/", "/reply"
        if not isinstance(reply_to, str) or not reply_to.startswith(prefix):
            return False
        client = reply_to[len(prefix) :]
        return client.endswith(suffix) and bool(ID_RE.fullmatch(client[: -len(suffix)]))

    def reply(self, call: dict[str, Any], result: list[Any] | CallRefused, **extra: Any) -> None:
        """§5.6: the reply, if the call asked for one on a valid reply topic."""
        reply_to = call.get("reply_to")
        if not isinstance(reply_to, str) or not self.valid_reply_to(
            reply_to
        ):  # never publish to an unchecked topic
            return
        body: dict[str, Any] = {"v": 1, "id": call["id"], "agent": self.agent_id}
        if isinstance(result, CallRefused):
            body |= {"ok": False, "error": {"name": result.name, "message": str(result)}}
        else:
            body |= {"ok": True, "result": result, **extra}
        self.publish(reply_to, json.dumps({**body, "ts": time.time()}).encode())

    def is_duplicate(self, call: dict[str, Any]) -> bool:
        """§6 step 2: the same (sender, id) seen before."""
        key = (call.get("sender"), call["id"])  # no sender: unlike any sender string
        if key in self.seen_calls:
            return True
        self.seen_calls[key] = None
        if len(self.seen_calls) > SEEN_CALLS:
            self.seen_calls.popitem(last=False)
        return False

    def is_expired(self, call: dict[str, Any]) -> bool:
        """§6 step 3: our clock is past the call's ``exp``."""
        return bool(time.time() > call["exp"])

    def on_call(self, iface: str, method: str, payload: bytes) -> None:
        """§6: steps 1 to 7, in order."""
        try:
            call = decode(payload)
            check_call(call)
        except CallRefused as exc:  # step 1: answered only if readable, with an id to answer
            log.warning("call on %s.%s refused: %s", iface, method, exc)
            readable = (exc.name != "sef.Error.PayloadTooLarge" and json_object(payload)) or {}
            call_id = readable.get("id")
            if (
                isinstance(call_id, str)
                and call_id
                and self.valid_reply_to(readable.get("reply_to"))
            ):
                self.reply({"id": call_id[:128], "reply_to": readable["reply_to"]}, exc)
            return
        if "reply_to" in call and not self.valid_reply_to(call["reply_to"]):
            log.warning("call %s refused: reply_to %r is not a reply topic", call["id"],
                        call["reply_to"][:80])  # fmt: skip
            return
        if self.is_duplicate(call):
            return
        try:
            if self.is_expired(call):
                raise CallRefused(
                    "sef.Error.Expired", f"call expired {time.time() - call['exp']:.3f} s ago"
                )
            result, extra = self.execute(iface, method, call["args"])
        except CallRefused as exc:
            log.warning("call %s %s.%s refused: %s: %s", call["id"], iface, method, exc.name, exc)
            self.reply(call, exc)
            return
        self.reply(call, result, **extra)

    def execute(self, iface: str, method: str, args: list[Any]) -> tuple[list[Any], dict[str, Any]]:
        """Steps 4 to 6: the result (out-args) and extra reply keys, or ``CallRefused``."""
        if iface not in self.methods:
            raise CallRefused("org.freedesktop.DBus.Error.UnknownInterface",
                              f"agent {self.agent_id} does not implement {iface}")  # fmt: skip
        if method not in self.methods[iface]:
            raise CallRefused(
                "org.freedesktop.DBus.Error.UnknownMethod", f"{iface} has no method {method}"
            )
        self.check_args(self.methods[iface][method], args)
        if (iface, method) == (AGENT_IFACE, "Ping"):
            return [time.time()], {}
        if (iface, method) == (AGENT_IFACE, "Rebirth"):
            self.rebirth()
            return [], {}
        self.energy_method(args[0])
        return [], {"applied": True}  # the emulated battery applies a command at once

    def check_args(self, in_args: list[tuple[str, str]], args: list[Any]) -> None:
        """§6 step 5: the arguments against the method's in-signature."""
        if len(args) != len(in_args):
            raise CallRefused(INVALID_ARGS, f"expected {len(in_args)} argument(s), got {len(args)}")
        for (name, sig), value in zip(in_args, args, strict=True):
            check_value(sig, value, name)

    def rebirth(self) -> None:
        """§4.5 / §7: the whole birth again, same bdseq, seq from 0."""
        self.publish_birth()

    # -- the demo interface: EnergyMethod command sequences --------------------------------
    def energy_method(self, cmds: list[list[Any]]) -> None:
        """Replace the running sequence by ``cmds``: [(cmd, rate_kW, duration_s), ...].

        Rules: §7.2 (InvalidArgs, the message starts with the path of the bad value)."""
        if not cmds:
            raise CallRefused(INVALID_ARGS, "cmds: must hold at least one event")
        if len(cmds) > MAX_EVENTS:
            raise CallRefused(
                INVALID_ARGS, f"cmds: {len(cmds)} events, at most {MAX_EVENTS} allowed"
            )
        events = []
        for i, (cmd, rate, duration) in enumerate(cmds):
            cmd = cmd.strip().lower()
            if cmd not in COMMANDS:
                raise CallRefused(INVALID_ARGS, f"cmds[{i}][0]: unknown command {cmd!r:.40} "
                                  f"(expected one of {', '.join(COMMANDS)})")  # fmt: skip
            if rate < 0:
                raise CallRefused(INVALID_ARGS, f"cmds[{i}][1]: rate must be >= 0 kW, got {rate}")
            if duration < 0:
                raise CallRefused(
                    INVALID_ARGS, f"cmds[{i}][2]: duration must be >= 0 s, got {duration}"
                )
            if duration == 0 and i < len(cmds) - 1:
                raise CallRefused(INVALID_ARGS, f"cmds[{i}][2]: only the last event may be "
                                  "open-ended (duration 0 = until the next command)")  # fmt: skip
            events.append((cmd, rate, duration))
        self.events = events
        self.start_next_event()

    def start_next_event(self) -> None:
        """Run the next event of the sequence; after a timed sequence the battery idles."""
        self.step_model()
        self.event = self.events.pop(0) if self.events else ("idle", 0, 0)
        self.event_ends = time.time() + self.event[2] if self.event[2] else None
        cmd, rate = self.event[0], min(self.event[1], self.rated_kw)
        self.power_kw = {"charge": rate, "discharge": -rate, "shed": -rate}.get(cmd, 0.0)
        log.info("event %s", self.event)
        self.publish_telemetry()

    def step_model(self) -> None:
        """Integrate the stored energy since the last step; stop at empty or full."""
        now = time.time()
        hours, self.last_model = (now - self.last_model) / 3600, now
        self.energy_kwh = min(self.rated_kwh, max(0.0, self.energy_kwh + self.power_kw * hours))
        if self.energy_kwh in (0.0, self.rated_kwh) and self.power_kw:
            self.power_kw = 0.0

    def tick(self) -> None:
        """Called about every 50 ms, connected or not: run the event sequence, apply the
        host-loss policy, publish telemetry (when connected)."""
        self.check_host_loss()
        if self.event_ends is not None and time.time() >= self.event_ends:
            self.start_next_event()
        if time.time() - self.last_telemetry >= self.telemetry_s:
            self.step_model()
            self.publish_telemetry()

    # -- running: connect, serve, reconnect with backoff (§1) ------------------------------
    def connect(self) -> mqtt.Client:
        """A new session (§4): new bdseq, will set, connected (CONNACK comes in the loop)."""
        self.bdseq = self.new_bdseq()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.agent_id,
                             clean_session=True, protocol=mqtt.MQTTv311)  # fmt: skip
        will = self.will()
        if will is not None:
            client.will_set(f"{self.prefix}/status", json.dumps(will), qos=1, retain=True)
        client.on_connect, client.on_subscribe = self.on_connect, self.on_subscribe
        client.on_disconnect, client.on_message = self.on_disconnect, self.on_message
        if log.isEnabledFor(logging.DEBUG):
            client.enable_logger(log)
        self.client = client
        client.connect(self.host, self.port, keepalive=self.keepalive_s)
        return client

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT; reconnect with backoff (0.1 s doubling to 10 s, ±20 %)."""
        backoff = 0.0
        while not self.stopping:
            try:
                client = self.connect()
            except OSError as exc:
                backoff = min(10.0, max(0.1, backoff * 2))
                log.warning("cannot connect: %s; retrying in %.1f s", exc, backoff)
                self.wait(backoff * random.uniform(0.8, 1.2))
                continue
            up_since = time.monotonic()
            while not self.stopping and client.loop(timeout=0.05) == mqtt.MQTT_ERR_SUCCESS:
                self.tick()
                if self.connected and time.monotonic() - up_since > 10:
                    backoff = 0.0  # reset only after a stable session: no reconnect storm
            if self.stopping:
                self.shutdown(client)
                return
            self.connected = self.born = False
            backoff = min(10.0, max(0.1, backoff * 2))
            self.wait(backoff * random.uniform(0.8, 1.2))

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds`` while the device keeps running (the event sequence goes on)."""
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(0.05)
            self.tick()

    def shutdown(self, client: mqtt.Client) -> None:
        """Clean shutdown (§4.2): retained offline status, then DISCONNECT.

        The DISCONNECT goes only after the broker acknowledged the status: a socket closed
        with an unread PUBACK in it is reset, the broker may lose the DISCONNECT and then
        publishes the will.
        """
        if not self.connected:
            return
        status = {"state": "offline", "bdseq": self.bdseq, "reason": "shutdown"}
        sent = self.publish_own("status", status)
        deadline = time.monotonic() + 2.0
        while not sent.is_published():
            if time.monotonic() > deadline or client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                break
        client.disconnect()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--broker", default="mqtt://localhost:1883", help="mqtt://host:port")
    parser.add_argument("--id", required=True, help="agent id (also the MQTT client id)")
    parser.add_argument("--group", action="append", default=[], help="a group (repeatable)")
    parser.add_argument("--root", default="sef", help="topic root")
    parser.add_argument("--telemetry-s", type=float, default=1.0, help="telemetry period, s")
    parser.add_argument("--host-loss-grace", type=float, default=60.0,
                        help="s with no controller online before the host-loss policy")  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def main(agent_class: type[BatteryAgent] = BatteryAgent, argv: list[str] | None = None) -> None:
    """Run ``agent_class`` from the command line until SIGTERM or Ctrl-C."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format=f"%(asctime)s {args.id} %(levelname)s %(message)s")  # fmt: skip
    for name in [args.id, *args.group]:
        if not ID_RE.fullmatch(name):
            raise SystemExit(f"invalid id {name!r} (1-64 of A-Z a-z 0-9 _ . -, §2)")
    agent = agent_class(args.broker, args.id, args.group, args.root, telemetry_s=args.telemetry_s,
                        host_loss_grace_s=args.host_loss_grace)  # fmt: skip

    def stop(_signum: int, _frame: Any) -> None:
        agent.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    agent.run()


if __name__ == "__main__":
    main()

"""Deliberately broken variants of ``examples/paho_agent.py``, each breaking ONE rule.

``sef certify`` must fail each of them on exactly the check in :data:`BROKEN_AGENTS`
(``tests/certify/test_certify_broken.py``) and pass the unbroken example. Every variant
overrides one method of the example's ``BatteryAgent``.

Run one as a process (the tests do)::

    python tests/certify/broken_agents.py NAME --broker mqtt://127.0.0.1:1883 --id a1
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "paho_agent.py"


def load_example() -> ModuleType:
    """``examples/paho_agent.py`` as a module (it is not a package)."""
    if "paho_agent" in sys.modules:
        return sys.modules["paho_agent"]
    spec = importlib.util.spec_from_file_location("paho_agent", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["paho_agent"] = module
    spec.loader.exec_module(module)
    return module


example = load_example()
Base = example.BatteryAgent
CallRefused = example.CallRefused
DEMO, AGENT = example.DEMO_IFACE, example.AGENT_IFACE


# -- birth -----------------------------------------------------------------------------------
class BirthOutOfOrder(Base):  # type: ignore[misc,valid-type]
    """The interface XML comes before About (status seq 0, XML, About seq 1, properties)."""

    def publish_birth(self) -> None:
        self.seq = 0
        self.publish_status()
        for name, xml in self.xml.items():
            self.publish(f"{self.prefix}/interfaces/{name}", xml, retain=True)
        self.publish_own("about", self.about())
        for (iface, name), value in self.property_values().items():
            self.publish_property(iface, name, value)
        self.born = True
        self.last_telemetry = time.time()


class StatusNotRetained(Base):  # type: ignore[misc,valid-type]
    """The birth's online status is published without the retain flag (a stale-death
    repair still retains it)."""

    in_birth = False

    def publish_birth(self) -> None:
        self.in_birth = True
        try:
            super().publish_birth()
        finally:
            self.in_birth = False

    def publish_status(self) -> None:
        if not self.in_birth:
            super().publish_status()
            return
        status = {"state": "online", "bdseq": self.bdseq, "keepalive_s": self.keepalive_s}
        self.publish_own("status", status, retain=False)


class StatusWithoutTs(Base):  # type: ignore[misc,valid-type]
    """The online status has no ``ts``."""

    def publish_status(self) -> None:
        status = {"v": 1, "seq": self.next_seq(), "state": "online", "bdseq": self.bdseq,
                  "keepalive_s": self.keepalive_s}  # fmt: skip
        self.publish(f"{self.prefix}/status", json.dumps(status).encode(), retain=True)


class KeepaliveTooLong(Base):  # type: ignore[misc,valid-type]
    """An MQTT keepalive of 60 s (agents SHOULD use 10 s or less)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keepalive_s = 60


class PropertiesAtQos0(Base):  # type: ignore[misc,valid-type]
    """Property updates go out at QoS 0."""

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> Any:
        assert self.client is not None
        qos = 0 if "/props/" in topic else 1
        return self.client.publish(topic, payload, qos=qos, retain=retain)


class AboutMissingField(Base):  # type: ignore[misc,valid-type]
    """About lacks the required ``Manufacturer``."""

    def about(self) -> dict[str, Any]:
        about: dict[str, Any] = super().about()
        del about["about"]["Manufacturer"]
        return about


class WrongInterfaceHash(Base):  # type: ignore[misc,valid-type]
    """About announces a SHA-256 that is not the hash of the published XML."""

    def about(self) -> dict[str, Any]:
        about: dict[str, Any] = super().about()
        for ref in about["interfaces"]:
            if ref["name"] == DEMO:
                ref["sha256"] = "0" * 64
        return about


class PropertyNeverPublished(Base):  # type: ignore[misc,valid-type]
    """The declared property ``AssetName`` is never published."""

    def property_values(self) -> dict[tuple[str, str], Any]:
        values: dict[tuple[str, str], Any] = super().property_values()
        del values[(DEMO, "AssetName")]
        return values


class TelemetryWithoutTimeStamp(Base):  # type: ignore[misc,valid-type]
    """Telemetry lacks the required ``TimeStamp``."""

    def telemetry(self) -> dict[str, Any]:
        values: dict[str, Any] = super().telemetry()
        del values["TimeStamp"]
        return values


# -- sessions --------------------------------------------------------------------------------
class SeqGap(Base):  # type: ignore[misc,valid-type]
    """Every telemetry message after the birth skips one seq."""

    def publish_telemetry(self) -> None:
        if self.born and self.connected:
            self.next_seq()  # lost
        super().publish_telemetry()


class BdseqReusedOnRestart(Base):  # type: ignore[misc,valid-type]
    """bdseq counts 1, 2, ... from every process start: it grows across a reconnection but
    a restarted process reuses the numbers of the one before."""

    def new_bdseq(self) -> int:
        return int(self.bdseq) + 1


class BdseqNotGrowingOnReconnect(Base):  # type: ignore[misc,valid-type]
    """One bdseq (the process's start time) for every connection of the process."""

    def new_bdseq(self) -> int:
        return self.bdseq or int(time.time() * 1000)


class SubscribesAfterBirth(Base):  # type: ignore[misc,valid-type]
    """Publishes its birth before it subscribes to its call topics (0.5 s later): a call
    sent the moment the birth is seen is lost."""

    calls_subscribe_at: float | None = None

    def subscriptions(self) -> list[str]:
        return [t for t in super().subscriptions() if "/call/" not in t]

    def on_subscribe(self, client: Any, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        if not self.born:
            super().on_subscribe(client, userdata, mid, codes, props)
            self.calls_subscribe_at = time.monotonic() + 0.5

    def tick(self) -> None:
        super().tick()
        due = self.calls_subscribe_at
        if due is not None and time.monotonic() >= due and self.client is not None:
            self.calls_subscribe_at = None
            calls = [t for t in Base.subscriptions(self) if "/call/" in t]
            self.client.subscribe([(topic, 1) for topic in calls])


class NoWill(Base):  # type: ignore[misc,valid-type]
    """Connects without a will."""

    def will(self) -> dict[str, Any] | None:
        return None


class NoStaleDeathRepair(Base):  # type: ignore[misc,valid-type]
    """Ignores a stale offline status on its own status topic."""

    def on_own_status(self, payload: bytes) -> None:
        return


class RepairsRetainedOwnStatus(Base):  # type: ignore[misc,valid-type]
    """Treats its own status delivered retained at subscription (the previous connection's
    will) as a stale death and repairs it: two online statuses per session."""

    def on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if msg.retain and msg.topic == f"{self.prefix}/status":
            self.dispatch(msg.topic, bytes(msg.payload))
            return
        super().on_message(client, userdata, msg)


class RebirthIgnored(Base):  # type: ignore[misc,valid-type]
    """Answers Rebirth but publishes nothing."""

    def rebirth(self) -> None:
        return


# -- calls -----------------------------------------------------------------------------------
class ReplyWithoutTs(Base):  # type: ignore[misc,valid-type]
    """Successful replies lack ``ts``."""

    def reply(self, call: dict[str, Any], result: Any, **extra: Any) -> None:
        reply_to = call.get("reply_to")
        if isinstance(result, CallRefused) or not self.valid_reply_to(reply_to):
            super().reply(call, result, **extra)
            return
        body = {"v": 1, "id": call["id"], "agent": self.agent_id, "ok": True, "result": result}
        self.publish(reply_to, json.dumps(body | extra).encode())


class UnknownKeysRefused(Base):  # type: ignore[misc,valid-type]
    """Refuses a call with keys beyond §5.5's (``MalformedPayload``)."""

    known = frozenset({"v", "id", "ts", "exp", "args", "reply_to", "sender"})

    def on_call(self, iface: str, method: str, payload: bytes) -> None:
        try:
            obj = example.decode(payload)  # otherwise readable, of the right size and version
        except CallRefused:
            obj = {}
        if isinstance(obj.get("id"), str) and set(obj) - self.known:
            self.reply(obj, CallRefused("sef.Error.MalformedPayload", "unknown keys"))
            return
        super().on_call(iface, method, payload)


class EnergyMethodWithoutReplyToIgnored(Base):  # type: ignore[misc,valid-type]
    """Does not execute an ``EnergyMethod`` call that wants no reply."""

    def on_call(self, iface: str, method: str, payload: bytes) -> None:
        obj = example.json_object(payload) or {}
        if method == "EnergyMethod" and obj and "reply_to" not in obj:
            return
        super().on_call(iface, method, payload)


class NoAppliedInReplies(Base):  # type: ignore[misc,valid-type]
    """Accepts EnergyMethod without saying whether the device applied it (no ``applied``)."""

    def execute(self, iface: str, method: str, args: list[Any]) -> Any:
        result, _extra = super().execute(iface, method, args)
        return result, {}


class NoReplyMethodsUnanswered(Base):  # type: ignore[misc,valid-type]
    """Takes the NoReply annotation as a rule: Rebirth is never answered, even with a
    ``reply_to``."""

    def on_call(self, iface: str, method: str, payload: bytes) -> None:
        obj = example.json_object(payload) or {}
        if (iface, method) == (AGENT, "Rebirth") and "reply_to" in obj:
            del obj["reply_to"]
            payload = json.dumps(obj).encode()
        super().on_call(iface, method, payload)


class DuplicateExecutedTwice(Base):  # type: ignore[misc,valid-type]
    """No de-duplication: a call delivered twice runs twice."""

    def is_duplicate(self, call: dict[str, Any]) -> bool:
        return False


class ExpiredExecuted(Base):  # type: ignore[misc,valid-type]
    """Executes calls past their ``exp``."""

    def is_expired(self, call: dict[str, Any]) -> bool:
        return False


class WrongErrorForUnknownInterface(Base):  # type: ignore[misc,valid-type]
    """Answers an unknown interface with ``...Error.UnknownMethod``."""

    def execute(self, iface: str, method: str, args: list[Any]) -> Any:
        if iface not in self.methods:
            raise CallRefused("org.freedesktop.DBus.Error.UnknownMethod", f"no {iface}")
        return super().execute(iface, method, args)


class WrongErrorForUnknownMethod(Base):  # type: ignore[misc,valid-type]
    """Answers an unknown method with ``...Error.Failed``."""

    def execute(self, iface: str, method: str, args: list[Any]) -> Any:
        if iface in self.methods and method not in self.methods[iface]:
            raise CallRefused("org.freedesktop.DBus.Error.Failed", f"no {method}")
        return super().execute(iface, method, args)


class ExtraArgumentsAccepted(Base):  # type: ignore[misc,valid-type]
    """Does not count the arguments: extra ones are ignored (``Ping(1)`` answers)."""

    def check_args(self, in_args: list[tuple[str, str]], args: list[Any]) -> None:
        super().check_args(in_args, args[: len(in_args)])


class Int16OutOfRangeAccepted(Base):  # type: ignore[misc,valid-type]
    """Checks argument types but not integer ranges."""

    def check_args(self, in_args: list[tuple[str, str]], args: list[Any]) -> None:
        try:
            super().check_args(in_args, args)
        except CallRefused as exc:
            if "out of range" not in str(exc):
                raise


class IgnoresGroupCalls(Base):  # type: ignore[misc,valid-type]
    """Announces its groups but never subscribes to their call topics."""

    def subscriptions(self) -> list[str]:
        return [t for t in super().subscriptions() if "/groups/" not in t]


class AnswersOtherAgentsCalls(Base):  # type: ignore[misc,valid-type]
    """Executes and answers calls addressed to any agent."""

    def subscriptions(self) -> list[str]:
        return [*super().subscriptions(), f"{self.root}/agents/+/call/+/+"]

    def addressed_to_me(self, kind: str, owner: str) -> bool:
        return kind == "agents" or bool(super().addressed_to_me(kind, owner))


class PublishesToInvalidReplyTo(Base):  # type: ignore[misc,valid-type]
    """Takes any topic without wildcards as ``reply_to``."""

    def valid_reply_to(self, reply_to: Any) -> bool:
        return isinstance(reply_to, str) and bool(reply_to) and not set("+#\0") & set(reply_to)


# -- the demo interface ----------------------------------------------------------------------
class OpenEndedNotLastAccepted(Base):  # type: ignore[misc,valid-type]
    """Takes an open-ended event anywhere in a sequence (it then lasts 0 s)."""

    def energy_method(self, cmds: list[list[Any]]) -> None:
        last = [list(cmd) for cmd in cmds]
        for cmd in last[:-1]:
            if isinstance(cmd, list) and len(cmd) == 3 and cmd[2] == 0:
                cmd[2] = 1
        super().energy_method(last)


class EndshedRefused(Base):  # type: ignore[misc,valid-type]
    """Knows only charge, discharge, idle and shed."""

    def energy_method(self, cmds: list[list[Any]]) -> None:
        if any(isinstance(cmd, list) and cmd and cmd[0] == "endshed" for cmd in cmds):
            raise CallRefused(example.INVALID_ARGS, "unknown command 'endshed'")
        super().energy_method(cmds)


class AtMost100Events(Base):  # type: ignore[misc,valid-type]
    """Refuses a sequence of more than 100 events (256 must be taken)."""

    def energy_method(self, cmds: list[list[Any]]) -> None:
        if len(cmds) > 100:
            raise CallRefused(example.INVALID_ARGS, f"cmds: {len(cmds)} events, at most 100")
        super().energy_method(cmds)


class OpenEndedEndsEarly(Base):  # type: ignore[misc,valid-type]
    """Ends an open-ended event after 1 s instead of at the next command."""

    def start_next_event(self) -> None:
        super().start_next_event()
        if self.event[2] == 0 and self.event[0] != "idle":
            self.event_ends = time.time() + 1.0


# -- robustness ------------------------------------------------------------------------------
class DropsConnectionOnMalformedJson(Base):  # type: ignore[misc,valid-type]
    """Drops its TCP connection when a call is not JSON (then reconnects, as after any
    lost connection): the will announces it offline."""

    def on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if "/call/" in msg.topic:
            try:
                json.loads(msg.payload)
            except ValueError:
                client.socket().shutdown(socket.SHUT_RDWR)  # no DISCONNECT: the will fires
                return
        super().on_message(client, userdata, msg)


class OversizedExecuted(Base):  # type: ignore[misc,valid-type]
    """Reads and executes a call over the size limit."""

    def on_call(self, iface: str, method: str, payload: bytes) -> None:
        if len(payload) <= example.MAX_PAYLOAD_BYTES:
            super().on_call(iface, method, payload)
            return
        call = json.loads(payload)
        result, extra = self.execute(iface, method, call["args"])
        self.reply(call, result, **extra)


class WrongVersionExecuted(Base):  # type: ignore[misc,valid-type]
    """Executes a call whatever its ``v`` (and with ``jws``/``cose`` keys)."""

    def on_call(self, iface: str, method: str, payload: bytes) -> None:
        obj = example.json_object(payload) or {}
        if (obj and obj.get("v") != 1) or "jws" in obj or "cose" in obj:
            obj = {k: v for k, v in obj.items() if k not in ("jws", "cose")} | {"v": 1}
            payload = json.dumps(obj).encode()
        super().on_call(iface, method, payload)


class MalformedNotAnswered(Base):  # type: ignore[misc,valid-type]
    """Drops a readable call with an invalid field silently (no MalformedPayload reply)."""

    def on_call(self, iface: str, method: str, payload: bytes) -> None:
        obj = example.json_object(payload) or {}
        try:
            example.check_call(obj)
        except CallRefused:
            if obj.get("v") == 1 and isinstance(obj.get("id"), str):
                return
        super().on_call(iface, method, payload)


class AnswersCallsWithoutStringId(Base):  # type: ignore[misc,valid-type]
    """Answers a call whose ``id`` is missing or not a string (with that id)."""

    def on_call(self, iface: str, method: str, payload: bytes) -> None:
        obj = example.json_object(payload) or {}
        if obj and not isinstance(obj.get("id"), str) and self.valid_reply_to(obj.get("reply_to")):
            refused = CallRefused("sef.Error.MalformedPayload", "field 'id' missing or invalid")
            self.reply({"id": obj.get("id"), "reply_to": obj["reply_to"]}, refused)
            return
        super().on_call(iface, method, payload)


@dataclass(frozen=True)
class BrokenAgent:
    """A broken agent and the one certification check it must fail.

    Attributes:
        agent_class: the variant of the example's ``BatteryAgent``.
        check_id: the ``sef certify`` check id (``suite.name``) it fails.
        overlaps: other checks that exercise the same rule on the way and MAY fail too
            (each one a redundancy of the suite, listed so that it stays visible).
        restart: whether that check restarts the agent (``--restart-cmd`` needed).
    """

    agent_class: type
    check_id: str
    overlaps: tuple[str, ...] = ()
    restart: bool = False

    @property
    def failing(self) -> set[str]:
        """The check ids a certification of this agent may FAIL (``check_id`` must)."""
        return {self.check_id, *self.overlaps}


BROKEN_AGENTS: dict[str, BrokenAgent] = {
    "birth_out_of_order": BrokenAgent(BirthOutOfOrder, "birth.order"),
    "status_not_retained": BrokenAgent(StatusNotRetained, "birth.retained"),
    "about_missing_field": BrokenAgent(AboutMissingField, "birth.about"),
    "wrong_interface_hash": BrokenAgent(WrongInterfaceHash, "birth.interface_xml"),
    # "every property is in the birth" is checked again by the retained snapshot and the
    # rebirth check: a missing property fails all three
    "property_never_published": BrokenAgent(
        PropertyNeverPublished, "birth.properties", ("birth.retained", "sessions.rebirth")
    ),
    "telemetry_without_timestamp": BrokenAgent(
        TelemetryWithoutTimeStamp, "demo.telemetry_timestamp"
    ),
    "seq_gap": BrokenAgent(SeqGap, "sessions.seq"),
    "bdseq_reused_on_restart": BrokenAgent(BdseqReusedOnRestart, "sessions.restart", restart=True),
    "no_will": BrokenAgent(NoWill, "sessions.will", restart=True),
    "subscribes_after_birth": BrokenAgent(SubscribesAfterBirth, "sessions.subscribed_before_birth"),
    "no_applied_in_replies": BrokenAgent(NoAppliedInReplies, "demo.applied"),
    "no_reply_methods_unanswered": BrokenAgent(
        NoReplyMethodsUnanswered, "calls.noreply_method_answered"
    ),
    "no_stale_death_repair": BrokenAgent(NoStaleDeathRepair, "sessions.stale_death"),
    # without a Rebirth the probe's live birth comes from a takeover: the stale-death
    # repair later in that session is then taken for a repair of the retained status
    "rebirth_ignored": BrokenAgent(
        RebirthIgnored, "sessions.rebirth", ("sessions.retained_status_ignored",)
    ),
    "repairs_retained_own_status": BrokenAgent(
        RepairsRetainedOwnStatus, "sessions.retained_status_ignored"
    ),
    "duplicate_executed_twice": BrokenAgent(DuplicateExecutedTwice, "calls.duplicate"),
    # calls.duplicate sends an expired call and a malformed one first (do they enter the
    # de-duplication window?) and expects their refusals
    "expired_executed": BrokenAgent(ExpiredExecuted, "calls.expired", ("calls.duplicate",)),
    "wrong_error_unknown_method": BrokenAgent(WrongErrorForUnknownMethod, "calls.unknown_method"),
    "int16_out_of_range_accepted": BrokenAgent(Int16OutOfRangeAccepted, "calls.int16_range"),
    "ignores_group_calls": BrokenAgent(IgnoresGroupCalls, "calls.group"),
    "answers_other_agents_calls": BrokenAgent(AnswersOtherAgentsCalls, "calls.not_addressed"),
    "publishes_to_invalid_reply_to": BrokenAgent(
        PublishesToInvalidReplyTo, "calls.reply_to_invalid"
    ),
    "drops_connection_on_malformed_json": BrokenAgent(
        DropsConnectionOnMalformedJson, "robustness.malformed"
    ),
    "reply_without_ts": BrokenAgent(ReplyWithoutTs, "calls.known_method"),
    "unknown_keys_refused": BrokenAgent(UnknownKeysRefused, "calls.unknown_keys"),
    "energy_method_without_reply_to_ignored": BrokenAgent(
        EnergyMethodWithoutReplyToIgnored, "calls.no_reply_wanted"
    ),
    "endshed_refused": BrokenAgent(EndshedRefused, "demo.commands"),
    "at_most_100_events": BrokenAgent(AtMost100Events, "demo.bounds_accepted"),
    "status_without_ts": BrokenAgent(StatusWithoutTs, "birth.status"),
    "keepalive_too_long": BrokenAgent(KeepaliveTooLong, "birth.keepalive"),
    "properties_at_qos0": BrokenAgent(PropertiesAtQos0, "birth.qos"),
    "bdseq_not_growing_on_reconnect": BrokenAgent(BdseqNotGrowingOnReconnect, "sessions.reconnect"),
    "wrong_error_unknown_interface": BrokenAgent(
        WrongErrorForUnknownInterface, "calls.unknown_interface"
    ),
    "extra_arguments_accepted": BrokenAgent(ExtraArgumentsAccepted, "calls.wrong_args"),
    "open_ended_not_last_accepted": BrokenAgent(OpenEndedNotLastAccepted, "demo.bounds_refused"),
    "open_ended_ends_early": BrokenAgent(OpenEndedEndsEarly, "demo.open_ended"),
    "oversized_executed": BrokenAgent(OversizedExecuted, "robustness.oversized"),
    "wrong_version_executed": BrokenAgent(WrongVersionExecuted, "robustness.wrong_version"),
    "malformed_not_answered": BrokenAgent(
        MalformedNotAnswered, "robustness.malformed_reply", ("calls.duplicate",)
    ),
    "answers_calls_without_string_id": BrokenAgent(
        AnswersCallsWithoutStringId, "robustness.unanswerable"
    ),
}
"""Broken agent name -> its variant and the check it must fail."""

AGENT_CLASSES: dict[str, type] = {"example": Base} | {
    name: broken.agent_class for name, broken in BROKEN_AGENTS.items()
}
"""Every agent this script runs: the unbroken example and the broken ones."""

SCRIPT = str(Path(__file__).resolve())
WITHOUT_SEF = (
    "import runpy, sys; sys.modules['sef'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)
"""``python -c`` code that runs a script with ``import sef`` made impossible."""


def agent_command(name: str, agent_args: list[str]) -> list[str]:
    """The command line of agent ``name``: the example runs as the vendor's script itself,
    with ``sef`` made unimportable; a broken one through this module."""
    if name == "example":
        return [sys.executable, "-c", WITHOUT_SEF, str(EXAMPLE), *agent_args]
    return [sys.executable, SCRIPT, name, *agent_args]


def start(argv: list[str], pidfile: Path, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a session of its own and write its pid into ``pidfile``."""
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    pidfile.write_text(str(process.pid))
    return process


def restart_command(argv: list[str], pidfile: Path, log: Path | None = None) -> str:
    """A ``--restart-cmd`` for ``sef certify``: SIGKILL the process whose pid is in
    ``pidfile`` and start ``argv`` again (the pidfile then names the new process)."""
    logs = ["--log", str(log)] if log is not None else []
    return subprocess.list2cmdline(
        [sys.executable, SCRIPT, "--restart", str(pidfile), *logs, "--", *argv]
    )


def kill(pidfile: Path) -> None:
    """SIGKILL the process named in ``pidfile`` and wait (≤ 5 s) until it is gone."""
    try:
        pid = int(pidfile.read_text())
    except (OSError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie waiting for its parent does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


AGENT_ID = "cert-a1"
GROUPS = ("feeder-1", "program-2")


@dataclass
class CertifyRun:
    """The outcome of ``sef certify`` against one agent.

    Attributes:
        exit_code: the command's exit code.
        outcomes: check id -> ``PASS`` / ``FAIL`` / ``SKIP`` (from its ``report.json``).
        output: what the command printed, then the agent's log.
    """

    exit_code: int
    outcomes: dict[str, str]
    output: str

    def failed(self) -> set[str]:
        """The ids of the checks that FAILed."""
        return {check for check, outcome in self.outcomes.items() if outcome == "FAIL"}


def wait_online(broker_url: str, agent_id: str, timeout_s: float = 10.0) -> bool:
    """Whether the agent's retained status says online within ``timeout_s``."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    url = urlparse(broker_url)
    online = threading.Event()

    def on_message(_c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        with contextlib.suppress(ValueError):
            if json.loads(message.payload).get("state") == "online":
                online.set()

    watch = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"watch-{os.getpid()}")
    watch.on_message = on_message
    watch.on_connect = lambda c, *_: c.subscribe(f"sef/agents/{agent_id}/status", 1)
    watch.connect(url.hostname or "127.0.0.1", url.port or 1883)
    watch.loop_start()
    try:
        return online.wait(timeout_s)
    finally:
        watch.disconnect()
        watch.loop_stop()


def certify_agent(
    name: str, broker_url: str, workdir: Path, certify_args: Sequence[str] = ()
) -> CertifyRun:
    """Start agent ``name`` (``example`` or a broken one) on ``broker_url``, run
    ``sef certify --insecure --level recommended`` with a ``--restart-cmd`` (and
    ``certify_args``) against it, stop every process it had."""
    workdir.mkdir(parents=True, exist_ok=True)
    pidfile, log, report = workdir / "agent.pid", workdir / "agent.log", workdir / "report"
    argv = agent_command(name, ["--broker", broker_url, "--id", AGENT_ID])
    argv += [arg for group in GROUPS for arg in ("--group", group)]
    first = start(argv, pidfile, log)
    try:
        if not wait_online(broker_url, AGENT_ID):
            raise AssertionError(f"agent {name} never online:\n{log.read_text()[-3000:]}")
        done = subprocess.run(
            [sys.executable, "-m", "sef", "certify", "--insecure", "--broker", broker_url,
             AGENT_ID, "--level", "recommended", "--report", str(report),
             "--restart-cmd", restart_command(argv, pidfile, log), *certify_args],
            capture_output=True, text=True, timeout=100, check=False,
        )  # fmt: skip
    finally:
        kill(pidfile)
        first.kill()
        first.wait()
    results = json.loads((report / "report.json").read_text())["results"]
    outcomes = {r["id"]: r["outcome"] for r in results}
    output = f"{done.stdout}{done.stderr}\n--- agent log ---\n{log.read_text()[-4000:]}"
    return CertifyRun(done.returncode, outcomes, output)


def main(argv: list[str]) -> None:
    """``broken_agents.py NAME [the example's options]``: run one agent;
    ``broken_agents.py --restart PIDFILE [--log FILE] -- ARGV...``: restart a process."""
    if argv[:1] == ["--restart"] and "--" in argv:
        split = argv.index("--")
        options, command = argv[1:split], argv[split + 1 :]
        log = Path(options[2]) if options[1:2] == ["--log"] else None
        pidfile = Path(options[0])
        kill(pidfile)
        start(command, pidfile, log)
        return
    if not argv or argv[0] not in AGENT_CLASSES:
        names = ", ".join(AGENT_CLASSES)
        raise SystemExit(f"usage: broken_agents.py NAME ...; NAME one of {names}")
    example.main(AGENT_CLASSES[argv[0]], argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])

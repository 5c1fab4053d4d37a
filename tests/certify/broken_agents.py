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
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

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
    """The online status is published without the retain flag."""

    def publish_status(self) -> None:
        status = {"state": "online", "bdseq": self.bdseq, "keepalive_s": self.keepalive_s}
        self.publish_own("status", status, retain=False)


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


class NoWill(Base):  # type: ignore[misc,valid-type]
    """Connects without a will."""

    def will(self) -> dict[str, Any] | None:
        return None


class NoStaleDeathRepair(Base):  # type: ignore[misc,valid-type]
    """Ignores a stale offline status on its own status topic."""

    def on_own_status(self, payload: bytes) -> None:
        return


class RebirthIgnored(Base):  # type: ignore[misc,valid-type]
    """Answers Rebirth but publishes nothing."""

    def rebirth(self) -> None:
        return


# -- calls -----------------------------------------------------------------------------------
class DuplicateExecutedTwice(Base):  # type: ignore[misc,valid-type]
    """No de-duplication: a call delivered twice runs twice."""

    def is_duplicate(self, call: dict[str, Any]) -> bool:
        return False


class ExpiredExecuted(Base):  # type: ignore[misc,valid-type]
    """Executes calls past their ``exp``."""

    def is_expired(self, call: dict[str, Any]) -> bool:
        return False


class WrongErrorForUnknownMethod(Base):  # type: ignore[misc,valid-type]
    """Answers an unknown method with ``...Error.Failed``."""

    def execute(self, iface: str, method: str, args: list[Any]) -> Any:
        if iface in self.methods and method not in self.methods[iface]:
            raise CallRefused("org.freedesktop.DBus.Error.Failed", f"no {method}")
        return super().execute(iface, method, args)


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


@dataclass(frozen=True)
class BrokenAgent:
    """A broken agent and the one certification check it must fail.

    Attributes:
        agent_class: the variant of the example's ``BatteryAgent``.
        check_id: the ``sef certify`` check id (``suite.name``) it fails.
        overlaps: other checks that test the same rule again and therefore fail too
            (each one is a redundancy of the suite, listed so that it stays visible).
        restart: whether that check restarts the agent (``--restart-cmd`` needed).
    """

    agent_class: type
    check_id: str
    overlaps: tuple[str, ...] = ()
    restart: bool = False

    @property
    def failing(self) -> set[str]:
        """The check ids a certification of this agent must FAIL, no more, no fewer."""
        return {self.check_id, *self.overlaps}


BROKEN_AGENTS: dict[str, BrokenAgent] = {
    "birth_out_of_order": BrokenAgent(BirthOutOfOrder, "birth.order"),
    "status_not_retained": BrokenAgent(StatusNotRetained, "birth.retained"),
    "about_missing_field": BrokenAgent(AboutMissingField, "birth.about"),
    "wrong_interface_hash": BrokenAgent(WrongInterfaceHash, "birth.interface_xml"),
    "property_never_published": BrokenAgent(PropertyNeverPublished, "birth.properties"),
    "telemetry_without_timestamp": BrokenAgent(
        TelemetryWithoutTimeStamp, "demo.telemetry_timestamp", ("demo.telemetry_changes",)
    ),
    "seq_gap": BrokenAgent(SeqGap, "sessions.seq"),
    "bdseq_reused_on_restart": BrokenAgent(BdseqReusedOnRestart, "sessions.restart", restart=True),
    "no_will": BrokenAgent(NoWill, "sessions.will", restart=True),
    "no_stale_death_repair": BrokenAgent(NoStaleDeathRepair, "sessions.stale_death"),
    "rebirth_ignored": BrokenAgent(RebirthIgnored, "sessions.rebirth"),
    "duplicate_executed_twice": BrokenAgent(DuplicateExecutedTwice, "calls.duplicate"),
    "expired_executed": BrokenAgent(ExpiredExecuted, "calls.expired"),
    "wrong_error_unknown_method": BrokenAgent(WrongErrorForUnknownMethod, "calls.unknown_method"),
    "int16_out_of_range_accepted": BrokenAgent(
        Int16OutOfRangeAccepted, "calls.int16_range", ("demo.bounds_refused",)
    ),
    "ignores_group_calls": BrokenAgent(IgnoresGroupCalls, "calls.group"),
    "answers_other_agents_calls": BrokenAgent(AnswersOtherAgentsCalls, "calls.not_addressed"),
    "publishes_to_invalid_reply_to": BrokenAgent(
        PublishesToInvalidReplyTo, "calls.reply_to_invalid"
    ),
    "drops_connection_on_malformed_json": BrokenAgent(
        DropsConnectionOnMalformedJson, "robustness.malformed"
    ),
}
"""Broken agent name -> its variant and the check it must fail."""

AGENT_CLASSES: dict[str, type] = {"example": Base} | {
    name: broken.agent_class for name, broken in BROKEN_AGENTS.items()
}
"""Every agent this script runs: the unbroken example and the broken ones."""


def command(name: str, agent_args: list[str], pidfile: Path | None = None) -> list[str]:
    """The command line that runs agent ``name`` (``pidfile``: it writes its pid there)."""
    pid = ["--pidfile", str(pidfile)] if pidfile is not None else []
    return [sys.executable, str(Path(__file__).resolve()), name, *pid, *agent_args]


def restart_command(name: str, agent_args: list[str], pidfile: Path) -> str:
    """A ``--restart-cmd`` for ``sef certify``: SIGKILL the agent whose pid is in
    ``pidfile`` and start it again, detached (the new process rewrites the pidfile)."""
    restart = [sys.executable, str(Path(__file__).resolve()), "--restart", str(pidfile), name]
    restart += agent_args
    return subprocess.list2cmdline(restart)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie waiting for its parent does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _restart(pidfile: Path, name: str, agent_args: list[str]) -> None:
    """Kill the agent of ``pidfile`` (SIGKILL), wait for it to end, start a new one."""
    pid = int(pidfile.read_text())
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    pidfile.unlink(missing_ok=True)
    subprocess.Popen(
        command(name, agent_args, pidfile),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 5.0
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def main(argv: list[str]) -> None:
    """``broken_agents.py NAME [--pidfile F] [the example's options]``: run one agent;
    ``broken_agents.py --restart PIDFILE NAME [options]``: restart it (see
    :func:`restart_command`)."""
    if argv[:1] == ["--restart"] and len(argv) >= 3:
        _restart(Path(argv[1]), argv[2], argv[3:])
        return
    if not argv or argv[0] not in AGENT_CLASSES:
        raise SystemExit(
            f"usage: broken_agents.py NAME ...; NAME one of {', '.join(AGENT_CLASSES)}"
        )
    name, rest = argv[0], argv[1:]
    if rest[:1] == ["--pidfile"] and len(rest) >= 2:
        pidfile, rest = Path(rest[1]), rest[2:]
        pidfile.write_text(str(os.getpid()))
    example.main(AGENT_CLASSES[name], rest)


if __name__ == "__main__":
    main(sys.argv[1:])

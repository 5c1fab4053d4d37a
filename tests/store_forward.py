"""Acceptance harness of home-gateway store-and-forward (issue 19): an outage, then a count.

The rig (:class:`StoreForwardRig`) is a control Mosquitto (the caller's), an EMS with a
real SQLite store in a temporary directory, one :class:`~sef.gateway.Gateway` whose
uplink runs through a :class:`~tcp_cut.CuttableLink`, and N in-process
:class:`~sef.agents.virtual_battery.VirtualBatteryAgent` agents (telemetry period = their
model step, plain-text ``--insecure`` connections to the gateway's local listener).

**Ground truth.** Each agent gets its own :class:`RecordingClock`, and its
``set_property`` is wrapped: every Telemetry update the agent *produces* (connected or
not) is logged as a :class:`Sample` (agent, sender time ``ts`` it stamped, when), the
``ts`` being the clock reading the agent took while producing it (the PropertyUpdate's
``ts``). The agent's ``bus.publish`` is wrapped too, to log what it handed to its MQTT
client (``sent``; ``backfill`` copies counted): a diagnostic, not the truth.

**An outage** (:meth:`StoreForwardRig.cut` of the uplink, or
:meth:`StoreForwardRig.freeze_home`, SIGSTOP/SIGCONT of the gateway's Mosquitto) is
followed by a wait until every sample produced from the agents' first birth up to the
restore is in the store's ``telemetry`` table under its own (agent, key, ts) (or a
timeout), and a settle time so that late copies show; then :class:`OutageFigures` tells
what was produced, stored, missing, stored more than once, what the EMS counted, what the
relay counted and how long the catch-up took.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sef.agents.virtual_battery import VirtualBatteryAgent
from sef.broker import Mosquitto
from sef.bus import BrokerURL
from sef.clock import RealClock
from sef.ems import EMS
from sef.ems.store import Store
from sef.gateway import Gateway
from sef.interface import DEMO_INTERFACE
from support import wait_for
from tcp_cut import CuttableLink

TELEMETRY_KEY = f"{DEMO_INTERFACE}.Telemetry"
"""The store's key of the agents' Telemetry property."""
DROPPED_LINE = "Outgoing messages are being dropped"
"""What Mosquitto logs when a client's queue overflows."""

ProgressFn = Callable[[str, float, float], None]
"""Called with (phase ``"outage"`` or ``"catch-up"``, done, total): seconds of the outage,
then samples stored of those required."""


class RecordingClock(RealClock):
    """The wall clock, remembering its last reading (``last``, Unix s) and counting them."""

    def __init__(self) -> None:
        self.last = 0.0
        self.readings = 0

    def now(self) -> float:
        self.last = time.time()
        self.readings += 1
        return self.last


@dataclass(frozen=True, slots=True)
class Sample:
    """One Telemetry update an agent produced: its sender time ``ts`` (Unix s) and when it
    was produced (``time.monotonic()``, s)."""

    agent_id: str
    ts: float
    produced: float


@dataclass
class SampleLog:
    """Every Telemetry sample the agents produced, and the ``ts`` they published."""

    samples: list[Sample] = field(default_factory=list)
    sent: set[tuple[str, float]] = field(default_factory=set)
    backfilled: int = 0

    def attach(self, agent: VirtualBatteryAgent, clock: RecordingClock) -> None:
        """Wrap ``agent.set_property`` and the publish methods of ``agent.bus`` (before the
        agent starts)."""
        set_property = agent.set_property
        topic = agent.topics.prop(agent.agent_id, DEMO_INTERFACE, "Telemetry")

        def recording_set(interface: str, name: str, value: Any) -> bool:
            readings, before = clock.readings, clock.now()
            changed = set_property(interface, name, value)
            if changed and interface == DEMO_INTERFACE and name == "Telemetry":
                # the PropertyUpdate's ts is the clock reading taken inside set_property
                ts = clock.last if clock.readings > readings + 1 else before
                self.samples.append(Sample(agent.agent_id, ts, time.monotonic()))
            return changed

        agent.set_property = recording_set  # type: ignore[method-assign]
        for method in ("publish", "publish_acked"):  # publish_acked: agents that backfill
            original = getattr(agent.bus, method, None)
            if original is not None:
                setattr(agent.bus, method, self._recording(original, agent.agent_id, topic))

    def _recording(
        self, publish: Callable[..., Any], agent_id: str, topic: str
    ) -> Callable[..., Any]:
        """``publish``, logging the ``ts`` of each Telemetry payload it took."""

        def recording(topic_: str, payload: bytes, **kwargs: Any) -> Any:
            result = publish(topic_, payload, **kwargs)
            if topic_ == topic:
                obj = json.loads(payload)
                self.sent.add((agent_id, float(obj["ts"])))
                self.backfilled += bool(obj.get("backfill"))
            return result

        return recording


@dataclass
class RigConfig:
    """Sizes and timings of a rig (s are real seconds)."""

    agents: int = 1
    telemetry_s: float = 1.0
    agent_keepalive_s: int = 2
    gateway_keepalive_s: int = 2
    restart_s: tuple[int, int] = (1, 2)
    warmup_s: float = 3.0
    catch_up_timeout_s: float = 60.0
    settle_s: float = 2.0
    """Wait after the catch-up before counting, so late copies (replays) are counted."""


@dataclass
class OutageFigures:
    """What an outage did. Sample counts are Telemetry updates; "required" = produced
    from the agents' first birth up to the restore."""

    kind: str  # "cut" (uplink) or "freeze" (home broker)
    outage_s: float
    agents: int
    telemetry_s: float
    produced: int  # required samples
    produced_outage: int  # of those, produced during the outage
    stored_outage: int  # outage samples found in the store
    missing: int  # required samples not in the store
    missing_outage: int
    stored_more_than_once: int  # (agent, key, ts) groups with more than one row
    not_sent: int  # required samples the agent never handed to its MQTT client
    backfilled: int  # publishes flagged "backfill" by the agents
    gaps: int  # sum of the EMS registry's gap counts
    duplicates: int | None  # sum of the registry's duplicate counts (None: not counted)
    store_duplicates: int  # rows the store did not insert again (the recorder's count)
    dead_letters: int
    relay: dict[str, int | None]  # forwarded, queued, dropped, high_water (None: no relay)
    dropped_log_gateway: int  # DROPPED_LINE in the gateway's Mosquitto log
    dropped_log_control: int  # DROPPED_LINE in the control broker's log
    catch_up_s: float | None  # restore → last required sample received by the EMS, s
    gateway_broker_peak_rss_kib: int | None
    process_peak_rss_kib: int  # this process: EMS, relay, agents
    load: tuple[float, float, float]  # load average at the end

    def criteria(self) -> list[tuple[str, bool, str]]:
        """(criterion, passed, why) for: exactly once, zero gaps, no overflow."""
        once = self.missing == 0 and self.stored_more_than_once == 0
        dropped = self.relay.get("dropped")
        overflow = (dropped or 0) + self.dropped_log_gateway + self.dropped_log_control
        return [
            (
                "every sample stored exactly once",
                once,
                f"{self.missing} missing ({self.missing_outage} of the outage), "
                f"{self.stored_more_than_once} stored more than once",
            ),
            ("zero sequence gaps", self.gaps == 0, f"{self.gaps} gaps counted by the EMS"),
            (
                "no queue overflow",
                overflow == 0,
                f"relay dropped {dropped}, Mosquitto '{DROPPED_LINE}': "
                f"{self.dropped_log_gateway} (gateway) + {self.dropped_log_control} (control)",
            ),
        ]


class StoreForwardRig:
    """The rig (module docstring); ``async with`` starts it and waits for the agents."""

    def __init__(
        self,
        control: Mosquitto,
        workdir: Path,
        config: RigConfig | None = None,
        progress: ProgressFn | None = None,
    ) -> None:
        self.control = control
        self.workdir = workdir
        self.config = config or RigConfig()
        self.progress = progress or (lambda phase, done, total: None)
        uid = uuid.uuid4().hex[:6]
        self.home_id = f"home-sf-{uid}"
        self.agent_ids = [f"sf-{uid}-{i:04d}" for i in range(self.config.agents)]
        self.db_path = workdir / "ems.db"
        self.log = SampleLog()
        (workdir / "gateway").mkdir(parents=True, exist_ok=True)
        self.store = Store.open(f"sqlite:///{self.db_path}")
        self.link = CuttableLink(BrokerURL.parse(control.url).port)
        self.gateway = Gateway(
            BrokerURL("127.0.0.1", self.link.port),
            self.home_id,
            advertise=False,
            keepalive_s=self.config.gateway_keepalive_s,
            restart_s=self.config.restart_s,
            workdir=workdir / "gateway",
        )
        self.ems = EMS(control.url, f"ems-sf-{uid}", keepalive_s=2, store=self.store)
        self.agents: list[VirtualBatteryAgent] = []
        self.count_from = 0.0

    async def __aenter__(self) -> StoreForwardRig:
        await self.link.restore()
        await self.gateway.start()
        await self.ems.start()
        for agent_id in self.agent_ids:
            clock = RecordingClock()
            agent = VirtualBatteryAgent(
                agent_id,
                self.gateway.url,
                step_s=self.config.telemetry_s,
                clock=clock,
                keepalive_s=self.config.agent_keepalive_s,
            )
            self.log.attach(agent, clock)
            self.agents.append(agent)
        for first in range(0, len(self.agents), 50):
            await asyncio.gather(*(a.start() for a in self.agents[first : first + 50]))
        await wait_for(self._all_online, 30.0 + 0.2 * len(self.agents), step_s=0.1)
        self.count_from = time.monotonic()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for first in range(0, len(self.agents), 50):
            await asyncio.gather(
                *(a.stop() for a in self.agents[first : first + 50]), return_exceptions=True
            )
        await self.ems.stop()
        await self.gateway.stop()
        await self.link.cut()
        self.store.close()

    def _all_online(self) -> bool:
        records = (self.ems.registry.get(a) for a in self.agent_ids)
        return all(r is not None and r.online is True for r in records)

    # -- outages ------------------------------------------------------------------------
    async def cut(self, seconds: float) -> OutageFigures:
        """Cut the gateway's uplink for ``seconds`` (real s), restore it, count."""
        return await self._outage("cut", seconds, self.link.cut, self.link.restore)

    async def freeze_home(self, seconds: float) -> OutageFigures:
        """SIGSTOP the gateway's Mosquitto for ``seconds`` (real s), SIGCONT it, count."""
        pid = self._home_broker_pid()

        async def stop() -> None:
            os.kill(pid, signal.SIGSTOP)

        async def resume() -> None:
            os.kill(pid, signal.SIGCONT)

        return await self._outage("freeze", seconds, stop, resume)

    def _home_broker_pid(self) -> int:
        broker = self.gateway.broker
        assert broker is not None and broker.process is not None, "gateway not started"
        return broker.process.pid

    async def _outage(
        self,
        kind: str,
        seconds: float,
        begin: Callable[[], Awaitable[None]],
        end: Callable[[], Awaitable[None]],
    ) -> OutageFigures:
        await asyncio.sleep(self.config.warmup_s)
        began = time.monotonic()
        await begin()
        try:
            while (elapsed := time.monotonic() - began) < seconds:
                self.progress("outage", elapsed, seconds)
                await asyncio.sleep(min(1.0, seconds - elapsed))
            self.progress("outage", seconds, seconds)
        finally:
            await end()
        restored, restored_wall = time.monotonic(), time.time()
        required = [s for s in self.log.samples if self.count_from <= s.produced <= restored]
        deadline = restored + self.config.catch_up_timeout_s
        while True:
            rows = await asyncio.to_thread(self._stored_rows)
            stored = sum((s.agent_id, s.ts) in rows for s in required)
            self.progress("catch-up", stored, len(required))
            if stored == len(required) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(self.config.settle_s)
        rows = await asyncio.to_thread(self._stored_rows)
        return self._figures(kind, seconds, began, restored_wall, required, rows)

    def _stored_rows(self) -> dict[tuple[str, float], tuple[int, float]]:
        """(agent, ts) → (rows, latest receipt time, Unix s) of the Telemetry rows stored."""
        with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)) as db:
            found = db.execute(
                "SELECT agent_id, ts, COUNT(*), MAX(received) FROM telemetry "
                "WHERE key = ? GROUP BY agent_id, ts",
                (TELEMETRY_KEY,),
            ).fetchall()
        return {(agent, ts): (count, received) for agent, ts, count, received in found}

    def _figures(
        self,
        kind: str,
        seconds: float,
        began: float,
        restored_wall: float,
        required: list[Sample],
        rows: dict[tuple[str, float], tuple[int, float]],
    ) -> OutageFigures:
        outage = [s for s in required if s.produced >= began]
        missing = [s for s in required if (s.agent_id, s.ts) not in rows]
        received = [rows[(s.agent_id, s.ts)][1] for s in required if (s.agent_id, s.ts) in rows]
        records = [r for a in self.agent_ids if (r := self.ems.registry.get(a)) is not None]
        counted = [getattr(r, "duplicates", None) for r in records]
        recorder = self.ems.recorder
        return OutageFigures(
            kind=kind,
            outage_s=seconds,
            agents=len(self.agents),
            telemetry_s=self.config.telemetry_s,
            produced=len(required),
            produced_outage=len(outage),
            stored_outage=sum((s.agent_id, s.ts) in rows for s in outage),
            missing=len(missing),
            missing_outage=sum(s.produced >= began for s in missing),
            stored_more_than_once=sum(count > 1 for count, _ in rows.values()),
            not_sent=sum((s.agent_id, s.ts) not in self.log.sent for s in required),
            backfilled=self.log.backfilled,
            gaps=sum(r.gaps for r in records),
            duplicates=None if None in counted else sum(int(c or 0) for c in counted),
            store_duplicates=recorder.duplicates if recorder is not None else 0,
            dead_letters=self.store.count_dead_letters(),
            relay=self.relay_counters(),
            dropped_log_gateway=_count_lines(self.gateway.broker, DROPPED_LINE),
            dropped_log_control=_count_lines(self.control, DROPPED_LINE),
            catch_up_s=(
                max(0.0, max(received) - restored_wall) if received and not missing else None
            ),
            gateway_broker_peak_rss_kib=_peak_rss_kib(self.gateway.broker),
            process_peak_rss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            load=os.getloadavg(),
        )

    def relay_counters(self) -> dict[str, int | None]:
        """The gateway relay's counters (``None`` each when the gateway has no relay)."""
        relay = getattr(self.gateway, "relay", None)
        names = ("forwarded", "queued", "dropped", "high_water")
        return {n: _as_int(getattr(relay, n, None)) for n in names}


def _as_int(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) else None


def _count_lines(broker: Mosquitto | None, text: str) -> int:
    """Lines of ``broker``'s log holding ``text``."""
    if broker is None or (broker.workdir is None and broker.log_dir is None):
        return 0
    try:
        with broker.log_path.open(errors="replace") as log:
            return sum(text in line for line in log)
    except FileNotFoundError:
        return 0


def _peak_rss_kib(broker: Mosquitto | None) -> int | None:
    """Peak resident memory (``VmHWM``, KiB) of ``broker``'s process, if it runs."""
    if broker is None or broker.process is None:
        return None
    try:
        status = Path(f"/proc/{broker.process.pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None

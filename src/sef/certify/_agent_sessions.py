"""What the certifier does to an agent's session: take a live birth (``Rebirth``, or a
reconnection), see the retained messages as a new subscriber would, take the agent's
client id over once, have its process restarted once (a mixin of :class:`Probe`)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sef.bus import BusClient, BusError, Message
from sef.certify._model import CheckFailed, CheckSkipped, Observed
from sef.interface import InterfaceError, load_xml
from sef.security import Security

if TYPE_CHECKING:
    from sef.certify._probe import ProbeSettings

__all__ = ["AgentSessions", "announced_interfaces"]

STATUS = "status"


class AgentSessions:
    """Births, the retained snapshot, the takeover and the restart of :class:`Probe`."""

    settings: ProbeSettings
    security: Security | None
    agent_id: str
    about: dict[str, Any] | None
    interfaces: dict[str, bytes]
    blobs: dict[str, bytes]
    _own_xml: set[str]
    stream: list[Observed]
    reply_topic: str
    bus: BusClient
    _prefix: str
    _snapshot: dict[str, Observed] | None
    _live_birth: list[Observed] | None
    _reconnected: int | None
    _restarted: int | None

    if TYPE_CHECKING:

        def mark(self) -> int: ...
        def topic(self, suffix: str) -> str: ...
        def agent_topic(self, suffix: str) -> str: ...
        def agent_messages(self, mark: int = 0) -> list[Observed]: ...
        async def _until(self, found: Callable[[], Any], timeout_s: float) -> Any: ...
        async def _settle(self, quiet_s: float, max_s: float) -> None: ...
        def _client(self, client_id: str, on_message: Callable[[Message], object]) -> BusClient: ...
        async def call(
            self, interface: str, method: str, args: list[Any], *, reply: bool = True
        ) -> dict[str, Any] | None: ...

    def xml_from_hash(self, name: str) -> bool:
        """Whether interface ``name``'s XML is known from its hash topic only (protocol
        version 2), not from the agent's own topic (version 1)."""
        return name in self.interfaces and name not in self._own_xml

    def expected_properties(self) -> list[tuple[str, str]]:
        """(interface, property) of every readable property of the announced interfaces."""
        found = []
        for name in announced_interfaces(self.about):
            try:
                node = load_xml(self.interfaces.get(name, b""))
            except InterfaceError:
                continue
            iface = node.interfaces.get(name)
            if iface is not None:
                found += [(name, p) for p, prop in iface.properties.items() if prop.readable]
        return found

    async def _birth_after(self, mark: int, timeout_s: float) -> list[Observed] | None:
        """The first birth (status online seq 0) after ``mark``, up to its last property
        (or until ``settle_s`` of quiet)."""
        status_topic = self.agent_topic(STATUS)

        def start() -> int | None:
            for i, m in enumerate(self.stream[mark:], mark):
                if m.topic == status_topic and _is_birth(m):
                    return i
            return None

        first = await self._until(start, timeout_s)
        if first is None:
            return None
        wanted = {self.agent_topic("about")}

        def complete() -> bool:
            topics = {m.topic for m in self.agent_messages(first)}
            props = {self.agent_topic(f"props/{i}/{p}") for i, p in self.expected_properties()}
            xml = {  # on the agent's own topic, unless known from its hash topic (v2)
                self.agent_topic(f"interfaces/{n}")
                for n in announced_interfaces(self.about)
                if not self.xml_from_hash(n)
            }
            return (wanted | props | xml) <= topics

        await self._until(complete, 3.0)
        await self._settle(min(0.3, self.settings.settle_s), max_s=1.0)
        return self.agent_messages(first)

    async def live_birth(self) -> list[Observed]:
        if self._live_birth is None:
            mark = self.mark()
            await self.call("sef.Agent", "Rebirth", [], reply=False)
            birth = await self._birth_after(mark, 3.0)
            if birth is None:
                try:
                    mark = await self.reconnect_agent()
                except CheckSkipped as exc:
                    raise CheckFailed(f"no birth after sef.Agent.Rebirth; {exc}") from None
                birth = await self._birth_after(mark, 10.0)
            if birth is None:
                raise CheckFailed("no live birth: none after Rebirth nor after a reconnection")
            self._live_birth = birth
        return self._live_birth

    async def retained_snapshot(self, settle_s: float = 0.5) -> dict[str, Observed]:
        """Subscribe again on the probe's own connection: the broker sends the retained
        messages again, as to a new subscriber (MQTT 3.1.1 §3.8.4); they are collected
        here, not added to the stream. (A second connection would not do: a broker that
        makes the client id the certificate's identity would hand it our session.)"""
        self._snapshot = {}
        try:
            await self.bus.subscribe(self._prefix + "#", qos=2)
            await self.bus.subscribe(self.topic("interfaces/+"), qos=2)
            await self.bus.subscribe(self.reply_topic, qos=2)
            await asyncio.sleep(settle_s)
            got = self._snapshot
        finally:
            self._snapshot = None
        return {t: m for t, m in got.items() if "/call/" not in t}

    async def reconnect_agent(self) -> int:
        if self._reconnected is not None:
            return self._reconnected
        if self.security is not None:
            raise CheckSkipped(
                "with credentials the certifier cannot take the agent's client id over (a "
                "secure broker makes the client id the certificate's identity): give "
                "--restart-cmd"
            )
        mark = self.mark()
        intruder = self._client(self.agent_id, lambda message: None)
        try:
            await intruder.start(timeout_s=5.0)
        except BusError as exc:
            raise CheckSkipped(f"the broker refused a client with the agent's id: {exc}") from None
        finally:
            await intruder.stop()
        self._reconnected = mark
        return mark

    async def restart_agent(self) -> int:
        if self._restarted is not None:
            return self._restarted
        command = self.settings.restart_cmd
        if command is None and not self.settings.interactive:
            raise CheckSkipped("no --restart-cmd given and no terminal to ask an operator")
        mark = self.mark()
        if command is not None:
            process = await asyncio.create_subprocess_shell(
                command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
            code = await process.wait()
            if code != 0:
                raise CheckFailed(f"--restart-cmd exited with code {code}")
        else:
            print(
                f"\n>>> Restart agent {self.agent_id} now (stop its process and start it "
                f"again); waiting up to {self.settings.restart_timeout_s:.0f} s …",
                file=sys.stderr,
                flush=True,
            )
        self._restarted = mark
        return mark


def _is_birth(message: Observed) -> bool:
    try:
        data = message.json()
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("state") == "online" and data.get("seq") == 0


def announced_interfaces(about: dict[str, Any] | None) -> list[str]:
    """The interface names an About payload lists (those well formed)."""
    refs = (about or {}).get("interfaces")
    if not isinstance(refs, list):
        return []
    return [r["name"] for r in refs if isinstance(r, dict) and isinstance(r.get("name"), str)]

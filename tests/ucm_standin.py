"""Stand-in SGDs for UCM tests (imported by module name; no package): a bare CTA-2045 link
on a pty that link-ACKs every frame and answers only what a test asks (:class:`AckOnlySgd`),
and a byte-level script that link-ACKs, records and writes raw frames (:class:`ScriptedSgd`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from sef.agents.ucm import UCMAgent
from sef.clock import ScaledClock
from sef.interface import DEMO_INTERFACE
from sef.protocols import cta2045 as cta
from support import wait_for
from ucm_helpers import FAST

ACK = bytes.fromhex("06 00")

#: The UCM waits 0.4 s for an answer after the link ACK (real CTA-2045 timing: 1.5 s).
TIMING = replace(FAST, response_timeout_s=0.4)


@dataclass
class AckOnlySgd:
    """Link-ACKs every frame; answers only the message classes in ``answers``."""

    link: cta.Link
    answers: dict[type[cta.Message], Callable[[cta.Message], cta.Message]] = field(
        default_factory=dict
    )
    received: list[tuple[float, cta.Message]] = field(default_factory=list)

    async def serve(self) -> None:
        async for message in self.link:
            self.received.append((time.monotonic(), message))
            answer = self.answers.get(type(message))
            if answer is not None:
                with contextlib.suppress(cta.CtaError):
                    await self.link.send(answer(message))

    def count(self, kind: type[cta.Message], since: float = 0.0) -> int:
        return sum(1 for t, m in self.received if isinstance(m, kind) and t >= since)


@contextlib.asynccontextmanager
async def ack_only_rig(
    broker_url: str,
    name: str,
    answers: dict[type[cta.Message], Any] | None = None,
    clock: ScaledClock | None = None,
    **ucm_kwargs: Any,
) -> AsyncIterator[tuple[AckOnlySgd, UCMAgent, list[float]]]:
    """(stand-in SGD on a pty, UCM on its slave path, monotonic times of UCM connects)."""
    master = cta.open_pty()
    sgd = AckOnlySgd(cta.Link(master, timing=TIMING, name="ack-only SGD"), answers or {})
    await sgd.link.start()
    server = asyncio.create_task(sgd.serve())
    ucm = UCMAgent(
        name,
        broker_url,
        serial_port=master.slave_path,
        poll_s=0.5,
        timing=TIMING,
        clock=clock or ScaledClock(speed=60),
        keepalive_s=2,
        **ucm_kwargs,
    )
    connects: list[float] = []
    connect = ucm.device.connect

    async def counting_connect() -> None:
        connects.append(time.monotonic())
        await connect()

    ucm.device.connect = counting_connect  # type: ignore[method-assign]
    await ucm.start()
    try:
        yield sgd, ucm, connects
    finally:
        await ucm.stop()
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
        await sgd.link.close()


def telemetry(ucm: UCMAgent) -> dict[str, Any]:
    return {k: v.value for k, v in ucm.get_property(DEMO_INTERFACE, "Telemetry").items()}


class ScriptedSgd:
    """Link-ACKs every frame from the UCM; records frames and link answers with times."""

    def __init__(self, transport: cta.Transport) -> None:
        self.transport = transport
        self.mute_after: type[cta.Message] | None = None
        """ACK the next frame that decodes to this class, then fall silent."""
        self.muted_at: float | None = None  # time.monotonic() of the last ACK
        self.frames: list[tuple[float, bytes]] = []  # the UCM's frames
        self.controls: list[tuple[float, bytes]] = []  # the UCM's link ACKs / NAKs
        self._deframer = cta.Deframer(0.5)
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while data := await self.transport.read():
            for event in self._deframer.feed(data, loop.time()):
                if isinstance(event, cta.Frame) and self.muted_at is None:
                    self.frames.append((time.monotonic(), event.encode()))
                    await asyncio.sleep(0.005)  # tMA
                    await self.transport.write(ACK)
                    mute = self.mute_after
                    if mute is not None and isinstance(_decoded(event), mute):
                        self.muted_at = time.monotonic()
                elif isinstance(event, cta.AckFrame | cta.NakFrame):
                    self.controls.append((time.monotonic(), event.encode()))

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await self._task
        await self.transport.close()

    async def inject(self, data: bytes, answer: bytes | None) -> bytes:
        """Write ``data``; return the UCM's link answer, and wait for ``answer`` if given."""
        sent = time.monotonic()
        await self.transport.write(data)
        await wait_for(lambda: any(t >= sent for t, _ in self.controls), 2.0)
        link_answer = next(c for t, c in self.controls if t >= sent)
        if answer is not None:
            await wait_for(lambda: any(t >= sent and f == answer for t, f in self.frames), 2.0)
        await asyncio.sleep(0.15)  # nothing else follows
        assert [c for t, c in self.controls if t >= sent] == [link_answer]
        return link_answer

    def answers_since(self, since: float, polls: set[bytes]) -> list[bytes]:
        return [f for t, f in self.frames if t >= since and f not in polls]


def _decoded(frame: cta.Frame) -> cta.Message | None:
    try:
        return cta.decode_message(frame)
    except cta.CtaError:
        return None

"""A stand-in SGD for UCM tests: a bare CTA-2045 link on a pty that link-ACKs every frame
and answers only what a test asks (imported by module name; no package)."""

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
from ucm_helpers import FAST

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

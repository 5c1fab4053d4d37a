"""Signals and exit codes of the long-running ``sef`` commands.

Every command that runs until it is stopped (``sef ems``, ``sef bis``, ``sef ucm``,
``sef agent ...``, ``sef emulate ...``, ``sef gateway``, ``sef demo``) runs its body with
:func:`run_service`. SIGINT (Ctrl-C) and SIGTERM (``kill``, systemd, Docker, Kubernetes)
both start the same clean shutdown: :func:`until_stopped` returns and the body's task
is cancelled, so its ``finally`` blocks run (an agent or the EMS publishes its
``shutdown`` status, child processes are stopped, the store commits its last batch),
and the process exits with :data:`EXIT_OK`. During the shutdown a task that swallowed
its cancellation (Python 3.11's ``wait_for``) is cancelled again every
:data:`NUDGE_S` seconds.

The handlers are installed with ``loop.add_signal_handler`` for both signals, whatever
disposition the process inherited: a supervisor or shell that started it with SIGINT
ignored (``nohup``, ``&`` in a non-interactive shell, ``preexec_fn``) can make neither
Ctrl-C nor SIGTERM ineffective. A shutdown is bounded by ``stop_timeout_s``: past it the
process says so and exits with :data:`EXIT_ERROR`. A second signal during a shutdown
is reported and otherwise changes nothing (SIGKILL remains for the impatient).

Exit codes: :data:`EXIT_OK` 0 (stopped by a signal, or finished), :data:`EXIT_ERROR` 1
(a run-time error, or a shutdown that did not finish in time), :data:`EXIT_USAGE` 2
(bad options or configuration, typer's usage errors included).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import typer
from rich.console import Console

from sef.bus import BusError

__all__ = [
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_USAGE",
    "STOP_SIGNALS",
    "STOP_TIMEOUT_S",
    "broker_usage",
    "run_service",
    "run_until_stopped",
    "until_stopped",
]

EXIT_OK = 0
"""Stopped cleanly by SIGINT or SIGTERM, or finished."""
EXIT_ERROR = 1
"""A run-time error (an exception, e.g. a :class:`~sef.bus.BusError`), or a shutdown that
timed out."""
EXIT_USAGE = 2
"""Bad options or configuration: nothing was started."""

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""The signals that stop a long-running command cleanly."""

STOP_TIMEOUT_S = 30.0
"""Longest clean shutdown, real s; then the process exits with :data:`EXIT_ERROR`."""

T = TypeVar("T")

_err = Console(stderr=True)
log = logging.getLogger("sef.cli")
_stop_requested: asyncio.Event | None = None
"""Set by the first SIGINT/SIGTERM of the running :func:`run_service`."""


@contextlib.contextmanager
def broker_usage(param_hint: str = "--broker") -> Iterator[None]:
    """Turn a :class:`~sef.bus.BusError` raised while building a client (a bad broker URL)
    into a usage error (exit code 2) instead of a traceback."""
    try:
        yield
    except BusError as exc:
        raise typer.BadParameter(str(exc), param_hint=param_hint) from None


async def _supervise(
    main: Coroutine[Any, Any, T], stop_timeout_s: float, name: str
) -> tuple[T | None, int | None]:
    loop = asyncio.get_running_loop()
    task: asyncio.Task[T] = loop.create_task(main, name=name)
    received: list[int] = []
    nudger: list[asyncio.Task[None]] = []
    timed_out: asyncio.Future[None] = loop.create_future()
    global _stop_requested
    stop_requested = _stop_requested = asyncio.Event()

    def time_out() -> None:
        if not timed_out.done():
            timed_out.set_result(None)

    def on_signal(signum: int) -> None:
        sig_name = signal.Signals(signum).name
        if received:
            _err.print(f"[yellow]{sig_name}: already stopping[/]")
            return
        received.append(signum)
        _err.print(f"[yellow]{sig_name}: stopping[/]")
        stop_requested.set()
        nudger.append(loop.create_task(_nudge_swallowed_cancellations(), name="stop nudger"))
        task.cancel()
        # A stop request, not a cancellation from above: the CancelledError still ends
        # whatever the body awaits, but its cleanup must not see itself as being cancelled
        # (``Task.cancelling()``), or code such as ``BusClient.stop`` re-raises before
        # the ``shutdown`` status is published and later cleanup steps are skipped.
        task.uncancel()
        loop.call_later(stop_timeout_s, time_out)

    for signum in STOP_SIGNALS:
        # replaces whatever was inherited, SIG_IGN included
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        waiters: set[asyncio.Future[Any]] = {task, timed_out}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            _err.print(f"[red]error:[/] shutdown did not finish within {stop_timeout_s:g} s")
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_ERROR)  # the body ignores cancellation: do not wait for it
        if task.cancelled() and received:
            return None, received[0]
        result = task.result()  # re-raises the body's exception
        return result, received[0] if received else None
    finally:
        _stop_requested = None
        timed_out.cancel()
        for nudge in nudger:
            nudge.cancel()
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)


NUDGE_S = 2.0
"""During a shutdown, a task still running this long after it was cancelled is cancelled
again (see :func:`_nudge_swallowed_cancellations`)."""


async def _nudge_swallowed_cancellations() -> None:
    """Cancel again the tasks that swallowed their cancellation during a shutdown.

    Python 3.11's ``asyncio.wait_for`` returns normally when the awaited thing completes
    at the moment its task is cancelled; a ``while True`` loop around it then runs on, and
    whoever awaits that task (a shutdown) waits forever. Such a task still says
    ``cancelling()`` but is not done: after :data:`NUDGE_S` it is cancelled once more.
    """
    this = asyncio.current_task()
    seen: dict[asyncio.Task[Any], float] = {}
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(NUDGE_S / 4)
        now = loop.time()
        for other in asyncio.all_tasks():
            if other is this or other.done() or not other.cancelling():
                seen.pop(other, None)
                continue
            since = seen.setdefault(other, now)
            if now - since >= NUDGE_S:
                log.warning(
                    "task %s swallowed its cancellation; cancelling again", other.get_name()
                )
                other.cancel()
                seen[other] = now


async def until_stopped() -> None:
    """Wait until SIGINT or SIGTERM asks the running :func:`run_service` body to stop.

    A body waits on this rather than on a bare ``asyncio.Event().wait()``: a signal also
    cancels the body, but Python 3.11's ``asyncio.wait_for`` can swallow a cancellation
    that meets a completion (e.g. the broker connection being made), and the body then
    goes on waiting; this returns at once when the stop was already requested.
    """
    event = _stop_requested
    if event is None:  # not under run_service: run until cancelled
        await asyncio.Event().wait()
        return
    await event.wait()


async def run_until_stopped(main: Coroutine[Any, Any, T], *, grace_s: float = 5.0) -> T | None:
    """Run ``main`` (a server with nothing to save at the end, e.g. an emulator) until it
    returns or a stop is requested; then cancel it, again every second while it swallows
    the cancellation, for at most ``grace_s``."""
    task = asyncio.ensure_future(main)
    stop = asyncio.ensure_future(until_stopped())
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not task.done():
            deadline = asyncio.get_running_loop().time() + grace_s
            while not task.done() and asyncio.get_running_loop().time() < deadline:
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)
    if not task.done():
        _err.print(f"[red]error:[/] still running {grace_s:g} s after the stop request")
        return None
    if task.cancelled():
        return None
    return task.result()


def run_service(
    main: Coroutine[Any, Any, T],
    *,
    stop_timeout_s: float = STOP_TIMEOUT_S,
    name: str = "sef",
) -> T | None:
    """Run a long-running command's body until it returns or SIGINT/SIGTERM stops it.

    Args:
        main: the command's body; a signal cancels it, so it shuts down in ``finally``.
        stop_timeout_s: longest shutdown after a signal, real s.
        name: name of the body's task (in logs).

    Returns:
        What ``main`` returned, or ``None`` when a signal stopped it (exit code 0 follows
        when the command returns).

    Raises:
        typer.Exit: code 1 when the body failed with a :class:`~sef.bus.BusError`.
    """
    try:
        result, signum = asyncio.run(_supervise(main, stop_timeout_s, name))
    except KeyboardInterrupt:  # a SIGINT before the handlers were installed
        _err.print("[yellow]stopped[/]")
        raise typer.Exit(EXIT_OK) from None
    except BusError as exc:
        _err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(EXIT_ERROR) from None
    if signum is not None:
        _err.print(f"[yellow]stopped by {signal.Signals(signum).name}[/]")
    return result

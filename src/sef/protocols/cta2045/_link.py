"""Asyncio CTA-2045 link layer, usable by the UCM and the SGD side alike.

Runs on the event loop's real (monotonic) time, never on a scaled clock: it drives a real
serial line. Timing defaults follow the reference notes section 5.2.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar, overload

from sef.logthrottle import LogThrottle

from ._codec import SUPPORTED_MESSAGE_TYPES, decode_message
from ._datalink import BitRateRequest, MaxPayloadQuery, MaxPayloadReply
from ._errors import (
    CtaDecodeError,
    CtaError,
    CtaUnsupportedRequest,
    LinkClosed,
    LinkNak,
    LinkTimeout,
    NakReason,
    ResponseTimeout,
    logger,
)
from ._frame import (
    BASIC_DR,
    INTERMEDIATE_DR,
    LINK_ACK,
    MAX_PAYLOAD_LEN,
    AckFrame,
    Deframer,
    DeframerEvent,
    Frame,
    FrameError,
    Message,
    MessageTypeQuery,
    NakFrame,
)
from ._timing import RECEIVE_QUEUE_SIZE, RETRYABLE_NAKS, LinkStats, LinkTiming
from ._transport import Transport
from ._unsupported import unsupported_answer_for

__all__ = ["Expectation", "Link"]

_M = TypeVar("_M", bound=Message)
#: What :meth:`Link.request` waits for: a class, a tuple of classes or a predicate.
Expectation = type[Message] | tuple[type[Message], ...] | Callable[[Message], bool] | None


@dataclass
class _Waiter:
    matches: Callable[[Message], bool]
    future: asyncio.Future[Message]


class Link:
    """One end of a CTA-2045 link over a :class:`Transport`.

    * :meth:`send` writes a message and awaits its link ACK, retrying on a missing ACK;
    * :meth:`request` also awaits the application response;
    * received frames are link-ACKed or NAKed automatically after ``ack_delay_s``;
      received application messages that no :meth:`request` is waiting for are queued for
      :meth:`receive` / ``async for``;
    * MTSQs and max-payload queries are answered automatically.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        timing: LinkTiming | None = None,
        supported_types: Iterable[tuple[int, int]] = SUPPORTED_MESSAGE_TYPES,
        max_payload: int = MAX_PAYLOAD_LEN,
        name: str | None = None,
    ) -> None:
        self.transport = transport
        self.timing = timing or LinkTiming()
        self.supported_types = frozenset(supported_types)
        self.max_payload = max_payload
        self.peer_max_payload: int | None = None
        self.name = name or transport.name
        self.stats = LinkStats()
        self._deframer = Deframer(self.timing.partial_frame_timeout_s, max_payload)
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue(RECEIVE_QUEUE_SIZE)
        self._waiters: list[_Waiter] = []
        self._ack_waiter: asyncio.Future[int | None] | None = None
        self._noise = LogThrottle(logger, "bad frames")
        """Line noise is logged in full a few times per 10 s, then counted."""
        self._tx_lock = asyncio.Lock()
        self._exchange_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()
        self._control_tasks: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        self._last_message_tx = float("-inf")
        self._last_control_tx = float("-inf")

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> Link:
        """Start the receive loop (idempotent)."""
        if self._closed:
            raise LinkClosed(f"{self.name} is closed")
        if self._reader is None:
            self._reader = asyncio.create_task(self._run_reader(), name=f"cta2045 {self.name}")
        return self

    @property
    def closed(self) -> bool:
        """True once the link or its transport is closed."""
        return self._closed

    async def close(self) -> None:
        """Stop the link and close the transport."""
        self._mark_closed("closed by owner")
        tasks = [t for t in (self._reader, *self._control_tasks, *self._background) if t]
        current = asyncio.current_task()
        others = [task for task in tasks if task is not current]
        for task in others:
            task.cancel()
        try:
            # gather collects the tasks' own errors; a cancellation of close()'s caller
            # still propagates (it must not be swallowed, or the caller cannot be stopped)
            await asyncio.gather(*others, return_exceptions=True)
        finally:
            await self.transport.close()

    async def __aenter__(self) -> Link:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _mark_closed(self, why: str) -> None:
        if self._closed:
            return
        self._closed = True
        logger.info("%s: link closed (%s)", self.name, why)
        error = LinkClosed(f"{self.name}: {why}")
        if self._ack_waiter is not None and not self._ack_waiter.done():
            self._ack_waiter.set_exception(error)
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_exception(error)
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    # --- receiving ------------------------------------------------------------------------

    async def receive(self) -> Message:
        """The next received application message no request was waiting for."""
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)
            raise LinkClosed(f"{self.name} is closed")
        return item

    def __aiter__(self) -> Link:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.receive()
        except LinkClosed:
            raise StopAsyncIteration from None

    async def _run_reader(self) -> None:
        loop = asyncio.get_running_loop()
        why = "transport end of stream"
        try:
            while True:
                deadline = self._deframer.deadline
                try:
                    if deadline is None:
                        data = await self.transport.read()
                    else:
                        timeout = max(0.0, deadline - loop.time())
                        data = await asyncio.wait_for(self.transport.read(), timeout)
                except TimeoutError:
                    self._handle_events(self._deframer.poll(loop.time()))
                    continue
                if not data:
                    break
                self._handle_events(self._deframer.feed(data, loop.time()))
        except (OSError, CtaError) as exc:
            why = f"transport error: {exc}"
            logger.error("%s: %s", self.name, why)
        finally:
            self._mark_closed(why)

    def _handle_events(self, events: list[DeframerEvent]) -> None:
        for event in events:
            try:
                self._handle_event(event)
            except Exception:  # a bug here must not kill the receive loop
                logger.exception("%s: error handling %r", self.name, event)

    def _handle_event(self, event: DeframerEvent) -> None:
        if isinstance(event, AckFrame | NakFrame):
            reason = None if isinstance(event, AckFrame) else event.reason
            if reason is not None:
                self.stats.naks_received[reason] += 1
            waiter = self._ack_waiter
            if waiter is None or waiter.done():
                logger.debug("%s: ignoring unexpected %s", self.name, event.encode().hex(" "))
            else:
                waiter.set_result(reason)
        elif isinstance(event, FrameError):
            self._noise.warn(
                self.name, f"NAK {event.reason:02X}", "%s: NAK %02X: %s", self.name,
                event.reason, event.detail,
            )  # fmt: skip
            self._send_control(NakFrame(event.reason).encode())
        else:
            self._on_frame(event)

    def _on_frame(self, frame: Frame) -> None:
        self.stats.frames_received += 1
        raw = frame.encode().hex(" ")
        if frame.message_type not in self.supported_types:
            self._noise.warn(
                self.name, "unsupported type", "%s: unsupported message type in %s", self.name, raw
            )
            self._nak(NakReason.UNSUPPORTED_MESSAGE_TYPE)
            return
        try:
            message = decode_message(frame)
        except CtaUnsupportedRequest as exc:
            self._answer_unsupported(exc, raw)
            return
        except CtaDecodeError as exc:
            self._noise.warn(
                self.name, "undecodable", "%s: rejecting %s: %s", self.name, raw, exc.detail
            )
            self._nak(exc.reason)
            return
        if isinstance(message, BitRateRequest) and message.value != 0:
            logger.warning("%s: bit rate %d not supported", self.name, message.baud)
            self._nak(NakReason.REQUEST_NOT_SUPPORTED)
            return
        logger.debug("%s: received %r", self.name, message)
        self._send_control(LINK_ACK)
        if isinstance(message, MessageTypeQuery):
            return
        if isinstance(message, MaxPayloadQuery):
            self._spawn(self._send_quietly(MaxPayloadReply.for_length(self.max_payload)))
            return
        if isinstance(message, MaxPayloadReply):
            self.peer_max_payload = message.max_payload
        self._dispatch(message)

    def _answer_unsupported(self, error: CtaUnsupportedRequest, raw: str) -> None:
        """Link ACK + application answer (Basic, Intermediate) or NAK 07 (data link)."""
        answer = unsupported_answer_for(error)
        self.stats.unsupported_received += 1
        self._noise.warn(
            self.name, "unsupported", "%s: %s: %s", self.name, raw,
            error.detail if answer is None else f"{error.detail}, answering {answer!r}",
        )  # fmt: skip
        if answer is None and error.message_type not in (BASIC_DR, INTERMEDIATE_DR):
            self._nak(NakReason.REQUEST_NOT_SUPPORTED)
            return
        self._send_control(LINK_ACK)
        if answer is not None:
            self._spawn(self._send_quietly(answer))

    def _dispatch(self, message: Message) -> None:
        for waiter in self._waiters:
            if not waiter.future.done() and waiter.matches(message):
                waiter.future.set_result(message)
                return
        if self._queue.full():
            dropped = self._queue.get_nowait()
            logger.warning("%s: receive queue full, dropping %r", self.name, dropped)
        self._queue.put_nowait(message)

    def _nak(self, reason: NakReason) -> None:
        self._send_control(NakFrame(reason).encode())

    # --- sending --------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _send_quietly(self, message: Message) -> None:
        try:
            await self.send(message)
        except CtaError as exc:
            logger.warning("%s: automatic reply %r failed: %s", self.name, message, exc)

    def _send_control(self, data: bytes) -> None:
        if self._closed:
            return
        task = asyncio.create_task(self._write_control(data))
        self._control_tasks.add(task)
        task.add_done_callback(self._control_tasks.discard)

    async def _write_control(self, data: bytes) -> None:
        await asyncio.sleep(self.timing.ack_delay_s)
        try:
            await self._write(data)
        except (OSError, CtaError) as exc:
            logger.warning("%s: cannot send %s: %s", self.name, data.hex(" "), exc)
            return
        self._last_control_tx = asyncio.get_running_loop().time()
        if data == LINK_ACK:
            self.stats.acks_sent += 1
        else:
            self.stats.naks_sent[data[1]] += 1

    async def _write(self, data: bytes) -> None:
        async with self._write_lock:
            await self.transport.write(data)

    async def _await_tx_slot(self) -> None:
        """Wait for pending ACK/NAKs, then honour tIM and tAR."""
        loop = asyncio.get_running_loop()
        while True:
            if self._control_tasks:
                await asyncio.gather(*self._control_tasks, return_exceptions=True)
                continue
            ready = max(
                self._last_message_tx + self.timing.inter_message_s,
                self._last_control_tx + self.timing.response_delay_s,
            )
            delay = ready - loop.time()
            if delay <= 0 and not self._control_tasks:
                return
            await asyncio.sleep(max(delay, 0.0))

    async def send(self, message: Message | Frame) -> None:
        """Send a message and wait for its link ACK.

        Tries ``max_tries`` times, ``retry_delay_s`` after each missing ACK or retryable NAK
        (01, 03, 05). Raises :class:`LinkTimeout`, :class:`LinkNak` or :class:`LinkClosed`.
        """
        if self._reader is None:
            await self.start()
        data = message.encode()
        payload_len = len(data) - 6
        if self.peer_max_payload is not None and payload_len > self.peer_max_payload:
            raise CtaError(
                f"payload of {payload_len} bytes exceeds the peer's max {self.peer_max_payload}"
            )
        loop = asyncio.get_running_loop()
        async with self._tx_lock:
            error: CtaError = LinkTimeout(f"{self.name}: no link ACK")
            for attempt in range(1, self.timing.max_tries + 1):
                if self._closed:
                    raise LinkClosed(f"{self.name} is closed")
                await self._await_tx_slot()
                ack: asyncio.Future[int | None] = loop.create_future()
                self._ack_waiter = ack
                try:
                    await self._write(data)
                    self._last_message_tx = loop.time()
                    self.stats.messages_sent += 1
                    logger.debug("%s: sent %s (try %d)", self.name, data.hex(" "), attempt)
                    try:
                        reason = await asyncio.wait_for(ack, self.timing.ack_timeout_s)
                    except TimeoutError:
                        error = LinkTimeout(
                            f"{self.name}: no link ACK for {data.hex(' ')} after "
                            f"{attempt} tr{'y' if attempt == 1 else 'ies'}"
                        )
                        logger.warning("%s", error)
                    else:
                        if reason is None:
                            return
                        error = LinkNak(reason)
                        logger.warning("%s: %s for %s", self.name, error, data.hex(" "))
                        if reason not in RETRYABLE_NAKS:
                            raise error
                finally:
                    self._ack_waiter = None
                    _consume(ack)
                if attempt < self.timing.max_tries:
                    self.stats.retries += 1
                    await asyncio.sleep(self.timing.retry_delay_s)
            raise error

    @overload
    async def request(
        self, message: Message, expect: type[_M], *, timeout_s: float | None = None
    ) -> _M: ...

    @overload
    async def request(
        self, message: Message, expect: Expectation = None, *, timeout_s: float | None = None
    ) -> Message: ...

    async def request(
        self, message: Message, expect: Expectation = None, *, timeout_s: float | None = None
    ) -> Message:
        """Send ``message`` and return its application response.

        ``expect`` selects the response: a message class, a tuple of classes or a predicate;
        by default ``message.is_reply``. Raises :class:`ResponseTimeout` after
        ``response_timeout_s`` (3 s), or any error of :meth:`send`.
        """
        matches = self._matcher(message, expect)
        timeout = self.timing.response_timeout_s if timeout_s is None else timeout_s
        async with self._exchange_lock:
            waiter = _Waiter(matches, asyncio.get_running_loop().create_future())
            self._waiters.append(waiter)
            try:
                await self.send(message)
                try:
                    return await asyncio.wait_for(waiter.future, timeout)
                except TimeoutError:
                    error = ResponseTimeout(
                        f"{self.name}: no response to {message!r} in {timeout} s"
                    )
                    logger.warning("%s", error)
                    raise error from None
            finally:
                self._waiters.remove(waiter)
                _consume(waiter.future)

    @staticmethod
    def _matcher(message: Message, expect: Expectation) -> Callable[[Message], bool]:
        if expect is None:
            return message.is_reply
        if isinstance(expect, type | tuple):
            classes = expect
            return lambda reply: isinstance(reply, classes)
        return expect

    async def query_type_supported(self, mt1: int, mt2: int) -> bool:
        """Send a Message-Type-Supported Query: True on ACK, False on NAK 06."""
        try:
            await self.send(MessageTypeQuery(mt1, mt2))
        except LinkNak as exc:
            if exc.reason == NakReason.UNSUPPORTED_MESSAGE_TYPE:
                return False
            raise
        return True

    async def query_max_payload(self) -> int:
        """Ask the peer for its maximum payload length (bytes) and remember it."""
        reply = await self.request(MaxPayloadQuery(), MaxPayloadReply)
        return reply.max_payload


def _consume(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen: the link's close may fail a future nobody awaits
    any more (the request already failed on its send), which asyncio would log as "never
    retrieved"."""
    if future.done() and not future.cancelled():
        future.exception()
    else:
        future.cancel()

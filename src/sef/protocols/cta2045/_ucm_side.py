"""The UCM side of the standard's rules: what a UCM answers, and how it asks.

An SGD may send, unasked: a Customer Override, its Operational State Response, Sleep,
Wake and a Get UTC Time request. Each is answered (:func:`ucm_answer`): App ACK for the
Basic DR ones, the UTC time for the request. Any other request gets the answer of
:func:`~._unsupported.not_implemented_answer` (App NAK ``04 01`` for Basic DR, response
code 1 for Intermediate DR); requests with unknown opcodes never get here, the
:class:`~._link.Link` answers them itself. Acknowledgements and replies are never answered.

:class:`UcmRequester` sends the UCM's own requests and tells an SGD that stopped
link-ACKing (gone) from one that ACKs but does not answer (there, unconfirmed).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

from sef.logthrottle import LogThrottle

from ._advanced import ALU_AS_MUCH_AS_POSSIBLE, AdvancedLoadUpUnits, SetAdvancedLoadUpRequest
from ._basic import (
    AppAck,
    CustomerOverride,
    OperationalStateResponse,
    Sleep,
    Wake,
)
from ._basic_codes import OperationalState
from ._errors import LinkNak, LinkTimeout, NakReason, logger
from ._frame import Message
from ._intermediate import IntermediateMessage, ResponseCode
from ._link import Expectation, Link
from ._unsupported import not_implemented_answer
from ._utc_time import CTA_EPOCH, GetUtcTimeRequest, UtcTimeReply

__all__ = [
    "SEND_FLOOR_S",
    "UcmRequester",
    "advanced_load_up_request",
    "state_name",
    "ucm_answer",
]

SEND_FLOOR_S = 1.0
"""Shortest real wait for a link ACK: time for the link to try twice (0.2 + 0.5 + 0.2 s)."""

_CTA_EPOCH_UNIX = int(CTA_EPOCH.timestamp())
_UNSUPPORTED_NAKS = {NakReason.UNSUPPORTED_MESSAGE_TYPE, NakReason.REQUEST_NOT_SUPPORTED}
_NOT_SUPPORTED_CODES = {ResponseCode.NOT_IMPLEMENTED, ResponseCode.NOT_ENABLED}


def ucm_answer(message: Message, now_unix_s: float) -> Message | None:
    """The UCM's answer to ``message`` from the SGD (None: no answer is due).

    ``now_unix_s`` is the UCM's time (Unix s), sent back for a Get UTC Time request.
    """
    if isinstance(message, CustomerOverride | OperationalStateResponse | Sleep | Wake):
        return AppAck(message.OPCODE)
    if isinstance(message, GetUtcTimeRequest):
        return UtcTimeReply(utc_seconds=max(0, int(now_unix_s) - _CTA_EPOCH_UNIX))
    return not_implemented_answer(message)


def advanced_load_up_request(
    energy_wh: float, duration_s: float
) -> SetAdvancedLoadUpRequest | None:
    """Set Advanced Load Up asking the SGD to store ``energy_wh`` Wh above normal within
    ``duration_s`` s (None when either is ≤ 0).

    The duration goes out in whole minutes, rounded **up** (at most 0xFFFF); the energy in
    the finest units (1, 10, 100, 1000 Wh) whose count fits in 1–0xFFFE, rounded to the
    nearest count (at least 1); more than 65 534 kWh asks for "as much as possible".
    """
    if energy_wh <= 0 or duration_s <= 0:
        return None
    minutes = min(0xFFFF, math.ceil(duration_s / 60))
    for units in (
        AdvancedLoadUpUnits.WH_1,
        AdvancedLoadUpUnits.WH_10,
        AdvancedLoadUpUnits.WH_100,
        AdvancedLoadUpUnits.WH_1000,
    ):
        step = units.watt_hours
        assert step is not None
        value = max(1, round(energy_wh / step))
        if value < ALU_AS_MUCH_AS_POSSIBLE:
            return SetAdvancedLoadUpRequest(minutes, value, units)
    return SetAdvancedLoadUpRequest(minutes, ALU_AS_MUCH_AS_POSSIBLE, AdvancedLoadUpUnits.WH_1000)


def state_name(code: int) -> str:
    """Name of an operational state code (``STATE_<n>`` when unknown)."""
    try:
        return OperationalState(code).name
    except ValueError:
        return f"STATE_{code}"


class UcmRequester:
    """The UCM's requests to an SGD, with the link ACK and the answer bounded apart.

    A request first needs the SGD's link ACK, then its application response:

    * **no link ACK** (after the link's own tries, or once the SGD has given no sign of life
      for ``link_timeout_s`` real seconds, but never less than :data:`SEND_FLOOR_S`):
      :class:`LinkTimeout` — the SGD is gone (unplugged, powered off, frozen);
    * **link-ACKed, no response** within ``response_wait_s``: ``None`` — the SGD is there
      but did not answer (an unconfirmed command, an unanswered query). The link stays up.

    Responses reach the requester through :meth:`offer`, which the UCM's receive loop calls
    for every message the SGD sends (the UCM does not use :meth:`Link.request`, whose one
    timeout cannot tell a silent SGD from one that only ACKs). One request at a time.
    """

    def __init__(
        self, link: Link, *, link_timeout_s: float, response_wait_s: float | None = None
    ) -> None:
        loop = asyncio.get_running_loop()
        self.link = link
        self.link_timeout_s = link_timeout_s
        if response_wait_s is None:
            response_wait_s = min(
                link.timing.response_timeout_s, max(0.5, link_timeout_s - SEND_FLOOR_S)
            )
        self.response_wait_s = response_wait_s
        self.last_heard = loop.time()
        """Loop time of the SGD's last link ACK or message (real s)."""
        self.unanswered = 0
        """Requests link-ACKed but not answered, in total."""
        self._quiet = LogThrottle(logger, "unanswered requests", burst=3, interval_s=60.0)
        self._lock = asyncio.Lock()
        self._pending: tuple[Callable[[Message], bool], asyncio.Future[Message]] | None = None

    def offer(self, message: Message) -> bool:
        """A message from the SGD: True if it is the response the pending request awaits."""
        self.last_heard = asyncio.get_running_loop().time()
        pending = self._pending
        if pending is None or pending[1].done() or not pending[0](message):
            return False
        pending[1].set_result(message)
        return True

    async def request(self, message: Message, expect: Expectation = None) -> Message | None:
        """``message``'s response, or None when the SGD link-ACKed it but did not answer.

        ``expect`` selects the response as for :meth:`Link.request` (default:
        ``message.is_reply``). Raises :class:`LinkTimeout` (no link ACK), :class:`LinkNak`
        or :class:`LinkClosed`.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Message] = loop.create_future()
        async with self._lock:
            self._pending = (_matcher(message, expect), future)
            try:
                await self._send(message)
                try:
                    return await asyncio.wait_for(future, self.response_wait_s)
                except TimeoutError:
                    self.unanswered += 1
                    self._quiet.warn(
                        self.link.name,
                        type(message).__name__,
                        "%s: %r link-ACKed, no response in %.1f s",
                        self.link.name,
                        message,
                        self.response_wait_s,
                    )
                    return None
            finally:
                self._pending = None
                if not future.done():
                    future.cancel()

    async def request_optional(
        self, request: IntermediateMessage
    ) -> tuple[bool | None, Message | None]:
        """Ask for an optional feature: ``(supported, reply)``.

        ``supported`` is False when the SGD does not support it (link NAK 06 / 07, or
        response code 1 "not implemented" / 8 "not enabled"), True when it answered
        otherwise, None when it link-ACKed but did not answer.
        """
        try:
            reply = await self.request(request)
        except LinkNak as exc:
            if exc.reason not in _UNSUPPORTED_NAKS:
                raise
            return False, None
        if reply is None:
            return None, None
        code = getattr(reply, "response_code", ResponseCode.SUCCESS)  # a CodedReply's
        return code not in _NOT_SUPPORTED_CODES, reply

    async def _send(self, message: Message) -> None:
        loop = asyncio.get_running_loop()
        budget = max(SEND_FLOOR_S, self.last_heard + self.link_timeout_s - loop.time())
        try:
            await asyncio.wait_for(self.link.send(message), budget)
        except TimeoutError as exc:
            if isinstance(exc, LinkTimeout):
                raise
            raise LinkTimeout(
                f"{self.link.name}: no link ACK for {message!r}; SGD silent for "
                f"{loop.time() - self.last_heard:.1f} s"
            ) from None
        self.last_heard = loop.time()


def _matcher(message: Message, expect: Expectation) -> Callable[[Message], bool]:
    if expect is None:
        return message.is_reply
    if isinstance(expect, type | tuple):
        classes = expect
        return lambda reply: isinstance(reply, classes)
    return expect

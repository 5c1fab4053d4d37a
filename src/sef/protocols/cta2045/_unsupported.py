"""The answer to a request a device does not support, the same on the UCM and SGD side.

CTA-2045 separates the layers: the data link only says whether a frame arrived intact and
whether its *message type* is supported; what a Basic or Intermediate DR device does not
implement is answered at the application layer, after the link ACK (checked against EPRI's
UCM library and a reference SGD; issue 13 §3):

============================  =========================================================
received                      answer
============================  =========================================================
Basic DR, unknown opcode1     link ACK ``06 00``, then App NAK ``04 01``
(or known but not handled)    (``AppNakReason.OPCODE1_NOT_SUPPORTED``, notes §6.5)
Intermediate DR request,      link ACK, then ``op1 (op2 | 0x80) 01``: the reply with
unknown or not implemented    response code 1 "command not implemented" (notes §7)
data-link request, unknown    link NAK ``15 07`` (request not supported), no ACK
message type not supported    link NAK ``15 06``
acknowledgements, replies     nothing (a response is never answered)
============================  =========================================================

:func:`unsupported_answer` builds the answer from the raw payload (for a
:class:`~._errors.CtaUnsupportedRequest` raised by the decoder; :class:`~._link.Link` does
this itself), :func:`not_implemented_answer` from a decoded message that the application
does not act on.
"""

from __future__ import annotations

from ._basic import AppNak, BasicMessage
from ._basic_codes import AppNakReason
from ._errors import CtaUnsupportedRequest
from ._frame import BASIC_DR, INTERMEDIATE_DR, Message
from ._intermediate import IntermediateMessage, IntermediateReply, ResponseCode

__all__ = ["not_implemented_answer", "unsupported_answer", "unsupported_answer_for"]

_REPLY_BIT = 0x80


def unsupported_answer(message_type: tuple[int, int], payload: bytes) -> Message | None:
    """The application answer to a request whose opcodes the receiver does not know.

    ``message_type`` is ``(MT1, MT2)``, ``payload`` the frame payload. Returns App NAK
    ``04 01`` for Basic DR, ``op1 (op2|0x80) 01`` for an Intermediate request, and None
    when no application answer is due: an Intermediate reply (``op2`` bit 7 set), a
    payload too short to carry opcodes, or a data-link message (those are link-NAKed
    ``15 07`` instead).
    """
    if message_type == BASIC_DR and len(payload) == 2:
        return AppNak(AppNakReason.OPCODE1_NOT_SUPPORTED)
    if message_type == INTERMEDIATE_DR and len(payload) >= 2:
        op1, op2 = payload[0], payload[1]
        if op2 & _REPLY_BIT:
            return None
        return IntermediateReply(op1, op2 | _REPLY_BIT, ResponseCode.NOT_IMPLEMENTED)
    return None


def unsupported_answer_for(error: CtaUnsupportedRequest) -> Message | None:
    """:func:`unsupported_answer` for the request carried by a decoder ``error``."""
    return unsupported_answer(error.message_type, error.payload)


def not_implemented_answer(message: Message) -> Message | None:
    """The answer to a decoded request the application does not act on.

    A Basic DR command or query → App NAK ``04 01``; an Intermediate request →
    its reply with response code 1 (not implemented); anything else (App ACK/NAK,
    Operational State Response, Intermediate replies, data-link messages) → None.
    """
    if isinstance(message, BasicMessage):
        return AppNak(AppNakReason.OPCODE1_NOT_SUPPORTED) if message.EXPECTS_REPLY else None
    if isinstance(message, IntermediateMessage):
        op1, op2 = message.opcodes
        if op2 & _REPLY_BIT:
            return None
        return IntermediateReply(op1, op2 | _REPLY_BIT, ResponseCode.NOT_IMPLEMENTED)
    return None

"""What a UCM answers to messages the SGD starts (the UCM side of the standard's rules).

An SGD may send, unasked: a Customer Override, its Operational State Response, Sleep,
Wake and a Get UTC Time request. Each is answered: App ACK for the Basic DR ones,
the UTC time for the request. Any other Basic DR request gets App NAK "opcode 1 not
supported"; any other Intermediate request gets its reply with response code "not
implemented". Acknowledgements and replies are never answered.
"""

from __future__ import annotations

from ._basic import (
    AppAck,
    AppNak,
    BasicMessage,
    CustomerOverride,
    OperationalStateResponse,
    Sleep,
    Wake,
)
from ._basic_codes import AppNakReason, OperationalState
from ._frame import Message
from ._intermediate import IntermediateMessage, IntermediateReply, ResponseCode
from ._utc_time import CTA_EPOCH, GetUtcTimeRequest, UtcTimeReply

__all__ = ["state_name", "ucm_answer"]

_CTA_EPOCH_UNIX = int(CTA_EPOCH.timestamp())


def ucm_answer(message: Message, now_unix_s: float) -> Message | None:
    """The UCM's answer to ``message`` from the SGD (None: no answer is due).

    ``now_unix_s`` is the UCM's time (Unix s), sent back for a Get UTC Time request.
    """
    if isinstance(message, CustomerOverride | OperationalStateResponse | Sleep | Wake):
        return AppAck(message.OPCODE)
    if isinstance(message, GetUtcTimeRequest):
        return UtcTimeReply(utc_seconds=max(0, int(now_unix_s) - _CTA_EPOCH_UNIX))
    if isinstance(message, BasicMessage) and not isinstance(message, AppAck | AppNak):
        return AppNak(AppNakReason.OPCODE1_NOT_SUPPORTED)
    if isinstance(message, IntermediateMessage) and not message.opcodes[1] & 0x80:
        op1, op2 = message.opcodes
        return IntermediateReply(op1, op2 | 0x80, ResponseCode.NOT_IMPLEMENTED)
    return None


def state_name(code: int) -> str:
    """Name of an operational state code (``STATE_<n>`` when unknown)."""
    try:
        return OperationalState(code).name
    except ValueError:
        return f"STATE_{code}"

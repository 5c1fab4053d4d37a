"""Message-level codec: frame ⇄ typed message for every supported message type."""

from __future__ import annotations

from ._basic import decode_basic
from ._datalink import decode_datalink
from ._errors import CtaDecodeError, NakReason, logger
from ._frame import (
    BASIC_DR,
    DATA_LINK,
    INTERMEDIATE_DR,
    MAX_PAYLOAD_LEN,
    Frame,
    Message,
    MessageTypeQuery,
    parse_frame,
)
from ._intermediate import decode_intermediate

__all__ = ["SUPPORTED_MESSAGE_TYPES", "decode", "decode_message"]

#: Message types this codec can decode.
SUPPORTED_MESSAGE_TYPES = frozenset({BASIC_DR, INTERMEDIATE_DR, DATA_LINK})


def decode_message(frame: Frame) -> Message:
    """Decode a received frame into a typed message.

    A LEN = 0 frame is a :class:`MessageTypeQuery`. Raises :class:`CtaDecodeError` whose
    ``reason`` is the link NAK to answer with (06 unsupported type, 07 unknown opcode,
    02 bad length, 01 bad field value).
    """
    if frame.is_type_query:
        return MessageTypeQuery(frame.mt1, frame.mt2)
    mtype = frame.message_type
    try:
        if mtype == BASIC_DR:
            return decode_basic(frame.payload)
        if mtype == INTERMEDIATE_DR:
            return decode_intermediate(frame.payload)
        if mtype == DATA_LINK:
            return decode_datalink(frame.payload)
    except CtaDecodeError as exc:
        logger.warning("cannot decode %s: %s", frame.encode().hex(" "), exc)
        raise
    error = CtaDecodeError(
        f"unsupported message type {frame.mt1:02X} {frame.mt2:02X}",
        NakReason.UNSUPPORTED_MESSAGE_TYPE,
    )
    logger.warning("%s", error)
    raise error


def decode(data: bytes, max_payload: int = MAX_PAYLOAD_LEN) -> Message:
    """Decode one complete message frame (header, payload, checksum) from ``data``."""
    frame = parse_frame(data, max_payload)
    if not isinstance(frame, Frame):
        raise CtaDecodeError(
            f"{bytes(data).hex(' ')} is a link ACK/NAK, not a message", NakReason.INVALID_BYTE
        )
    return decode_message(frame)

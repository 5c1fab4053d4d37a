"""Intermediate DR messages (MT ``08 02``): message bases and the payload decoder.

Payload ``[opcode1, opcode2, data…]``; replies carry ``opcode2 | 0x80`` and a response code.
All integers are big-endian [≥2 src]. Reference notes section 7.

The messages a water heater needs live in one module per concept: :mod:`._device_info`,
:mod:`._utc_time`, :mod:`._temperature` and :mod:`._commodity`. Defining a message class
registers it with :func:`decode_intermediate`; the package imports every one of them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar

from ._errors import CtaDecodeError, CtaUnsupportedRequest, NakReason, logger
from ._fields import check_range
from ._frame import Message

__all__ = [
    "CodedReply",
    "IntermediateMessage",
    "IntermediateReply",
    "ResponseCode",
    "decode_intermediate",
]


class ResponseCode(IntEnum):
    """Intermediate DR response codes (0–7 [≥2 src]; 8 [pycta2045 and cta2045 only])."""

    SUCCESS = 0
    NOT_IMPLEMENTED = 1
    BAD_VALUE = 2
    COMMAND_LENGTH_ERROR = 3
    RESPONSE_LENGTH_ERROR = 4
    BUSY = 5
    OTHER_ERROR = 6
    CUSTOMER_OVERRIDE = 7
    NOT_ENABLED = 8


_REGISTRY: dict[tuple[int, int], list[type[IntermediateMessage]]] = {}


@dataclass(frozen=True)
class IntermediateMessage(Message):
    """Base of Intermediate DR messages; subclasses define OPCODE1/OPCODE2 and LENGTHS.

    A subclass with fields encodes them in :meth:`_pack` and decodes them in :meth:`_unpack`
    (the tuple of constructor arguments), and validates them in ``__post_init__`` after
    calling ``super().__post_init__()``.
    """

    MT2: ClassVar[int] = 0x02
    OPCODE1: ClassVar[int]
    OPCODE2: ClassVar[int]
    #: Accepted payload lengths (including the 2 opcode bytes).
    LENGTHS: ClassVar[tuple[int, ...]]
    #: True for set requests: they are answered by a bare :class:`IntermediateReply`.
    ANSWERED_BY_CODE: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__()
        if "LENGTHS" in cls.__dict__:
            _REGISTRY.setdefault((cls.OPCODE1, cls.OPCODE2), []).append(cls)

    def __post_init__(self) -> None:
        """Validate the fields (nothing to check here)."""

    @property
    def opcodes(self) -> tuple[int, int]:
        """``(opcode1, opcode2)``."""
        return (self.OPCODE1, self.OPCODE2)

    def _pack(self) -> bytes:
        """The wire bytes of this class's fields."""
        return b""

    @classmethod
    def _unpack(cls, raw: bytes) -> tuple[Any, ...]:
        """Constructor arguments parsed from the bytes of :meth:`_pack`."""
        return ()

    def body(self) -> bytes:
        """Payload after the two opcode bytes."""
        return self._pack()

    def payload(self) -> bytes:
        """``[opcode1, opcode2, body…]``."""
        op1, op2 = self.opcodes
        return bytes((op1, op2)) + self.body()

    @classmethod
    def from_body(cls, body: bytes) -> IntermediateMessage:
        """Build from the bytes after the opcodes (raise ValueError if invalid)."""
        return cls(*cls._unpack(body))

    @classmethod
    def accepts_length(cls, length: int) -> bool:
        """True if a payload of ``length`` bytes can hold this message."""
        return length in cls.LENGTHS

    def is_reply(self, other: Message) -> bool:
        """Requests are answered by the same opcode1 with opcode2 | 0x80."""
        if self.OPCODE2 & 0x80 or not isinstance(other, IntermediateMessage):
            return False
        if self.ANSWERED_BY_CODE and not isinstance(other, IntermediateReply):
            return False
        return other.opcodes == (self.OPCODE1, self.OPCODE2 | 0x80)


@dataclass(frozen=True)
class IntermediateReply(IntermediateMessage):
    """A reply carrying only a response code (LEN 3): set replies and error replies."""

    opcode1: int = 0
    opcode2: int = 0x80
    response_code: int = ResponseCode.SUCCESS

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("opcode1", self.opcode1, 0, 0xFF)
        check_range("opcode2", self.opcode2, 0x80, 0xFF)
        check_range("response_code", self.response_code, 0, 0xFF)

    @property
    def opcodes(self) -> tuple[int, int]:
        return (self.opcode1, self.opcode2)

    def body(self) -> bytes:
        return bytes((self.response_code,))

    def is_reply(self, other: Message) -> bool:
        """A reply never expects a reply."""
        return False


@dataclass(frozen=True)
class CodedReply(IntermediateMessage):
    """A reply whose body is the response code followed by the bytes of :meth:`_pack`."""

    response_code: int = ResponseCode.SUCCESS

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("response_code", self.response_code, 0, 0xFF)

    def body(self) -> bytes:
        return bytes((self.response_code,)) + self._pack()

    @classmethod
    def from_body(cls, body: bytes) -> IntermediateMessage:
        return cls(body[0], *cls._unpack(body[1:]))


def decode_intermediate(payload: bytes) -> IntermediateMessage:
    """Decode an Intermediate DR payload; raise :class:`CtaDecodeError` with the NAK reason."""
    if len(payload) < 2:
        raise CtaDecodeError(
            f"Intermediate DR payload too short: {len(payload)} bytes", NakReason.INVALID_LENGTH
        )
    op1, op2, length = payload[0], payload[1], len(payload)
    candidates = _REGISTRY.get((op1, op2), [])
    cls = next((c for c in candidates if c.accepts_length(length)), None)
    try:
        if cls is not None:
            message = cls.from_body(bytes(payload[2:]))
        elif op2 & 0x80 and length == 3:
            message = IntermediateReply(op1, op2, payload[2])
        elif candidates:
            raise CtaDecodeError(
                f"Intermediate {op1:02X} {op2:02X}: invalid length {length}",
                NakReason.INVALID_LENGTH,
            )
        else:
            raise CtaUnsupportedRequest(
                f"unsupported Intermediate DR opcodes {op1:02X} {op2:02X}",
                (0x08, 0x02),
                payload,
            )
    except (ValueError, struct.error) as exc:
        if isinstance(exc, CtaDecodeError):
            raise
        raise CtaDecodeError(f"Intermediate {op1:02X} {op2:02X}: {exc}") from exc
    logger.debug("decoded %r", message)
    return message

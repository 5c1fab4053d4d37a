"""Exceptions and link-layer NAK reason codes shared by every CTA-2045 layer."""

from __future__ import annotations

import logging
from enum import IntEnum

logger = logging.getLogger("sef.cta2045")

__all__ = [
    "CtaDecodeError",
    "CtaError",
    "CtaUnsupportedRequest",
    "LinkClosed",
    "LinkError",
    "LinkNak",
    "LinkTimeout",
    "NakReason",
    "ResponseTimeout",
    "logger",
]


class NakReason(IntEnum):
    """Link-layer NAK reason codes (second byte of a ``15 rr`` frame) [≥2 src]."""

    NO_REASON = 0x00
    INVALID_BYTE = 0x01
    INVALID_LENGTH = 0x02
    CHECKSUM_ERROR = 0x03
    RESERVED = 0x04
    MESSAGE_TIMEOUT = 0x05
    UNSUPPORTED_MESSAGE_TYPE = 0x06
    REQUEST_NOT_SUPPORTED = 0x07

    @classmethod
    def describe(cls, code: int) -> str:
        """Return a readable name for ``code``, also for codes outside the table."""
        try:
            return cls(code).name
        except ValueError:
            return f"UNKNOWN_0x{code:02X}"


class CtaError(Exception):
    """Base class of every error raised by :mod:`sef.protocols.cta2045`."""


class CtaDecodeError(CtaError, ValueError):
    """Bytes that do not form a valid frame or message.

    ``reason`` is the link-layer NAK code a receiver should answer with.
    """

    def __init__(self, message: str, reason: NakReason = NakReason.INVALID_BYTE) -> None:
        super().__init__(f"{message} (NAK 0x{int(reason):02X} {reason.name})")
        self.reason = reason
        self.detail = message


class CtaUnsupportedRequest(CtaDecodeError):
    """A well-formed message whose opcodes this codec does not know.

    ``reason`` stays 07 (request not supported), the link NAK for data-link requests.
    For Basic and Intermediate DR the answer is a link ACK followed by the application
    answer of :func:`sef.protocols.cta2045.unsupported_answer` (App NAK ``04 01`` or the
    Intermediate reply with response code 01). ``message_type`` is ``(MT1, MT2)`` and
    ``payload`` the frame payload.
    """

    def __init__(self, message: str, message_type: tuple[int, int], payload: bytes) -> None:
        super().__init__(message, NakReason.REQUEST_NOT_SUPPORTED)
        self.message_type = message_type
        self.payload = bytes(payload)


class LinkError(CtaError):
    """A link-layer exchange failed."""


class LinkTimeout(LinkError, TimeoutError):
    """The peer did not link-ACK a message after every try."""


class LinkNak(LinkError):
    """The peer answered a message with a link NAK ``15 rr``."""

    def __init__(self, reason: int) -> None:
        super().__init__(f"peer sent link NAK 0x{reason:02X} ({NakReason.describe(reason)})")
        self.reason = reason


class ResponseTimeout(LinkError, TimeoutError):
    """The application response did not arrive in time (3 s by default)."""


class LinkClosed(LinkError):
    """The link (or its transport) is closed."""

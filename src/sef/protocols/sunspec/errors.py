"""Errors raised by the SunSpec layer; all derive from :class:`SunSpecError`."""

from __future__ import annotations

__all__ = [
    "ModelMissingError",
    "NotSunSpecError",
    "PointError",
    "SunSpecCommError",
    "SunSpecError",
    "SunSpecExceptionResponse",
    "SunSpecValueError",
]


class SunSpecError(Exception):
    """Base class of every SunSpec error."""


class NotSunSpecError(SunSpecError):
    """The device answered, but no ``SunS`` marker was found at any base address."""


class ModelMissingError(SunSpecError):
    """The device's model chain has no model with the requested ID."""


class PointError(SunSpecError):
    """A point name is not defined in the model, or cannot be written."""


class SunSpecValueError(SunSpecError, ValueError):
    """A value does not fit the point's type/range, or a point is not implemented."""


class SunSpecCommError(SunSpecError):
    """The device could not be reached, timed out, or broke the protocol."""


class SunSpecExceptionResponse(SunSpecCommError):
    """The device answered with a Modbus exception (e.g. 2 ILLEGAL ADDRESS, 3 ILLEGAL VALUE).

    Attributes:
        exception_code: the Modbus exception code.
        address: first register (0-based protocol address) of the request.
    """

    def __init__(self, message: str, exception_code: int, address: int) -> None:
        super().__init__(message)
        self.exception_code = exception_code
        self.address = address

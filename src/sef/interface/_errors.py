"""Exception types of the DER interface layer."""

from __future__ import annotations

__all__ = ["InterfaceError", "SignatureError", "TypeMismatch", "UnknownMemberError"]


class InterfaceError(ValueError):
    """An interface definition is invalid (bad XML, bad names, bad types...).

    ``line`` is the 1-based line of the offending element when known and
    ``source`` names the document (a file name, ``"<string>"``...).  ``str()``
    gives ``"source:line: message"`` (or ``"source: message"`` without a line,
    or just the message when there is no source).
    """

    def __init__(self, message: str, *, line: int | None = None, source: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.source = source

    def __str__(self) -> str:
        if self.source and self.line is not None:
            return f"{self.source}:{self.line}: {self.message}"
        if self.source:
            return f"{self.source}: {self.message}"
        if self.line is not None:
            return f"line {self.line}: {self.message}"
        return self.message


class UnknownMemberError(InterfaceError, KeyError):
    """A method, property, signal or interface name is not defined.

    It is both an :class:`InterfaceError` and a :class:`KeyError`, so either
    ``except`` clause catches it; unlike a plain ``KeyError`` its ``str()`` is
    the readable message.
    """

    def __str__(self) -> str:
        return InterfaceError.__str__(self)


class SignatureError(ValueError):
    """A D-Bus type signature is malformed."""


class TypeMismatch(ValueError):
    """A value does not match its D-Bus type signature.

    ``path`` locates the offending part of the value, e.g. ``"cmds[2][1]"``;
    ``str()`` gives ``"path: message"`` (just the message when ``path`` is empty).
    """

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

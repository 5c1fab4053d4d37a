"""The demand-response bridge as the EMS API sees it (``/openadr/...``, issue 15).

The bridge (:mod:`sef.openadr`) is a layer above the EMS: the API must not import it. So the
API talks to a :class:`DrBoard` — a protocol in JSON-able dicts — that the bridge installs on
the EMS object (:func:`set_dr_board`), the way the live controller shares the target board
(:func:`sef.ems._target_board.target_board`). :class:`sef.openadr.OperatorBoard` is the
implementation; an EMS without one has no demand response (``dr_board(ems)`` is ``None``).

An event version is a dict with the fields of ``sef.openadr.EventRecord`` (``source``,
``event_id``, ``modification``, ``program``, ``signal``, ``status``, ``opt``, ``reason``,
``received_s``, ``start_s``, ``end_s``, ``offset_s``, ``requested_kw``, ``delivered_kw``,
``dispatched``, ``agents``, ``raw``): times Unix s on the EMS clock, powers kW (negative: a
reduction), ``null`` where a value is unknown or not finite.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["EVENT_STATUSES", "OPTS", "DrBoard", "dr_board", "set_dr_board"]

EVENT_STATUSES = (
    "received",
    "scheduled",
    "active",
    "completed",
    "cancelled",
    "opted_out",
    "failed",
)
"""The statuses of an event version in the history."""
OPTS = ("optIn", "optOut")
"""The answers to an event."""
_ATTRIBUTE = "dr_board"


@runtime_checkable
class DrBoard(Protocol):
    """What the API reads from and asks of the demand-response bridge."""

    def status(self) -> dict[str, Any]:
        """``{"adapters": [...], "policy": {...}}``: each adapter's health (``source``,
        ``vtn``, ``registered``, ``ven_id``, ``last_ok_s``, ``errors``, ``last_error``,
        ``programs``) and the automatic opt-out policy as JSON."""
        ...

    async def events(
        self,
        *,
        source: str | None = None,
        status: Sequence[str] | None = None,
        program: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Event versions, newest first (receive time, then modification), at most
        ``limit``; filters: ``source``, ``status`` (any of these), ``program``."""
        ...

    async def versions(self, source: str, event_id: str) -> list[dict[str, Any]]:
        """Every stored version of one event, newest first; ``[]`` for an unknown one."""
        ...

    async def set_policy(self, data: dict[str, Any], by: str) -> dict[str, Any]:
        """Replace the automatic opt-out policy (``by``: who); the policy now, as JSON.

        Raises:
            ValueError: ``data`` is not a valid policy (the message says why); the policy
                is unchanged.
        """
        ...

    async def set_opt(
        self, source: str, event_id: str, opt: str, reason: str, by: str
    ) -> dict[str, Any]:
        """An operator's override of the answer to an event's newest version (``opt`` one
        of :data:`OPTS`): the bridge answers the VTN, stops or starts what it sent, and
        records it. The event version after it.

        Raises:
            LookupError: no such event.
            ValueError: the override cannot apply (an event that is over, say).
        """
        ...


def dr_board(ems: object) -> DrBoard | None:
    """The demand-response bridge installed on ``ems``, ``None`` when none runs."""
    board = getattr(ems, _ATTRIBUTE, None)
    return board if isinstance(board, DrBoard) else None


def set_dr_board(ems: object, board: DrBoard | None) -> None:
    """Install ``board`` on ``ems`` (``None``: remove it)."""
    setattr(ems, _ATTRIBUTE, board)

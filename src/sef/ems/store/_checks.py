"""Range checks of every stored field against its column, before a row enters a batch.

A row that does not fit its column would make the whole batch's transaction fail, and a
batch that fails is retried: one bad row would block storage for good. These checks find
such a row first, so the recorder can dead-letter it (:class:`DeadLetter`) and keep the
rest of the batch. They mirror the schema (:mod:`sef.ems.store._schema`): 64-bit and 32-bit
integer columns, ``VARCHAR(n)`` lengths (in characters, as PostgreSQL counts them; SQLite
does not enforce them, the checks do the same on both), finite floats (PostgreSQL's JSON
refuses ``NaN``), text without NUL (PostgreSQL refuses it) and encodable as UTF-8, and a
size limit on JSON values.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DETAIL_MAX_CHARS",
    "INT32_MAX",
    "INT64_MAX",
    "VALUE_MAX_CHARS",
    "DeadLetter",
    "Rejected",
    "check_agent",
    "check_event",
    "check_telemetry",
    "dead_letter",
]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""Range of ``BIGINT`` columns (``bdseq``, ``seq``)."""
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
"""Range of ``INTEGER`` columns (``gaps``)."""
AGENT_ID_MAX_CHARS = 64
KEY_MAX_CHARS = 300
KIND_MAX_CHARS = 32
OFFLINE_REASON_MAX_CHARS = 32
VALUE_MAX_CHARS = 1 << 20
"""Largest JSON text of one telemetry value or agent column (1 Mi characters)."""
DETAIL_MAX_CHARS = 4096
"""Largest detail text of an agent event."""
REASON_MAX_CHARS = 1000
PAYLOAD_MAX_CHARS = 16384
"""A dead letter keeps at most this much of the refused row (JSON text)."""


_HUGE = 1e300
"""Bound of the fast path's float comparisons: finite, so NaN and infinities fail them."""


class Rejected(ValueError):
    """A row that cannot be stored: ``category`` (metric label) and a ``reason`` for people."""

    def __init__(self, category: str, reason: str) -> None:
        super().__init__(reason)
        self.category = category
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A refused row, kept with its reason (table ``dead_letters``).

    ``received`` is the EMS clock (Unix s); ``kind`` the row's table (``telemetry``,
    ``agent``, ``event``); ``payload`` the row as JSON text (truncated, made storable).
    """

    received: float
    agent_id: str | None
    kind: str
    key: str | None
    category: str
    reason: str
    payload: str


def _printable(value: str, limit: int) -> str:
    """``value`` made storable anywhere: no NUL, valid UTF-8, at most ``limit`` chars."""
    if not value.isascii():
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    value = value.replace("\x00", "\\x00")
    return value if len(value) <= limit else value[: limit - 3] + "..."


def dead_letter(
    received: float,
    kind: str,
    agent_id: object,
    key: object,
    category: str,
    reason: str,
    payload: object,
) -> DeadLetter:
    """A storable dead letter, whatever the refused row held."""
    text = payload if isinstance(payload, str) else json.dumps(payload, default=repr)
    return DeadLetter(
        received if isinstance(received, float) and math.isfinite(received) else 0.0,
        None if agent_id is None else _printable(str(agent_id), AGENT_ID_MAX_CHARS),
        kind,
        None if key is None else _printable(str(key), KEY_MAX_CHARS),
        category,
        _printable(reason, REASON_MAX_CHARS),
        _printable(text, PAYLOAD_MAX_CHARS),
    )


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_text(value: object, name: str, limit: int, *, nullable: bool = False) -> None:
    """``value`` fits a ``VARCHAR(limit)``/``TEXT`` column (:class:`Rejected` otherwise)."""
    if value is None and nullable:
        return
    if type(value) is not str:
        raise Rejected("bad_type", f"{name}: expected text, got {type(value).__name__}")
    if len(value) > limit:
        raise Rejected("too_long", f"{name}: {len(value)} characters, at most {limit}")
    if "\x00" in value:
        raise Rejected("bad_text", f"{name}: contains a NUL character")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise Rejected("bad_text", f"{name}: not valid Unicode (lone surrogate)") from None


def check_int(value: object, name: str, low: int, high: int, *, nullable: bool = False) -> None:
    """``value`` is an integer in ``low..high`` (a ``BIGINT``/``INTEGER`` column)."""
    if value is None and nullable:
        return
    if type(value) is not int:
        raise Rejected("bad_type", f"{name}: expected an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise Rejected("out_of_range", f"{name}: {_short(value)} out of range ({low}..{high})")


def check_float(value: object, name: str, *, nullable: bool = False) -> None:
    """``value`` is a finite number (a ``FLOAT`` column)."""
    if value is None and nullable:
        return
    if type(value) not in (float, int):
        raise Rejected("bad_type", f"{name}: expected a number, got {type(value).__name__}")
    try:
        finite = math.isfinite(value)  # type: ignore[arg-type]
    except OverflowError:  # an int beyond float range
        finite = False
    if not finite:
        raise Rejected("not_finite", f"{name}: {_short(value)} is not a finite float")


def check_json(value: object, name: str) -> None:
    """``value`` serializes to strict JSON (no NaN/Infinity) of at most
    :data:`VALUE_MAX_CHARS` characters (a ``JSON`` column)."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise Rejected("bad_json", f"{name}: not storable as JSON ({exc})") from None
    if len(text) > VALUE_MAX_CHARS:
        raise Rejected(
            "too_large", f"{name}: {len(text)} characters of JSON, at most {VALUE_MAX_CHARS}"
        )


def check_telemetry(
    agent_id: object,
    key: object,
    ts: object,
    seq: object,
    received: float,
    value_json: object,
    *,
    max_future_s: float | None,
    max_past_s: float | None,
) -> None:
    """A telemetry row fits its columns and its sender time ``ts`` (Unix s) lies within
    ``max_past_s`` before and ``max_future_s`` after ``received`` (the EMS clock, s);
    ``None`` leaves that side open. :class:`Rejected` otherwise."""
    if (  # fast path, the usual row: ASCII text, in range (about 3x faster than the checks)
        type(received) is float
        and -_HUGE < received < _HUGE
        and type(ts) is float
        and (-_HUGE if max_past_s is None else received - max_past_s)
        <= ts
        <= (_HUGE if max_future_s is None else received + max_future_s)
        and type(seq) is int
        and INT64_MIN <= seq <= INT64_MAX
        and type(agent_id) is str
        and len(agent_id) <= AGENT_ID_MAX_CHARS
        and agent_id.isascii()
        and "\x00" not in agent_id
        and type(key) is str
        and len(key) <= KEY_MAX_CHARS
        and key.isascii()
        and "\x00" not in key
        and type(value_json) is str
        and len(value_json) <= VALUE_MAX_CHARS
        and value_json.isascii()
        and "\x00" not in value_json
    ):
        return
    check_text(agent_id, "agent_id", AGENT_ID_MAX_CHARS)
    check_text(key, "key", KEY_MAX_CHARS)
    check_int(seq, "seq", INT64_MIN, INT64_MAX)
    check_float(received, "received")
    check_float(ts, "ts")
    assert isinstance(ts, (int, float))
    if max_future_s is not None and ts > received + max_future_s:
        raise Rejected(
            "future",
            f"ts {ts!r} is {ts - received:.0f} s ahead of the EMS clock "
            f"(at most {max_future_s:g} s)",
        )
    if max_past_s is not None and ts < received - max_past_s:
        raise Rejected(
            "past",
            f"ts {ts!r} is {received - ts:.0f} s behind the EMS clock (at most {max_past_s:g} s)",
        )
    check_text(value_json, "value", VALUE_MAX_CHARS)


def check_agent(values: dict[str, Any]) -> None:
    """An agent row (:meth:`AgentRow.values`) fits the ``agents`` table."""
    check_text(values["agent_id"], "agent_id", AGENT_ID_MAX_CHARS)
    if values["online"] is not None and type(values["online"]) is not bool:
        raise Rejected("bad_type", "online: expected true, false or null")
    check_int(values["bdseq"], "bdseq", INT64_MIN, INT64_MAX, nullable=True)
    for name in ("about", "interfaces", "groups"):
        check_json(values[name], name)
    for name in ("first_seen", "last_seen"):
        check_float(values[name], name)
    for name in ("online_since", "offline_since"):
        check_float(values[name], name, nullable=True)
    check_text(values["offline_reason"], "offline_reason", OFFLINE_REASON_MAX_CHARS, nullable=True)
    check_int(values["gaps"], "gaps", INT32_MIN, INT32_MAX)


def check_event(agent_id: object, ts: object, kind: object, detail: object) -> None:
    """An agent event row fits the ``agent_events`` table."""
    check_text(agent_id, "agent_id", AGENT_ID_MAX_CHARS)
    check_float(ts, "ts")
    check_text(kind, "kind", KIND_MAX_CHARS)
    check_text(detail, "detail", DETAIL_MAX_CHARS, nullable=True)

"""JSON payloads of the SEF bus (see ``docs/protocol.md``) and of home gateways (see
``docs/gateway.md``).

Every payload except interface XML and a gateway's bridge state is one UTF-8 JSON object
with ``"v": 1``. A component with credentials sends and accepts calls and replies only as
signed envelopes of protocol version 2, ``{"v": 2, "jws": "<JWS>"}`` (the JWS is made and
checked by :mod:`sef.security`; it carries the version-1 object). A version-1 receiver
rejects a payload with ``v`` other than 1 or the reserved keys ``jws`` and ``cose``
instead of guessing.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_fast_loads: Callable[[bytes], Any] | None
try:  # the EMS extra; agents without it take the standard library's decoder
    from orjson import JSONDecodeError as _FastError
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - orjson ships with sef[ems]
    _fast_loads = None
    _FastError = ValueError  # type: ignore[assignment,misc]

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "PROTOCOL_VERSION",
    "SIGNED_PROTOCOL_VERSION",
    "About",
    "Call",
    "ErrorName",
    "GatewayAgents",
    "InterfaceRef",
    "PayloadError",
    "PropertyUpdate",
    "Reply",
    "SignalEmission",
    "Status",
    "check_object",
    "decode_bridge_state",
    "decode_envelope",
    "decode_object",
    "encode_bridge_state",
    "encode_envelope",
    "encode_object",
    "loads_kept",
]

PROTOCOL_VERSION = 1
SIGNED_PROTOCOL_VERSION = 2
"""Signed calls and replies: ``{"v": 2, "jws": ...}`` (see ``docs/protocol.md``)."""
MAX_PAYLOAD_BYTES = 256 * 1024
"""Largest payload a SEF process parses (bytes); larger ones are refused unread."""


class ErrorName:
    """Error names carried in replies (D-Bus names where D-Bus has one)."""

    UNKNOWN_INTERFACE = "org.freedesktop.DBus.Error.UnknownInterface"
    UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
    INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
    FAILED = "org.freedesktop.DBus.Error.Failed"
    EXPIRED = "sef.Error.Expired"
    MALFORMED = "sef.Error.MalformedPayload"
    TOO_LARGE = "sef.Error.PayloadTooLarge"
    UNSUPPORTED_VERSION = "sef.Error.UnsupportedVersion"
    TIMEOUT = "sef.Error.Timeout"
    UNAUTHORIZED = "sef.Error.Unauthorized"
    """A signed call from a genuine EMS that this agent may not execute (wrong audience or
    topic, expired, not an EMS role, ...): only sent when the signature verified."""
    DEVICE_UNREACHABLE = "sef.Fault.DeviceUnreachable"
    """A reply's ``fault``: the agent accepted the command but cannot reach its device."""


class PayloadError(ValueError):
    """A payload is not valid JSON of the expected shape; ``name`` is an :class:`ErrorName`."""

    def __init__(self, message: str, name: str = ErrorName.MALFORMED) -> None:
        super().__init__(message)
        self.name = name


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
"""Built once: ``json.dumps`` with options builds a new encoder on every call."""


def encode_object(obj: dict[str, Any]) -> bytes:
    """Serialise a payload object to compact UTF-8 JSON (finite numbers only)."""
    return _ENCODER.encode(obj).encode()


def _reject_constant(name: str) -> float:
    raise PayloadError(f"non-finite number {name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # e.g. 1e400: valid JSON syntax, no finite double
        raise PayloadError(f"number {text[:40]} is out of range (not a finite double)")
    return value


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
"""Built once: ``json.loads`` with options builds a new decoder on every call."""
_DIGITS = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
"""``bytes.translate`` table: every digit to ``0``, every other byte to a space."""
_LONG_DIGITS = b"0" * 19
"""19 digits in a row: an integer orjson may turn into a float (beyond 64 bits)."""


def loads_kept(payload: bytes) -> Any:
    """Decode a payload checked on receipt and kept as bytes (e.g. by the EMS registry):
    orjson when it gives what :mod:`json` gives (:func:`_parse_json`), else :mod:`json`.
    Raises :class:`ValueError` if it does not decode."""
    if _fast_loads is not None and _LONG_DIGITS not in payload.translate(_DIGITS):
        try:
            return _fast_loads(payload)
        except _FastError:
            pass
    return json.loads(payload)


def _parse_json(payload: bytes, max_bytes: int) -> dict[str, Any]:
    """One JSON object from ``payload``, else :class:`PayloadError` with a clear reason.

    Fast path (issue 16): orjson, which parses in C and refuses ``NaN``, ``Infinity`` and
    numbers that overflow a double by itself (the standard library needs a Python hook
    per float for that, ~1 µs each). orjson differs from :mod:`json` on integers beyond
    64 bits (it makes them floats), so a payload with 19 digits in a row takes the
    standard library's path; so does every payload orjson refuses, which gives the same
    accepted values and the same reasons as before (e.g. a lone surrogate escape, which
    :mod:`json` accepts and orjson does not).
    """
    if len(payload) > max_bytes:
        raise PayloadError(
            f"payload of {len(payload)} bytes exceeds the {max_bytes}-byte limit",
            ErrorName.TOO_LARGE,
        )
    if (
        _fast_loads is not None
        and type(payload) is bytes
        and _LONG_DIGITS not in payload.translate(_DIGITS)
    ):
        try:
            fast = _fast_loads(payload)
        except _FastError:
            pass  # the standard library's path below gives the reason (or accepts it)
        else:
            if type(fast) is dict:
                return fast
    try:
        text = payload.decode("utf-8")
        if text.startswith("\ufeff"):  # as json.loads reports it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        obj = _DECODER.decode(text)
    except UnicodeDecodeError as exc:
        raise PayloadError(f"payload is not UTF-8: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise PayloadError(f"payload is not JSON: {exc.msg} at char {exc.pos}") from None
    except RecursionError:
        raise PayloadError("payload JSON is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal over sys.get_int_max_str_digits()
        raise PayloadError(f"payload is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise PayloadError(f"payload must be a JSON object, got {type(obj).__name__}")
    return obj


def check_object(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` if it is a version-1 payload object (e.g. the ``msg`` of a verified signed
    envelope), else :class:`PayloadError` (``UNSUPPORTED_VERSION``)."""
    if "jws" in obj or "cose" in obj:
        raise PayloadError(
            f"unsupported protocol version: signed envelopes (version {SIGNED_PROTOCOL_VERSION}) "
            f"are not accepted where a version-{PROTOCOL_VERSION} object is expected",
            ErrorName.UNSUPPORTED_VERSION,
        )
    version = obj.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise PayloadError(
            f"unsupported protocol version {str(version)[:20]!r} (expected {PROTOCOL_VERSION})",
            ErrorName.UNSUPPORTED_VERSION,
        )
    return obj


def decode_object(payload: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> dict[str, Any]:
    """Parse a version-1 payload object; raise :class:`PayloadError` with a clear reason."""
    if (  # the usual valid case in one call (:func:`_parse_json`, :func:`check_object`)
        _fast_loads is not None
        and type(payload) is bytes
        and len(payload) <= max_bytes
        and _LONG_DIGITS not in payload.translate(_DIGITS)
    ):
        try:
            obj = _fast_loads(payload)
        except _FastError:
            pass
        else:
            if (
                type(obj) is dict
                and type(obj.get("v")) is int
                and obj["v"] == PROTOCOL_VERSION
                and "jws" not in obj
                and "cose" not in obj
            ):
                return obj
    return check_object(_parse_json(payload, max_bytes))


_COMPACT_JWS = re.compile(r"[A-Za-z0-9_.-]*")
"""The characters of a JWS compact serialization (base64url segments and dots)."""


def encode_envelope(jws: str) -> bytes:
    """A signed call or reply on the wire: ``{"v": 2, "jws": jws}``."""
    if _COMPACT_JWS.fullmatch(jws):  # nothing to escape: the JSON is the string itself
        return f'{{"v":{SIGNED_PROTOCOL_VERSION},"jws":"{jws}"}}'.encode("ascii")
    return encode_object({"v": SIGNED_PROTOCOL_VERSION, "jws": jws})


def decode_envelope(payload: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> str:
    """The JWS of a signed (version-2) payload; :class:`PayloadError` when the payload is
    not one: ``UNAUTHORIZED`` for an unsigned version-1 object (a receiver with credentials
    refuses those), ``MALFORMED`` or ``UNSUPPORTED_VERSION`` otherwise."""
    obj = _parse_json(payload, max_bytes)
    version = obj.get("v")
    if type(version) is int and version == PROTOCOL_VERSION and "jws" not in obj:
        raise PayloadError(
            f"unsigned protocol-version-{PROTOCOL_VERSION} payload refused: signed envelopes "
            f"(version {SIGNED_PROTOCOL_VERSION}) required",
            ErrorName.UNAUTHORIZED,
        )
    if type(version) is not int or version != SIGNED_PROTOCOL_VERSION:
        raise PayloadError(
            f"unsupported protocol version {str(version)[:20]!r} "
            f"(expected {SIGNED_PROTOCOL_VERSION}, signed)",
            ErrorName.UNSUPPORTED_VERSION,
        )
    jws = obj.get("jws")
    if not isinstance(jws, str) or not jws:
        raise PayloadError("field 'jws' must be a non-empty string (JWS compact serialization)")
    if set(obj) != {"v", "jws"}:
        extra = sorted(set(obj) - {"v", "jws"})
        raise PayloadError(f"signed envelope has unexpected field(s) {', '.join(extra)[:80]}")
    return jws


# -- typed field readers ---------------------------------------------------------------


def _get(
    obj: dict[str, Any],
    key: str,
    kind: type | tuple[type, ...],
    *,
    required: bool = True,
    default: Any = None,
) -> Any:
    if key not in obj or obj[key] is None:
        if required:
            raise PayloadError(f"missing field {key!r}")
        return default
    value = obj[key]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise PayloadError(f"field {key!r} must be {_kind_name(kind)}, got bool")
    if not isinstance(value, kind):
        raise PayloadError(f"field {key!r} must be {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "a boolean",
        list: "an array",
        dict: "an object",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _time(obj: dict[str, Any], key: str, *, required: bool = True) -> float | None:
    value = obj.get(key)
    if type(value) is float and 0.0 <= value < math.inf:  # fast path: the usual valid case
        return value
    value = _get(obj, key, (int, float), required=required)
    if value is None:
        return None
    if not math.isfinite(value) or value < 0:
        raise PayloadError(f"field {key!r} must be a non-negative Unix time in seconds")
    return float(value)


def _seq(obj: dict[str, Any]) -> int | None:
    value = obj.get("seq")
    if type(value) is int and 0 <= value < 2**32:  # fast path: the usual valid case
        return value
    value = _get(obj, "seq", int, required=False)
    if value is not None and not 0 <= value < 2**32:
        raise PayloadError("field 'seq' must be in 0..4294967295")
    return value  # type: ignore[no-any-return]


# -- payload kinds ----------------------------------------------------------------------


@dataclass(slots=True)
class Status:
    """Presence of an agent or host: birth (``online``) or death (``offline``).

    Attributes:
        online: ``True`` for a birth, ``False`` for a death (will or clean shutdown).
        bdseq: birth/death sequence number of the session this status belongs to.
        ts: sender time, Unix s (``None`` in a last will).
        keepalive_s: MQTT keepalive of the session, s.
        seq: per-session message sequence number (0 for a birth).
        reason: why an agent went offline (``"shutdown"``, ``"will"``), optional.
    """

    online: bool
    bdseq: int
    ts: float | None = None
    keepalive_s: int | None = None
    seq: int | None = None
    reason: str | None = None

    def to_payload(self) -> bytes:
        obj: dict[str, Any] = {
            "v": PROTOCOL_VERSION,
            "state": "online" if self.online else "offline",
            "bdseq": self.bdseq,
        }
        for key in ("ts", "keepalive_s", "seq", "reason"):
            value = getattr(self, key)
            if value is not None:
                obj[key] = value
        return encode_object(obj)

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> Status:
        state, bdseq, keepalive = obj.get("state"), obj.get("bdseq"), obj.get("keepalive_s")
        if (  # fast path: the usual valid birth or death
            (state == "online" or state == "offline")
            and type(bdseq) is int
            and bdseq >= 0
            and (keepalive is None or type(keepalive) is int)
            and obj.get("reason") is None
        ):
            return cls(state == "online", bdseq, _time(obj, "ts", required=False), keepalive,
                       _seq(obj))  # fmt: skip
        state = _get(obj, "state", str)
        if state not in ("online", "offline"):
            raise PayloadError(f"field 'state' must be 'online' or 'offline', got {state!r}")
        bdseq = _get(obj, "bdseq", int)
        if bdseq < 0:
            raise PayloadError("field 'bdseq' must be >= 0")
        keepalive = _get(obj, "keepalive_s", int, required=False)
        return cls(
            state == "online",
            bdseq,
            _time(obj, "ts", required=False),
            keepalive,
            _seq(obj),
            _get(obj, "reason", str, required=False),
        )


_STR_ONLY = frozenset((str,))


@dataclass(slots=True)
class InterfaceRef:
    """An interface an agent implements, and where its XML is."""

    name: str
    sha256: str


@dataclass(slots=True)
class About:
    """The About announcement: AllJoyn About fields plus SEF's interface and group lists."""

    fields: dict[str, Any]
    interfaces: list[InterfaceRef]
    groups: list[str]
    bdseq: int
    ts: float | None = None
    seq: int | None = None

    REQUIRED = (
        "AppId",
        "DeviceId",
        "AppName",
        "Manufacturer",
        "ModelNumber",
        "DefaultLanguage",
        "DeviceName",
        "SoftwareVersion",
    )

    def to_payload(self) -> bytes:
        return encode_object(
            {
                "v": PROTOCOL_VERSION,
                "seq": self.seq,
                "ts": self.ts,
                "bdseq": self.bdseq,
                "about": self.fields,
                "interfaces": [{"name": i.name, "sha256": i.sha256} for i in self.interfaces],
                "groups": self.groups,
            }
        )

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> About:
        fields = obj.get("about")
        if type(fields) is not dict:
            fields = _get(obj, "about", dict)
        if not fields.keys() >= _ABOUT_REQUIRED:
            missing = [k for k in cls.REQUIRED if k not in fields]
            raise PayloadError(f"About is missing required field(s) {', '.join(missing)}")
        refs = []
        for i, item in enumerate(_get(obj, "interfaces", list)):
            if type(item) is not dict:
                name = sha256 = None
            else:
                name, sha256 = item.get("name"), item.get("sha256")
            if not isinstance(name, str) or not isinstance(sha256, str):
                raise PayloadError(f"interfaces[{i}] must be an object with 'name' and 'sha256'")
            refs.append(InterfaceRef(name, sha256))
        groups = obj.get("groups")
        if type(groups) is not list or not _STR_ONLY.issuperset(map(type, groups)):
            groups = _get(obj, "groups", list, required=False, default=[])
            if not all(isinstance(g, str) for g in groups):
                raise PayloadError("field 'groups' must be an array of strings")
        bdseq = obj.get("bdseq")
        if type(bdseq) is not int:
            bdseq = _get(obj, "bdseq", int)
        return cls(fields, refs, groups, bdseq, _time(obj, "ts", required=False), _seq(obj))


_ABOUT_REQUIRED = frozenset(About.REQUIRED)


@dataclass(slots=True)
class PropertyUpdate:
    """A property value (JSON mapping of its D-Bus type), with sender time (Unix s).

    ``backfill``: an update buffered while the agent was disconnected, sent after its next
    birth (``docs/protocol.md`` §4.7; JSON key ``"backfill": true``, absent otherwise).
    """

    value: Any
    ts: float | None = None
    seq: int | None = None
    backfill: bool = False

    def to_payload(self) -> bytes:
        obj = {"v": PROTOCOL_VERSION, "seq": self.seq, "ts": self.ts, "value": self.value}
        if self.backfill:
            obj["backfill"] = True
        return encode_object(obj)

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> PropertyUpdate:
        if "value" not in obj:
            raise PayloadError("missing field 'value'")
        backfill = obj.get("backfill", False)
        if backfill is not True and backfill is not False:
            raise PayloadError("field 'backfill' must be a boolean")
        return cls(obj["value"], _time(obj, "ts", required=False), _seq(obj), backfill)


@dataclass(slots=True)
class SignalEmission:
    """A signal: its out-arguments in order (JSON mapping), with sender time (Unix s)."""

    args: list[Any]
    ts: float | None = None
    seq: int | None = None

    def to_payload(self) -> bytes:
        return encode_object(
            {"v": PROTOCOL_VERSION, "seq": self.seq, "ts": self.ts, "args": self.args}
        )

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> SignalEmission:
        return cls(_get(obj, "args", list), _time(obj, "ts", required=False), _seq(obj))


@dataclass(slots=True)
class Call:
    """A method call.

    Attributes:
        id: correlation id, unique per caller (1–128 characters).
        args: in-arguments, JSON mapping of the method's in-signature.
        ts: time the call was sent, Unix s.
        exp: expiry, Unix s: a receiver never executes a call after this time.
        reply_to: topic for the reply, or ``None`` when no reply is wanted.
        sender: id of the caller (informational).
    """

    id: str
    args: list[Any]
    ts: float
    exp: float
    reply_to: str | None = None
    sender: str | None = None

    def to_object(self) -> dict[str, Any]:
        """The call as a version-1 payload object (what a signed envelope carries)."""
        obj: dict[str, Any] = {
            "v": PROTOCOL_VERSION,
            "id": self.id,
            "ts": self.ts,
            "exp": self.exp,
            "args": self.args,
        }
        if self.reply_to is not None:
            obj["reply_to"] = self.reply_to
        if self.sender is not None:
            obj["sender"] = self.sender
        return obj

    def to_payload(self) -> bytes:
        """The call as a version-1 JSON payload."""
        return encode_object(self.to_object())

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> Call:
        call_id = _get(obj, "id", str)
        if not 1 <= len(call_id) <= 128:
            raise PayloadError("field 'id' must be 1-128 characters")
        ts, exp = _time(obj, "ts"), _time(obj, "exp")
        assert ts is not None and exp is not None
        reply_to = _get(obj, "reply_to", str, required=False)
        if reply_to is not None and (not reply_to or "+" in reply_to or "#" in reply_to):
            raise PayloadError("field 'reply_to' must be a topic without wildcards")
        return cls(
            call_id,
            _get(obj, "args", list),
            ts,
            exp,
            reply_to,
            _get(obj, "sender", str, required=False),
        )


@dataclass(slots=True)
class Reply:
    """The answer to a call: ``ok`` with ``result`` (out-args), or an error name and message.

    ``ok`` says the agent *accepted* the call (valid, not expired, handed to its device
    logic). Whether the device carried it out is ``applied``: ``True`` the device applied
    it (e.g. its control registers read back the command), ``False`` it did not, with the
    device's ``fault`` (an error name) and ``fault_message``; ``None`` (the key absent, as
    from every agent before this field existed) means accepted, not confirmed. ``applied``
    and ``fault`` travel only with ``ok`` replies.
    """

    id: str
    agent: str
    ok: bool
    result: list[Any] = field(default_factory=list)
    error: str | None = None
    message: str | None = None
    ts: float | None = None
    seq: int | None = None
    applied: bool | None = None
    fault: str | None = None
    fault_message: str | None = None

    @property
    def outcome(self) -> str:
        """``refused`` (not ok), ``applied``, ``not_applied`` or ``accepted`` (unconfirmed)."""
        if not self.ok:
            return "refused"
        if self.applied is None:
            return "accepted"
        return "applied" if self.applied else "not_applied"

    def to_payload(self) -> bytes:
        """The reply as a version-1 JSON payload."""
        return encode_object(self.to_object())

    def to_object(self) -> dict[str, Any]:
        """The reply as a version-1 payload object (what a signed envelope carries)."""
        obj: dict[str, Any] = {
            "v": PROTOCOL_VERSION,
            "id": self.id,
            "agent": self.agent,
            "ok": self.ok,
            "ts": self.ts,
            "seq": self.seq,
        }
        if self.ok:
            obj["result"] = self.result
            if self.applied is not None:
                obj["applied"] = self.applied
            if self.applied is False:
                obj["fault"] = {
                    "name": self.fault or ErrorName.FAILED,
                    "message": self.fault_message or "",
                }
        else:
            obj["error"] = {"name": self.error, "message": self.message}
        return obj

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> Reply:
        """Read a reply; ``applied`` absent means accepted (not confirmed)."""
        ok = _get(obj, "ok", bool)
        reply = cls(
            _get(obj, "id", str),
            _get(obj, "agent", str),
            ok,
            ts=_time(obj, "ts", required=False),
            seq=_seq(obj),
        )
        if ok:
            reply.result = _get(obj, "result", list, required=False, default=[])
            reply.applied = _get(obj, "applied", bool, required=False, default=None)
            if reply.applied is False:
                fault = _get(obj, "fault", dict, required=False, default={})
                reply.fault = str(fault.get("name") or ErrorName.FAILED)
                reply.fault_message = str(fault.get("message") or "")
        else:
            error = _get(obj, "error", dict)
            reply.error = str(error.get("name") or ErrorName.FAILED)
            reply.message = str(error.get("message") or "")
        return reply


# -- home gateways (docs/gateway.md) ----------------------------------------------------


@dataclass(slots=True)
class GatewayAgents:
    """The retained list of the agents behind home gateway ``home``
    (``{root}/gateways/{home}/agents``)."""

    home: str
    agents: list[str]

    def to_payload(self) -> bytes:
        return encode_object({"v": PROTOCOL_VERSION, "home": self.home, "agents": self.agents})

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> GatewayAgents:
        agents = _get(obj, "agents", list)
        if not all(isinstance(a, str) for a in agents):
            raise PayloadError("field 'agents' must be an array of agent ids")
        return cls(_get(obj, "home", str), agents)


def encode_bridge_state(up: bool) -> bytes:
    """A gateway bridge's state as Mosquitto notifies it: ``1`` up, ``0`` down."""
    return b"1" if up else b"0"


def decode_bridge_state(payload: bytes) -> bool:
    """Whether a bridge-state notification (``{root}/gateways/{home}/status``) says up.

    Surrounding white space is allowed; anything but ``0`` or ``1`` is a
    :class:`PayloadError`.
    """
    state = payload.strip()
    if state not in (b"0", b"1"):
        raise PayloadError(f"bridge state must be 0 or 1, got {payload[:40]!r}")
    return state == b"1"

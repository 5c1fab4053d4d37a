"""Birth checks: what an agent publishes when it comes online (docs/protocol.md §3–§5, §7).

The retained birth is what the probe received when it subscribed; the *live* birth is one
published while the probe listens (after ``sef.Agent.Rebirth``), the only one whose order
can be seen. Retained flags are judged on a fresh subscription: MQTT 3.1.1 brokers clear
the flag on live deliveries, so only what a new subscriber gets shows what is retained.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from sef.certify._model import Check, CheckContext, CheckFailed, CheckSkipped, Level, Observed
from sef.interface import (
    AGENT_INTERFACE,
    Interface,
    InterfaceError,
    Property,
    TypeMismatch,
    from_json,
    load_xml,
)

__all__ = [
    "CHECKS",
    "announced",
    "current_session",
    "declared_properties",
    "obj",
    "relative",
]

REQUIRED_ABOUT = (
    "AppId",
    "DefaultLanguage",
    "DeviceName",
    "DeviceId",
    "AppName",
    "Manufacturer",
    "ModelNumber",
    "SoftwareVersion",
)
_HEX32 = re.compile(r"[0-9a-fA-F]{32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


# -- helpers shared with the session checks ------------------------------------------------
def relative(ctx: CheckContext, message: Observed) -> str:
    """The message's topic below ``{root}/agents/{agent}/`` ('' when outside)."""
    prefix = ctx.agent_topic("")
    return message.topic[len(prefix) :] if message.topic.startswith(prefix) else ""


def obj(message: Observed) -> dict[str, Any] | None:
    """The payload as a JSON object, or ``None``."""
    try:
        data = message.json()
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def announced(ctx: CheckContext) -> dict[str, str]:
    """Interface name -> SHA-256 the About announces."""
    refs = (ctx.about or {}).get("interfaces")
    if not isinstance(refs, list):
        return {}
    return {
        r["name"]: str(r.get("sha256", ""))
        for r in refs
        if isinstance(r, dict) and isinstance(r.get("name"), str)
    }


def parsed_interface(ctx: CheckContext, name: str) -> Interface | None:
    """The interface ``name`` from the XML the agent published (``None`` if unusable)."""
    try:
        return load_xml(ctx.interfaces.get(name, b""), f"interfaces/{name}").interfaces.get(name)
    except InterfaceError:
        return None


def declared_properties(ctx: CheckContext) -> list[tuple[str, str, Property]]:
    """(interface, name, property) of every readable property the agent declares."""
    found = []
    for name in announced(ctx):
        iface = parsed_interface(ctx, name)
        if iface is not None:
            found += [(name, p, prop) for p, prop in iface.properties.items() if prop.readable]
    return found


def current_session(ctx: CheckContext) -> tuple[int, int]:
    """(bdseq, highest live seq since its latest birth) of the agent's latest online
    status."""
    bdseq: int | None = None
    top = 0
    for message in ctx.agent_messages(0):
        data = obj(message)
        if data is None:
            continue
        bd = data.get("bdseq")
        online = relative(ctx, message) == "status" and data.get("state") == "online"
        rebirth = data.get("seq") == 0 and not message.retain
        if online and isinstance(bd, int) and (bd != bdseq or rebirth):
            bdseq, top = bd, 0  # a new session, or a rebirth: seq starts again
        if isinstance(data.get("seq"), int) and not message.retain:
            top = max(top, data["seq"])
    if bdseq is None:
        raise CheckFailed("the agent never said it is online (no online status seen)")
    return bdseq, top


def _need_about(ctx: CheckContext) -> dict[str, Any]:
    if ctx.about is None:
        raise CheckFailed(f"no About on {ctx.agent_topic('about')}")
    return ctx.about


# -- the checks -------------------------------------------------------------------------
async def check_order(ctx: CheckContext) -> str:
    birth = await ctx.live_birth()
    kinds = [relative(ctx, m) for m in birth]
    first = obj(birth[0])
    if kinds[0] != "status" or first is None or first.get("state") != "online":
        raise CheckFailed(f"birth starts with {kinds[0]!r}, not the online status")
    if len(birth) < 2 or kinds[1] != "about":
        raise CheckFailed(f"second message of the birth is {kinds[1:2]}, not About")
    about = obj(birth[1]) or {}
    if about.get("seq") != 1:
        raise CheckFailed(f"About has seq {about.get('seq')!r}, not 1")
    xml_at = [i for i, k in enumerate(kinds) if k.startswith("interfaces/")]
    prop_at = [i for i, k in enumerate(kinds) if k.startswith("props/")]
    names = {kinds[i].split("/", 1)[1] for i in xml_at}
    by_hash = {n for n in announced(ctx) if ctx.xml_from_hash(n)}
    missing = sorted(set(announced(ctx)) - names - by_hash)
    if missing:
        raise CheckFailed(f"the birth has no interface XML for {missing}: {_no_xml_hint(ctx)}")
    if prop_at and xml_at and max(xml_at) > min(prop_at):
        raise CheckFailed(
            f"interface XML ({kinds[max(xml_at)]}) published after a property "
            f"({kinds[min(prop_at)]})"
        )
    seqs = [d.get("seq") for d in map(obj, birth) if d is not None]
    if seqs != list(range(len(seqs))):
        raise CheckFailed(f"seq of the birth's JSON messages: {seqs}, expected 0..{len(seqs) - 1}")
    return (
        f"status seq 0, About seq 1, {len(xml_at)} interface XML on its own topics "
        f"({len(by_hash)} once per hash), then {len(prop_at)} properties with seq "
        f"2..{len(seqs) - 1}"
    )


def _no_xml_hint(ctx: CheckContext) -> str:
    return (
        f"neither on {ctx.topic('interfaces/{sha256}')} with the About's hash (protocol "
        f"version 2) nor on {ctx.agent_topic('interfaces/{name}')} (version 1)"
    )


async def check_status(ctx: CheckContext) -> str:
    birth = await ctx.live_birth()
    status = obj(birth[0]) or {}
    problems = []
    if status.get("v") != 1:
        problems.append(f"v {status.get('v')!r}")
    if not isinstance(status.get("bdseq"), int) or status["bdseq"] < 0:
        problems.append(f"bdseq {status.get('bdseq')!r} not an integer >= 0")
    if not isinstance(status.get("ts"), int | float) or isinstance(status.get("ts"), bool):
        problems.append(f"ts {status.get('ts')!r} not a number")
    if not isinstance(status.get("keepalive_s"), int) or isinstance(
        status.get("keepalive_s"), bool
    ):
        problems.append(f"keepalive_s {status.get('keepalive_s')!r} not an integer")
    if problems:
        raise CheckFailed("online status: " + "; ".join(problems))
    return f"online status {birth[0].payload.decode()[:160]}"


async def check_keepalive(ctx: CheckContext) -> str:
    status = obj((await ctx.live_birth())[0]) or {}
    keepalive = status.get("keepalive_s")
    if not isinstance(keepalive, int) or not 0 < keepalive <= 10:
        raise CheckFailed(f"keepalive_s {keepalive!r}: agents SHOULD use 10 s or less")
    return f"keepalive {keepalive} s"


async def check_retained(ctx: CheckContext) -> str:
    await ctx.live_birth()
    snapshot = await ctx.retained_snapshot()
    want = ["status", "about"]
    want += [f"props/{i}/{p}" for i, p, _ in declared_properties(ctx)]
    missing = [t for t in want if ctx.agent_topic(t) not in snapshot]
    for name, sha in announced(ctx).items():  # the XML: own topic (v1) or hash topic (v2)
        own, shared = ctx.agent_topic(f"interfaces/{name}"), ctx.topic(f"interfaces/{sha}")
        if own not in snapshot and shared not in snapshot:
            missing.append(f"interfaces/{name} or {shared}")
        want.append(own)
    unwanted = [
        t
        for t in snapshot
        if t == ctx.reply_topic
        or t.startswith((ctx.agent_topic("signals/"), ctx.agent_topic("seal")))
    ]
    if missing or unwanted:
        raise CheckFailed(
            (f"not retained: {missing}. " if missing else "")
            + (f"retained but must not be: {unwanted}" if unwanted else "")
        )
    return f"{len(want)} topics retained (status, About, XML, properties); no signal or reply"


async def check_qos(ctx: CheckContext) -> str:
    await ctx.live_birth()
    seen = ctx.agent_messages(0) + [m for m in ctx.since(0) if m.topic == ctx.reply_topic]
    wrong = sorted({f"{m.topic} (QoS {m.qos})" for m in seen if m.qos != 1})
    if wrong:
        raise CheckFailed(f"published at a QoS other than 1: {wrong[:5]}")
    return f"{len(seen)} messages, all QoS 1"


async def check_about(ctx: CheckContext) -> str:
    about = _need_about(ctx)
    fields = about.get("about")
    problems = []
    if about.get("v") != 1:
        problems.append(f"v {about.get('v')!r}")
    if not isinstance(fields, dict):
        raise CheckFailed(f"About has no 'about' object: {str(about)[:120]}")
    missing = [f for f in REQUIRED_ABOUT if not isinstance(fields.get(f), str)]
    if missing:
        problems.append(f"required fields missing or not strings: {missing}")
    app_id = fields.get("AppId")
    if isinstance(app_id, str) and not _HEX32.fullmatch(app_id):
        problems.append(f"AppId {app_id!r} is not 32 hex digits")
    refs = about.get("interfaces")
    if not isinstance(refs, list) or not all(
        isinstance(r, dict) and isinstance(r.get("name"), str) and isinstance(r.get("sha256"), str)
        for r in refs
    ):
        problems.append(f"interfaces must be a list of {{name, sha256}}: {str(refs)[:120]}")
    if not isinstance(about.get("bdseq"), int):
        problems.append("no integer bdseq")
    if problems:
        raise CheckFailed("; ".join(problems))
    return f"AppId {app_id}, DeviceId {fields.get('DeviceId')!r}, {len(refs or [])} interfaces"


async def check_interface_xml(ctx: CheckContext) -> str:
    _need_about(ctx)
    refs = announced(ctx)
    if not refs:
        raise CheckFailed("About announces no interface")
    problems = []
    for name, sha in refs.items():
        xml = ctx.interfaces.get(name)
        if xml is None:
            problems.append(f"{name}: no XML: {_no_xml_hint(ctx)}")
            continue
        try:
            node = load_xml(xml, f"interfaces/{name}")
        except InterfaceError as exc:
            problems.append(f"{name}: does not load: {exc}")
            continue
        if name not in node.interfaces:
            problems.append(f"{name}: the XML declares {sorted(node.interfaces)}, not {name}")
        actual = hashlib.sha256(xml).hexdigest()
        if not _HEX64.fullmatch(sha) or actual != sha:
            where = "on its hash topic " if ctx.xml_from_hash(name) else ""
            problems.append(
                f"{name}: About says sha256 {sha[:16]}…, the XML {where}has {actual[:16]}…"
            )
    if problems:
        raise CheckFailed("; ".join(problems))
    return f"{len(refs)} interface XML load and match their SHA-256: {sorted(refs)}"


async def check_expected_interfaces(ctx: CheckContext) -> str:
    if not ctx.expected_interfaces:
        raise CheckSkipped("no --interface XML given")
    problems = []
    for name, xml in ctx.expected_interfaces.items():
        spec = load_xml(xml, name).interfaces[name]
        actual = parsed_interface(ctx, name)
        if actual is None:
            problems.append(f"{name}: not implemented (not in About or XML unusable)")
            continue
        for kind in ("methods", "properties", "signals"):
            theirs = getattr(actual, kind)
            for member, declared in getattr(spec, kind).items():
                if member not in theirs:
                    problems.append(f"{name}.{member}: missing")
                elif _shape(theirs[member]) != _shape(declared):
                    problems.append(
                        f"{name}.{member}: {_shape(theirs[member])} != {_shape(declared)}"
                    )
    if problems:
        raise CheckFailed("; ".join(problems[:6]))
    return f"implements {sorted(ctx.expected_interfaces)} as given"


def _shape(member: Any) -> str:
    """A member's type signature(s) for comparison."""
    if isinstance(member, Property):
        return f"{member.type} {member.access}"
    if hasattr(member, "in_signature"):
        return f"({member.in_signature})->({member.out_signature})"
    return f"signal ({getattr(member, 'signature', '')})"


async def check_sef_agent(ctx: CheckContext) -> str:
    if AGENT_INTERFACE not in announced(ctx):
        raise CheckFailed(f"About does not list {AGENT_INTERFACE}")
    iface = parsed_interface(ctx, AGENT_INTERFACE)
    if iface is None or not {"Rebirth", "Ping"} <= set(iface.methods):
        raise CheckFailed(f"{AGENT_INTERFACE} XML lacks Rebirth or Ping")
    reply = await ctx.call(AGENT_INTERFACE, "Ping", [])
    if reply is None:
        raise CheckFailed("no reply to sef.Agent.Ping within 5 s")
    result = reply.get("result")
    if reply.get("ok") is not True or not (
        isinstance(result, list) and len(result) == 1 and isinstance(result[0], int | float)
    ):
        raise CheckFailed(f"Ping reply is not ok with [now]: {str(reply)[:160]}")
    return f"sef.Agent listed with Rebirth and Ping; Ping -> {result[0]}"


async def check_properties(ctx: CheckContext) -> str:
    birth = await ctx.live_birth()
    declared = declared_properties(ctx)
    in_birth = {relative(ctx, m) for m in birth}
    problems = []
    for interface, name, prop in declared:
        topic = f"props/{interface}/{name}"
        if topic not in in_birth:
            problems.append(f"{interface}.{name}: not in the birth")
            continue
        update = next(obj(m) for m in birth if relative(ctx, m) == topic)
        if update is None or update.get("v") != 1 or "value" not in update:
            problems.append(f"{interface}.{name}: not a PropertyUpdate")
            continue
        try:
            from_json(prop.type, update["value"])
        except TypeMismatch as exc:
            problems.append(f"{interface}.{name}: value does not fit {prop.type!r}: {exc}")
    if problems:
        raise CheckFailed("; ".join(problems[:6]))
    if not declared:
        raise CheckSkipped("the agent's interfaces declare no readable property")
    return f"{len(declared)} declared properties published with valid values"


def _check(
    name: str, title: str, section: str, level: Level, run: Any, timeout_s: float | None = None
) -> Check:
    return Check(f"birth.{name}", title, section, level, run, timeout_s)


R, S = Level.REQUIRED, Level.RECOMMENDED
CHECKS: list[Check] = [
    _check("order", "birth order: status seq 0, About seq 1, interface XML, properties",
           "§4.2", R, check_order),
    _check("status", "online status payload: v, bdseq, ts, keepalive_s", "§5.1", R, check_status),
    _check("keepalive", "MQTT keepalive of 10 s or less", "§1", S, check_keepalive),
    _check("retained", "status, About, XML and properties retained; signals, replies not",
           "§3", R, check_retained),
    _check("qos", "every message at QoS 1", "§1", R, check_qos),
    _check("about", "About has the required fields and a 32-hex-digit AppId", "§5.2", R,
           check_about),
    _check("interface_xml", "every interface XML loads and matches its announced SHA-256",
           "§5.2", R, check_interface_xml),
    _check("expected_interfaces", "implements the --interface XML given", "§5.2", R,
           check_expected_interfaces),
    _check("sef_agent", "implements sef.Agent (Rebirth, Ping)", "§7.1", R, check_sef_agent),
    _check("properties", "every declared property published in the birth, values typed",
           "§5.3", R, check_properties),
]  # fmt: skip

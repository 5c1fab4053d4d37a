"""The Mosquitto ACL of a deployment, generated from the CA's index (see :func:`acl_rules`).

Every identity is named explicitly (``user ID`` blocks with literal topics) rather than
with ``pattern ... %u`` rules: Mosquitto applies ``pattern`` rules to *every* user, so a
pattern granting ``agents/%u/status`` would let an operator or EMS identity announce a
fake agent of its own name.

Size: about 11 lines (0.5 KB) per agent. Mosquitto 2.0.11 parses an ``acl_file`` in time
that grows with (rules x users): measured here, 2 500 identities load in 0.4 s, 5 000 in
1.0 s, 10 000 in 4.7 s (at start and on every SIGHUP). Beyond ~10 000 identities per
broker use an authorization plugin (or a broker per partition of homes).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sef.security._authority import IssuedRecord
from sef.security._identity import Role, SecurityError
from sef.security._keys import check_identity_name

__all__ = ["acl_rules", "check_topic_root"]

log = logging.getLogger("sef.security.broker")


def check_topic_root(root: str) -> str:
    """``root`` if it can be the SEF topic root in an ACL (no wildcards, blanks or
    control characters, no leading or trailing ``/``); :class:`SecurityError` otherwise."""
    if (
        not isinstance(root, str)
        or not root
        or len(root) > 128
        or any(c in root for c in "+#")
        or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in root)
        or root.startswith("/")
        or root.endswith("/")
        or "//" in root
    ):
        raise SecurityError(
            f"invalid topic root {root!r}: use 1-128 characters without + # blanks, "
            "control characters or a leading, trailing or doubled /"
        )
    return root


def _agent_writes(root: str, agent: str) -> list[str]:
    """Topics an agent publishes under its own prefix (docs/protocol.md §2)."""
    prefix = f"{root}/agents/{agent}"
    return [
        f"{prefix}/status",
        f"{prefix}/about",
        f"{prefix}/seal",
        f"{prefix}/interfaces/#",
        f"{prefix}/props/#",
        f"{prefix}/signals/#",
    ]


def _agent_block(root: str, record: IssuedRecord) -> list[str]:
    lines = [f"topic write {topic}" for topic in _agent_writes(root, record.id)]
    lines += [
        # its interface XML once per hash (protocol version 2): it reads the retained copy
        # first and publishes only what is missing or altered (sef.agents._blobs)
        f"topic readwrite {root}/interfaces/+",
        f"topic write {root}/clients/+/reply",
        f"topic read {root}/agents/{record.id}/#",
        *(f"topic read {root}/groups/{group}/call/#" for group in record.groups),
        f"topic read {root}/hosts/+/status",
        f"topic read {root}/clients/{record.id}/reply",
    ]
    return lines


def _ems_block(root: str, record: IssuedRecord) -> list[str]:
    return [
        f"topic read {root}/#",
        f"topic write {root}/agents/+/call/#",
        f"topic write {root}/groups/+/call/#",
        f"topic write {root}/hosts/{record.id}/status",
        f"topic write {root}/clients/{record.id}/reply",
        f"topic write {root}/interfaces/+",  # puts back an overwritten interface XML
    ]


def _gateway_block(root: str, record: IssuedRecord, home_agents: list[IssuedRecord]) -> list[str]:
    """``home_agents``: the agents whose home is the gateway's (certificate) home."""
    home = record.home
    if home is None:
        return ["# no home in its certificate: no rights"]
    lines = [f"topic readwrite {root}/gateways/{home}/#"]
    groups: set[str] = set()
    for agent in home_agents:
        lines.append(f"# agent {agent.id}")
        lines += [f"topic write {topic}" for topic in _agent_writes(root, agent.id)]
        lines += [
            f"topic read {root}/agents/{agent.id}/call/#",
            f"topic read {root}/clients/{agent.id}/reply",
        ]
        groups.update(agent.groups)
    lines += [f"topic read {root}/groups/{group}/call/#" for group in sorted(groups)]
    lines += [f"topic write {root}/clients/+/reply", f"topic read {root}/hosts/+/status"]
    if home_agents:  # its agents' interface XML, once per hash
        lines.append(f"topic write {root}/interfaces/+")
    return lines


def _valid(record: IssuedRecord) -> bool:
    try:
        check_identity_name("identity", record.id)
        for group in record.groups:
            check_identity_name("group", group)
        if record.home is not None:
            check_identity_name("home", record.home)
    except SecurityError as exc:
        log.warning("CA index entry left out of the broker ACL: %s", exc)
        return False
    return True


def acl_rules(records: Iterable[IssuedRecord], root: str = "sef") -> str:
    """The Mosquitto ``acl_file`` text for the current (unrevoked) certificates.

    One ``user ID`` block per identity, literal topics only (``R`` = ``root``):

    * agent X: write ``R/agents/X/{status,about,seal}``, ``R/agents/X/{interfaces,props,
      signals}/#`` and ``R/clients/+/reply``; read and write ``R/interfaces/+`` (interface
      XML once per hash: any agent may overwrite any hash's copy, which readers verify
      against the hash, and the EMS and the agents put back); read ``R/agents/X/#``,
      ``R/groups/G/call/#`` for each of its groups, ``R/hosts/+/status`` and
      ``R/clients/X/reply``. No ``call`` topic is writable.
    * ems E: read ``R/#``; write ``R/agents/+/call/#``, ``R/groups/+/call/#``,
      ``R/hosts/E/status``, ``R/clients/E/reply`` and ``R/interfaces/+``.
    * gateway of home H: readwrite ``R/gateways/H/#``; for each agent A whose home is H
      what A itself may write, and read ``R/agents/A/call/#`` and ``R/clients/A/reply``;
      read the call topics of those agents' groups and ``R/hosts/+/status``; write
      ``R/clients/+/reply`` and (if it has agents) ``R/interfaces/+``. A gateway
      certificate without a home gets nothing.
    * operator: read ``R/#``. broker: nothing.

    Revoked certificates must not be in ``records`` (pass ``ca.current().values()``);
    an identity absent from the file has no rights at all.
    """
    check_topic_root(root)
    current = sorted((r for r in records if not r.revoked and _valid(r)), key=lambda r: r.id)
    by_home: dict[str, list[IssuedRecord]] = {}
    for r in current:
        if r.role is Role.AGENT and r.home is not None:
            by_home.setdefault(r.home, []).append(r)
    out = [
        "# Mosquitto ACL generated by `sef pki` from the CA's index; do not edit: every",
        "# issue, approve and revoke regenerates it. Username = certificate common name.",
        f"# topic root: {root}",
    ]
    for record in current:
        out.append("")
        out.append(f"# {record.role.value} {record.id}")
        out.append(f"user {record.id}")
        if record.role is Role.AGENT:
            out += _agent_block(root, record)
        elif record.role is Role.EMS:
            out += _ems_block(root, record)
        elif record.role is Role.GATEWAY:
            out += _gateway_block(root, record, by_home.get(record.home or "", []))
        elif record.role is Role.OPERATOR:
            out.append(f"topic read {root}/#")
        else:
            out.append("# no rights")
    return "\n".join(out) + "\n"

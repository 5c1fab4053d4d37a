"""Who a certificate says its holder is: identity, role, groups and home.

The certificate profile (see ``docs/security.md``): the subject common name is the
identity (an agent, EMS, gateway, operator or broker id, the same string as on the bus);
subject-alternative-name URIs carry the rest::

    urn:sef:role:agent          one of ems, agent, gateway, operator, broker
    urn:sef:group:heaters       one per group the agent belongs to (agents only)
    urn:sef:home:home-7         the home an agent sits in, or a gateway serves

A broker certificate also carries DNS names and IP addresses for TLS host name checks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

__all__ = ["Identity", "Role", "SecurityError", "identity_of", "profile_uris"]

URN_PREFIX = "urn:sef:"


class SecurityError(Exception):
    """A certificate, key, token or signed message is not acceptable; the message says why."""


class Role(StrEnum):
    """What an identity may do (enforced by the broker's ACL and the envelope checks)."""

    EMS = "ems"
    AGENT = "agent"
    GATEWAY = "gateway"
    OPERATOR = "operator"
    BROKER = "broker"


@dataclass(frozen=True, slots=True)
class Identity:
    """The verified contents of a certificate.

    Attributes:
        id: the identity (subject common name), as used on the bus.
        role: what it may do.
        groups: the groups an agent belongs to (empty for other roles).
        home: the home an agent sits in or a gateway serves, or ``None``.
        serial: the certificate's serial number.
        fingerprint: SHA-256 of the certificate's DER encoding, hex.
        not_before: start of validity, UTC.
        not_after: end of validity, UTC.
    """

    id: str
    role: Role
    groups: tuple[str, ...]
    home: str | None
    serial: int
    fingerprint: str
    not_before: datetime
    not_after: datetime


def profile_uris(role: Role, groups: tuple[str, ...] = (), home: str | None = None) -> list[str]:
    """The SAN URIs that encode ``role``, ``groups`` and ``home`` in a certificate."""
    uris = [f"{URN_PREFIX}role:{role.value}"]
    uris += [f"{URN_PREFIX}group:{group}" for group in groups]
    if home is not None:
        uris.append(f"{URN_PREFIX}home:{home}")
    return uris


def identity_of(cert: x509.Certificate) -> Identity:
    """Read the SEF profile out of ``cert`` (no trust check: see :class:`TrustStore`).

    Raises:
        SecurityError: no common name, no or several roles, an unknown role.
    """
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str) or not names[0].value:
        raise SecurityError("certificate has no single subject common name (the identity)")
    identity = names[0].value
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    roles: list[str] = []
    groups: list[str] = []
    homes: list[str] = []
    for uri in uris:
        if not uri.startswith(URN_PREFIX):
            continue
        kind, _, value = uri[len(URN_PREFIX) :].partition(":")
        if kind == "role":
            roles.append(value)
        elif kind == "group":
            groups.append(value)
        elif kind == "home":
            homes.append(value)
    if len(roles) != 1:
        raise SecurityError(f"certificate of {identity!r} carries {len(roles)} SEF roles, not 1")
    try:
        role = Role(roles[0])
    except ValueError:
        raise SecurityError(f"certificate of {identity!r} has unknown role {roles[0]!r}") from None
    if len(homes) > 1:
        raise SecurityError(f"certificate of {identity!r} names {len(homes)} homes")
    der = cert.public_bytes(Encoding.DER)
    return Identity(
        id=identity,
        role=role,
        groups=tuple(groups),
        home=homes[0] if homes else None,
        serial=cert.serial_number,
        fingerprint=hashlib.sha256(der).hexdigest(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )

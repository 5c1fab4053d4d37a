"""What the enrollment endpoints do with the CA directory (no HTTP here).

Every method returns ``(status, body)`` for the endpoint to send, or raises
:class:`Refused` with the HTTP status and a message for the client.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, cast

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from sef.security import (
    CertificateAuthority,
    Identity,
    Role,
    SecurityError,
    TrustStore,
    check_identity_name,
    identity_of,
    load_certificate,
    load_csr,
)
from sef.security._authority import CRL_DAYS
from sef.security._keys import csr_identity

__all__ = ["EnrollmentService", "Refused", "key_fingerprint"]

log = logging.getLogger("sef.enrollment")

BAD_INPUT = (SecurityError, ValueError, TypeError, UnsupportedAlgorithm)
"""What parsing a client's CSR or certificate may raise (all answered 4xx)."""


class Refused(Exception):
    """A request is refused: ``status`` (4xx or 503) and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def key_fingerprint(key: Any) -> str:
    """SHA-256 of a public key's DER SubjectPublicKeyInfo, hex (as ``sef pki pending``)."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def _issued_body(cert: x509.Certificate, identity: Identity) -> dict[str, Any]:
    return {
        "status": "issued",
        "id": identity.id,
        "role": identity.role.value,
        "groups": list(identity.groups),
        "home": identity.home,
        "serial": str(identity.serial),
        "not_after": identity.not_after.isoformat(),
        "certificate": cert.public_bytes(serialization.Encoding.PEM).decode(),
    }


class EnrollmentService:
    """Enrollment, polling, renewal and the CRL over the CA directory ``root``.

    With ``root/ca.key`` present the service is an *online CA*: claim tokens are redeemed
    and renewals signed here. Without it the service only queues requests (an operator
    approves them on the offline CA host and copies ``issued/{id}.crt`` back).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.online = (root / "ca.key").is_file()
        if self.online:
            self.ca = CertificateAuthority.open(root)
        else:
            if not (root / "ca.crt").is_file():
                raise SecurityError(f"no CA certificate in {root} (ca.crt)")
            # queue-only: the CA object is used for its files (submit, pending, issued/);
            # every method that signs is guarded by self.online
            cert = load_certificate((root / "ca.crt").read_bytes())
            self.ca = CertificateAuthority(root, cert, cast(Any, None))

    def trust(self) -> TrustStore:
        """The CA with the CRL as it is on disk now (revocations take effect at once)."""
        return self.ca.trust_store()

    def _need_online(self, what: str) -> None:
        if not self.online:
            raise Refused(
                503,
                f"{what} needs the CA key, and this enrollment server runs without it "
                "(offline CA): ask the operator",
            )

    # -- parsing --------------------------------------------------------------------------

    @staticmethod
    def parse_enroll(body: bytes) -> tuple[bytes, str | None, tuple[str, ...], str | None]:
        """``{"csr": PEM, "token"?: str, "groups"?: [str], "home"?: str}`` → its fields."""
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError):
            raise Refused(400, "body is not JSON") from None
        if not isinstance(obj, dict):
            raise Refused(400, "body must be a JSON object")
        unknown = set(obj) - {"csr", "token", "groups", "home"}
        if unknown:
            raise Refused(400, f"unknown fields: {', '.join(sorted(map(str, unknown))[:5])}")
        csr = obj.get("csr")
        if not isinstance(csr, str) or not csr:
            raise Refused(400, "field 'csr' (a PEM certificate signing request) is required")
        token = obj.get("token")
        if token is not None and (not isinstance(token, str) or not 1 <= len(token) <= 256):
            raise Refused(400, "field 'token' must be a string of 1-256 characters")
        groups = obj.get("groups", [])
        if not isinstance(groups, list) or len(groups) > 64:
            raise Refused(400, "field 'groups' must be a list of at most 64 group names")
        home = obj.get("home")
        try:
            for group in groups:
                check_identity_name("group", group)
            if home is not None:
                check_identity_name("home", home)
        except SecurityError as exc:
            raise Refused(400, str(exc)) from None
        try:
            csr_bytes = csr.encode("ascii")
        except UnicodeEncodeError:
            raise Refused(400, "field 'csr' is not PEM (non-ASCII characters)") from None
        return csr_bytes, token, tuple(groups), home

    @staticmethod
    def load_csr(csr_pem: bytes) -> tuple[x509.CertificateSigningRequest, str]:
        """The CSR (signature verified) and its identity; 400 otherwise."""
        try:
            csr = load_csr(csr_pem)
            return csr, csr_identity(csr)
        except BAD_INPUT as exc:
            raise Refused(400, str(exc) or type(exc).__name__) from None

    # -- enrollment -----------------------------------------------------------------------

    def _issued_for_key(self, identity: str, fingerprint: str) -> x509.Certificate | None:
        """The newest certificate of ``identity`` if it certifies the key ``fingerprint``."""
        path = self.ca.cert_path(identity)
        if not path.is_file():
            return None
        cert = load_certificate(path.read_bytes())
        return cert if key_fingerprint(cert.public_key()) == fingerprint else None

    def _pending_fingerprint(self, identity: str) -> str | None:
        path = self.root / "pending" / f"{identity}.json"
        if not path.is_file():
            return None
        return str(json.loads(path.read_text())["key_fingerprint"])

    def enroll(self, body: bytes, client: str) -> tuple[int, dict[str, Any]]:
        """``POST /enroll``: redeem a claim token (200 + certificate) or queue (202)."""
        csr_pem, token, groups, home = self.parse_enroll(body)
        csr, identity = self.load_csr(csr_pem)
        fingerprint = key_fingerprint(csr.public_key())
        if token is not None:
            self._need_online("a claim token")
            try:
                cert = self.ca.redeem(csr_pem, token)
            except SecurityError as exc:
                log.warning("claim token refused for %r from %s: %s", identity, client, exc)
                raise Refused(403, f"claim token refused: {exc}") from None
            log.info("enrolled %r from %s with a claim token", identity, client)
            return 200, _issued_body(cert, identity_of(cert))
        issued = self._issued_for_key(identity, fingerprint)
        if issued is not None:
            return self._issued_or_refused(issued)
        holder = self.ca.current().get(identity)
        if holder is not None and holder.role is not Role.AGENT:
            raise Refused(
                409,
                f"{identity!r} is the identity of a {holder.role.value}; enrollment is for "
                "agents (choose another id)",
            )
        pending = self._pending_fingerprint(identity)
        if pending is not None and pending != fingerprint:
            raise Refused(
                409,
                f"a request for {identity!r} with another key is pending; the operator must "
                "reject it first (`sef pki reject`)",
            )
        try:
            self.ca.submit(csr_pem, groups=groups, home=home)
        except SecurityError as exc:
            raise Refused(503 if "too many" in str(exc) else 400, str(exc)) from None
        log.info("enrollment request for %r from %s (key %s)", identity, client, fingerprint)
        if holder is not None:
            log.warning(
                "enrollment request for %r, which already has a valid certificate (another "
                "key): approving it gives the identity a second key",
                identity,
            )
        return 202, {
            "status": "pending",
            "id": identity,
            "key_fingerprint": fingerprint,
            "poll": f"/enroll/{identity}?key={fingerprint}",
        }

    def _issued_or_refused(self, cert: x509.Certificate) -> tuple[int, dict[str, Any]]:
        try:
            identity = self.trust().verify(cert)
        except SecurityError as exc:
            raise Refused(410, f"the certificate issued for this key is unusable: {exc}") from None
        return 200, _issued_body(cert, identity)

    def poll(self, identity: str, fingerprint: str) -> tuple[int, dict[str, Any]]:
        """``GET /enroll/{id}?key=FP``: the certificate once approved (200), 202 while
        pending, 404 when no request of this id has this key (rejected, replaced, never
        made: the answer does not tell which, so nobody learns who enrolled)."""
        try:
            check_identity_name("identity", identity)
        except SecurityError as exc:
            raise Refused(400, str(exc)) from None
        if len(fingerprint) != 64 or not set(fingerprint) <= set("0123456789abcdef"):
            raise Refused(400, "query 'key' must be the key's SHA-256 fingerprint (64 hex)")
        issued = self._issued_for_key(identity, fingerprint)
        if issued is not None:
            return self._issued_or_refused(issued)
        if self._pending_fingerprint(identity) == fingerprint:
            return 202, {"status": "pending", "id": identity, "key_fingerprint": fingerprint}
        raise Refused(
            404, f"no enrollment request for {identity!r} with this key (rejected or replaced?)"
        )

    # -- renewal --------------------------------------------------------------------------

    def renew(self, body: bytes, peer_pem: str | None, client: str) -> tuple[int, dict[str, Any]]:
        """``POST /renew`` (body as ``/enroll``, without token, groups or home): a new
        certificate for the CSR's key, with the client certificate's identity, role,
        groups, home and lifetime."""
        if peer_pem is None:
            raise Refused(
                401, "renewal needs mutual TLS: connect with your current certificate and key"
            )
        csr_pem, token, groups, home = self.parse_enroll(body)
        if token is not None or groups or home is not None:
            raise Refused(400, "a renewal keeps the certificate's groups and home: send only 'csr'")
        try:
            current = load_certificate(peer_pem.encode())
            identity = self.trust().verify(current)
        except BAD_INPUT as exc:
            log.warning("renewal refused for %s: %s", client, exc)
            raise Refused(403, f"client certificate refused: {exc}") from None
        csr, csr_id = self.load_csr(csr_pem)
        if csr_id != identity.id:
            raise Refused(403, f"CSR is for {csr_id!r}, but you are {identity.id!r}")
        fingerprint = key_fingerprint(csr.public_key())
        newest = self.ca.current().get(identity.id)
        if newest is not None and newest.serial != identity.serial:
            # a retry whose answer was lost gets the certificate it was issued; an older
            # certificate (perhaps a stolen key) cannot renew any more
            issued = self._issued_for_key(identity.id, fingerprint)
            if issued is not None and issued.serial_number == newest.serial:
                return self._issued_or_refused(issued)
            raise Refused(
                403,
                f"certificate serial {identity.serial} of {identity.id!r} was superseded by "
                f"serial {newest.serial}: renew with the newest certificate or re-enroll",
            )
        if _has_host_names(current):
            raise Refused(
                403,
                "certificates with host names (servers) are renewed with `sef pki issue`",
            )
        self._need_online("renewal")
        lifetime = identity.not_after - identity.not_before - dt.timedelta(minutes=5)
        days = max(1, round(lifetime / dt.timedelta(days=1)))
        try:
            cert = self.ca.sign_csr(
                csr_pem,
                identity.role,
                groups=identity.groups,
                home=identity.home,
                days=days,
                expected_id=identity.id,
            )
        except SecurityError as exc:
            raise Refused(400, str(exc)) from None
        log.info(
            "renewed %r (%s) for %s: serial %s -> %s",
            identity.id,
            identity.role.value,
            client,
            identity.serial,
            cert.serial_number,
        )
        return 200, _issued_body(cert, identity_of(cert))

    # -- revocation list ------------------------------------------------------------------

    def crl_pem(self) -> bytes:
        """The current CRL; an online CA re-signs it when half its validity is gone."""
        if self.online:
            crl = x509.load_pem_x509_crl(self.ca.crl_path.read_bytes())
            next_update = crl.next_update_utc
            if next_update is None or next_update - dt.datetime.now(dt.UTC) < dt.timedelta(
                days=CRL_DAYS / 2
            ):
                self.ca.refresh_crl()
                log.info("re-signed the CRL (it was half-way to its next update)")
        return self.ca.crl_path.read_bytes()


def _has_host_names(cert: x509.Certificate) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return bool(san.get_values_for_type(x509.DNSName) or san.get_values_for_type(x509.IPAddress))

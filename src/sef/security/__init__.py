"""SEF security: the deployment PKI, trust decisions and a component's credentials.

Public names:

* :class:`CertificateAuthority`: the operator's CA directory (issue, revoke, CRL,
  enrollment requests and claim tokens).
* :class:`Identity`, :class:`Role`, :func:`identity_of`: what a certificate says.
* :class:`TrustStore`: verifies peers' certificates against the CA and its CRL.
* :class:`Security`: a component's own certificate, key and trust store; builds TLS
  contexts.
* :class:`SecurityError`: anything refused, with the reason.
* :class:`TelemetrySealer`, :class:`SealVerifier`, :func:`sign_seal`: signed telemetry
  windows (seals), for deployments that do not trust their broker.
* :func:`sign_call`, :func:`verify_call`, :func:`sign_reply`, :func:`verify_reply`,
  :class:`VerifiedEnvelope`, :class:`EnvelopeRefused`, :class:`ReplayCache`: signed
  command envelopes (JWS, protocol version 2; ``docs/protocol.md``).
* :func:`write_broker_config`, :func:`write_broker_acl`, :func:`acl_rules`,
  :func:`reload_broker`: Mosquitto in mutual-TLS mode with per-identity ACLs.

``docs/security.md`` has the certificate profile and the threat model.
"""

from sef.security._authority import CertificateAuthority, IssuedRecord
from sef.security._broker_config import (
    BrokerFiles,
    acl_rules,
    broker_pid,
    default_broker_hosts,
    reload_broker,
    write_broker_acl,
    write_broker_config,
)
from sef.security._enroll_client import (
    EnrolledFiles,
    EnrollmentError,
    EnrollmentPending,
    enroll,
    fetch_crl,
)
from sef.security._enrollment import LEAF_DAYS, PendingRequest
from sef.security._envelope import (
    CLOCK_SKEW_S,
    MAX_LIFETIME_S,
    EnvelopeKind,
    EnvelopeRefused,
    VerifiedEnvelope,
    call_audience,
    sign_call,
    sign_reply,
    verify_call,
    verify_reply,
)
from sef.security._identity import Identity, Role, SecurityError, identity_of, profile_uris
from sef.security._keys import (
    check_identity_name,
    load_csr,
    make_csr,
    new_private_key,
    write_private,
)
from sef.security._renew import CertificateRenewer, start_renewal
from sef.security._replay import ReplayCache, ReplayError
from sef.security._telemetry_seal import (
    WINDOW_MESSAGES,
    WINDOW_S,
    SealClaims,
    SealVerifier,
    TelemetrySealer,
    message_hash,
    sign_seal,
    topic_prefix,
    window_digest,
)
from sef.security._trust import Security, TrustStore, load_certificate, load_private_key

__all__ = [
    "CLOCK_SKEW_S",
    "LEAF_DAYS",
    "MAX_LIFETIME_S",
    "WINDOW_MESSAGES",
    "WINDOW_S",
    "BrokerFiles",
    "CertificateAuthority",
    "CertificateRenewer",
    "EnrolledFiles",
    "EnrollmentError",
    "EnrollmentPending",
    "EnvelopeKind",
    "EnvelopeRefused",
    "Identity",
    "IssuedRecord",
    "PendingRequest",
    "ReplayCache",
    "ReplayError",
    "Role",
    "SealClaims",
    "SealVerifier",
    "Security",
    "SecurityError",
    "TelemetrySealer",
    "TrustStore",
    "VerifiedEnvelope",
    "acl_rules",
    "broker_pid",
    "call_audience",
    "check_identity_name",
    "default_broker_hosts",
    "enroll",
    "fetch_crl",
    "identity_of",
    "load_certificate",
    "load_csr",
    "load_private_key",
    "make_csr",
    "message_hash",
    "new_private_key",
    "profile_uris",
    "reload_broker",
    "sign_call",
    "sign_reply",
    "sign_seal",
    "start_renewal",
    "topic_prefix",
    "verify_call",
    "verify_reply",
    "window_digest",
    "write_broker_acl",
    "write_broker_config",
    "write_private",
]

"""SEF security: the deployment PKI, trust decisions and a component's credentials.

Public names:

* :class:`CertificateAuthority`: the operator's CA directory (issue, revoke, CRL,
  enrollment requests and claim tokens).
* :class:`Identity`, :class:`Role`, :func:`identity_of`: what a certificate says.
* :class:`TrustStore`: verifies peers' certificates against the CA and its CRL.
* :class:`Security`: a component's own certificate, key and trust store; builds TLS
  contexts.
* :class:`SecurityError`: anything refused, with the reason.

``docs/security.md`` has the certificate profile and the threat model.
"""

from sef.security._authority import (
    LEAF_DAYS,
    CertificateAuthority,
    IssuedRecord,
    PendingRequest,
    check_identity_name,
    load_csr,
    make_csr,
    new_private_key,
    write_private,
)
from sef.security._identity import Identity, Role, SecurityError, identity_of, profile_uris
from sef.security._trust import Security, TrustStore, load_certificate, load_private_key

__all__ = [
    "LEAF_DAYS",
    "CertificateAuthority",
    "Identity",
    "IssuedRecord",
    "PendingRequest",
    "Role",
    "Security",
    "SecurityError",
    "TrustStore",
    "check_identity_name",
    "identity_of",
    "load_certificate",
    "load_csr",
    "load_private_key",
    "make_csr",
    "new_private_key",
    "profile_uris",
    "write_private",
]

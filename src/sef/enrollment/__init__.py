"""The enrollment server: agents get certificates for keys they keep, and renew them.

``sef enroll-server --pki DIR`` serves, over HTTPS (client certificates optional):

* ``POST /enroll``: a CSR, approved at once with a one-time claim token, else queued for
  the operator (``sef pki pending`` / ``sef pki approve ID``);
* ``GET /enroll/{id}?key=FP``: the certificate once approved;
* ``POST /renew``: a new certificate for a new key, over mutual TLS with the current one;
* ``GET /crl``: the current revocation list.

The client side (standard library only) is :mod:`sef.security` (``enroll``,
``CertificateRenewer``). ``docs/enrollment.md`` has the protocol and the operator's choices
(online or offline CA).
"""

from sef.enrollment._app import create_app
from sef.enrollment._limits import EnrollLimits, RateLimiter
from sef.enrollment._server import (
    DEFAULT_SERVER_ID,
    EnrollmentServer,
    ensure_server_certificate,
    serve_enrollment,
)
from sef.enrollment._service import EnrollmentService, Refused, key_fingerprint

__all__ = [
    "DEFAULT_SERVER_ID",
    "EnrollLimits",
    "EnrollmentServer",
    "EnrollmentService",
    "RateLimiter",
    "Refused",
    "create_app",
    "ensure_server_certificate",
    "key_fingerprint",
    "serve_enrollment",
]

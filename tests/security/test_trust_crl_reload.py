"""A trust store made from files honours a revocation written to its CRL file later,
without a restart, and keeps its CRL when the file is replaced by garbage or by a CRL of
another CA."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

import sef.security._trust as trust_module
from sef.security import CertificateAuthority, Role, SecurityError, TrustStore


def test_a_revocation_on_disk_is_honoured_without_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = CertificateAuthority.init(tmp_path / "pki")
    cert, _ = ca.issue("bat-1", Role.AGENT)
    store = TrustStore.from_files(ca.ca_path, ca.crl_path)
    assert store.verify(cert).id == "bat-1"
    ca.revoke("bat-1")
    # within the check interval the store does not look at the file again
    assert store.verify(cert).id == "bat-1"
    monkeypatch.setattr(trust_module, "CRL_CHECK_S", 0.0)
    with pytest.raises(SecurityError, match="revoked"):
        store.verify(cert)


def test_a_bad_crl_file_keeps_the_current_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ca = CertificateAuthority.init(tmp_path / "pki")
    cert, _ = ca.issue("bat-1", Role.AGENT)
    ca.revoke("bat-1")
    store = TrustStore.from_files(ca.ca_path, ca.crl_path)
    monkeypatch.setattr(trust_module, "CRL_CHECK_S", 0.0)
    other = CertificateAuthority.init(tmp_path / "other")
    for content in (b"garbage", other.crl_path.read_bytes()):
        ca.crl_path.write_bytes(content)
        os.utime(ca.crl_path, ns=(1, len(content) * 1_000_000_000))
        with (
            caplog.at_level(logging.ERROR, logger="sef.security"),
            pytest.raises(SecurityError, match="revoked"),
        ):
            store.verify(cert)
        assert "not taken, keeping the current one" in caplog.text
        caplog.clear()


def test_an_invalid_crl_at_start_is_an_error(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "pki")
    other = CertificateAuthority.init(tmp_path / "other")
    with pytest.raises(SecurityError, match="not signed by the deployment CA"):
        TrustStore.from_files(ca.ca_path, other.crl_path)


def test_a_certificate_or_csr_with_an_invalid_version_is_a_security_error(
    tmp_path: Path,
) -> None:
    """Cryptography raises ``InvalidVersion`` (not a ``ValueError``) for these: found by
    the enrollment fuzzing as a 500."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from sef.security import load_certificate, load_csr

    # the CSR hypothesis found (its version INTEGER is 1; only 0 is valid)
    csr = (
        "-----BEGIN CERTIFICATE REQUEST-----MIHLMHMCAQEwETEPMA0GA0AEUw0G60E000w0MFkwEwYH0ACIKQ"
        "Y0E0AIDIKQE000o0oDQgA000000005000BBBCDDEEFGHHIILNNPRRRRSTTTUUUU00000YYE000000000000"
        "0000k00000oo00000w000000KAAMAoGCC00ABCGMSM0A0gA0000000000AAAAAABCCDDEEEFFHIII00KKMM"
        "0000PPQQQTTUU0000YYE+00000000000ggh00000k00o0000000000w0000=-----END CERTIFICATE "
        "REQUEST-----"
    )
    with pytest.raises(SecurityError, match="not a PEM certificate signing request"):
        load_csr(csr.encode())
    # a real certificate with its version field (v3 = 2) changed to 5
    ca = CertificateAuthority.init(tmp_path / "pki")
    cert, _ = ca.issue("bat-1", Role.AGENT)
    der = cert.public_bytes(Encoding.DER)
    assert der.count(bytes.fromhex("a003020102")) == 1
    bad = der.replace(bytes.fromhex("a003020102"), bytes.fromhex("a003020105"))
    with pytest.raises(SecurityError, match="not a certificate"):
        load_certificate(bad)

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

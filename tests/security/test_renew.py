"""Certificate renewal over mutual TLS against a real enrollment server and CA: a new
certificate with the same identity, role, groups and home, taken by ``Security.replace``
and written over the agent's files; refused for a revoked, superseded or absent client
certificate; an expired one is logged as needing re-enrollment; CRLs are refreshed."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import shutil
from pathlib import Path

import pytest

from enroll_stack import GENEROUS, csr_for, enrollment_server, request
from sef.enrollment import key_fingerprint
from sef.security import (
    CertificateAuthority,
    CertificateRenewer,
    EnrollmentError,
    Role,
    Security,
    load_certificate,
    make_csr,
    start_renewal,
)
from support import wait_for


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path / "pki", "SEF test CA")


def agent_credentials(
    ca: CertificateAuthority, directory: Path, identity: str = "bat-1", days: int = 90
) -> Security:
    """Credentials of an agent issued by ``ca``, in ``directory`` as an agent keeps them."""
    ca.issue(identity, Role.AGENT, groups=("heaters", "west"), home="home-7", days=days)
    directory.mkdir()
    shutil.copy(ca.cert_path(identity), directory / "cert.pem")
    shutil.copy(ca.key_path(identity), directory / "key.pem")
    shutil.copy(ca.ca_path, directory / "ca.crt")
    shutil.copy(ca.crl_path, directory / "crl.pem")
    return Security.load(
        directory / "cert.pem", directory / "key.pem", directory / "ca.crt", directory / "crl.pem"
    )


async def test_renewal_keeps_identity_groups_and_home_and_replaces_the_credentials(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    security = agent_credentials(ca, tmp_path / "agent")
    old = security.identity
    old_key = (tmp_path / "agent" / "key.pem").read_bytes()
    renewed: list[Security] = []
    with enrollment_server(ca.root, GENEROUS) as server:
        renewer = CertificateRenewer(security, server.url, on_renewed=renewed.append)
        cert = await renewer.renew_once()
    new = security.identity
    assert security.cert is cert and renewed == [security]
    assert new.serial != old.serial
    assert (new.id, new.role, new.groups, new.home) == (old.id, old.role, old.groups, old.home)
    assert new.not_after >= old.not_after
    assert abs((new.not_after - new.not_before) - (old.not_after - old.not_before)) < dt.timedelta(
        minutes=1
    )
    # the files the agent was started with now hold the new pair (key 0600), no leftovers
    assert load_certificate((tmp_path / "agent" / "cert.pem").read_bytes()) == cert
    key_file = tmp_path / "agent" / "key.pem"
    assert key_file.read_bytes() != old_key and (key_file.stat().st_mode & 0o777) == 0o600
    assert sorted(p.name for p in (tmp_path / "agent").iterdir()) == [
        "ca.crt",
        "cert.pem",
        "crl.pem",
        "key.pem",
    ]
    reloaded = Security.load(key_file.with_name("cert.pem"), key_file, tmp_path / "agent/ca.crt")
    assert reloaded.identity.serial == new.serial
    assert ca.current()["bat-1"].serial == new.serial


async def test_run_renews_at_its_time_then_sleeps(ca: CertificateAuthority, tmp_path: Path) -> None:
    security = agent_credentials(ca, tmp_path / "agent")
    first = security.identity
    # a clock 61 of 90 days on: past two thirds of the first certificate's lifetime; once
    # renewed, the clock is real again and the new certificate is due in 60 days
    shift = [dt.timedelta(days=61)]
    with enrollment_server(ca.root, GENEROUS) as server:
        renewer = CertificateRenewer(
            security,
            server.url,
            clock=lambda: dt.datetime.now(dt.UTC) + shift[0],
            on_renewed=lambda _: shift.__setitem__(0, dt.timedelta(0)),
        )
        assert renewer.renew_at() == first.not_before + (first.not_after - first.not_before) * 2 / 3
        task = asyncio.create_task(renewer.run())
        try:
            await wait_for(lambda: renewer.renewals == 1, 20.0)
            await asyncio.sleep(0.5)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert renewer.renewals == 1 and renewer.crl_fetches == 1
    assert security.identity.serial != first.serial
    assert renewer.renew_at() - dt.datetime.now(dt.UTC) > dt.timedelta(days=59)
    assert ca.current()["bat-1"].serial == security.identity.serial


async def test_start_renewal_runs_it_as_a_task(ca: CertificateAuthority, tmp_path: Path) -> None:
    security = agent_credentials(ca, tmp_path / "agent", days=1)
    first = security.identity.serial
    with enrollment_server(ca.root, GENEROUS) as server:
        # a certificate of a day at a fraction of a thousandth: due 86 s after its start,
        # which is 5 minutes before it was issued; renewed once, then not for a minute
        task = start_renewal(security, server.url, renew_at_fraction=0.001)
        try:
            await wait_for(lambda: security.identity.serial != first, 20.0)
            second = security.identity.serial
            await asyncio.sleep(1.0)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert security.identity.serial == second


async def test_old_certificate_cannot_renew_again_but_a_retry_gets_its_answer(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    security = agent_credentials(ca, tmp_path / "agent")
    old_context = security.client_tls()
    with enrollment_server(ca.root, GENEROUS) as server:
        renewer = CertificateRenewer(security, server.url)
        cert = await renewer.renew_once()
        # an answer lost on the way: the same new key, asked again with the old cert
        _, csr = csr_for("bat-1")
        status, body, _ = request(server, "POST", "/renew", {"csr": csr}, context=old_context)
        assert status == 403 and "superseded" in body["error"]
        fingerprint = key_fingerprint(security.key.public_key())
        assert fingerprint == key_fingerprint(cert.public_key())
        same = make_csr("bat-1", security.key).decode()
        status, body, _ = request(server, "POST", "/renew", {"csr": same}, context=old_context)
        assert status == 200 and load_certificate(body["certificate"].encode()) == cert


async def test_revoked_certificate_is_refused(ca: CertificateAuthority, tmp_path: Path) -> None:
    security = agent_credentials(ca, tmp_path / "agent")
    serial = security.identity.serial
    with enrollment_server(ca.root, GENEROUS) as server:
        ca.revoke("bat-1")
        renewer = CertificateRenewer(security, server.url)
        with pytest.raises(EnrollmentError, match="revoked"):
            await renewer.renew_once()
        await asyncio.sleep(1.5)  # the TLS layer has loaded the new CRL: refused there too
        # the handshake is refused: with an alert naming it (the message says revoked) or
        # by a closed connection (older uvicorn), which the client reports as a refusal
        with pytest.raises(EnrollmentError, match=r"(?i)revoked"):
            await renewer.renew_once()
    assert security.identity.serial == serial
    assert "bat-1" not in ca.current()


async def test_renewal_needs_a_client_certificate_and_its_own_identity(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    security = agent_credentials(ca, tmp_path / "agent")
    with enrollment_server(ca.root, GENEROUS) as server:
        _, csr = csr_for("bat-1")
        status, body, _ = request(server, "POST", "/renew", {"csr": csr})
        assert status == 401 and "mutual TLS" in body["error"]
        _, csr = csr_for("bat-2")
        status, body, _ = request(
            server, "POST", "/renew", {"csr": csr}, context=security.client_tls()
        )
        assert status == 403 and "you are 'bat-1'" in body["error"]
        _, csr = csr_for("bat-1")
        status, body, _ = request(
            server,
            "POST",
            "/renew",
            {"csr": csr, "groups": ["admins"]},
            context=security.client_tls(),
        )
        assert status == 400 and "keeps the certificate's groups" in body["error"]
        status, body, _ = request(
            server, "POST", "/renew", {"csr": "junk"}, context=security.client_tls()
        )
        assert status == 400 and body["error"]
    assert ca.current()["bat-1"].serial == security.identity.serial


async def test_expired_certificate_logs_that_re_enrollment_is_needed(
    ca: CertificateAuthority, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    security = agent_credentials(ca, tmp_path / "agent")
    later = security.identity.not_after + dt.timedelta(days=1)
    with enrollment_server(ca.root, GENEROUS) as server:
        renewer = CertificateRenewer(security, server.url, clock=lambda: later, crl_every_s=0)
        with caplog.at_level(logging.ERROR, logger="sef.security.renew"):
            task = asyncio.create_task(renewer.run())
            await wait_for(lambda: any("re-enroll" in r.message for r in caplog.records), 5.0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert renewer.renewals == 0
    (line,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "expired" in line.message and "bat-1" in line.message


async def test_failed_renewal_is_retried_with_backoff(
    ca: CertificateAuthority, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    security = agent_credentials(ca, tmp_path / "agent")
    with enrollment_server(ca.root, GENEROUS) as server:
        url = server.url
    # the server is gone: every attempt fails, is logged, and is retried
    due = security.identity.not_after - dt.timedelta(days=1)
    renewer = CertificateRenewer(
        security, url, clock=lambda: due, crl_every_s=0, retry_min_s=0.05, retry_max_s=0.2
    )
    with caplog.at_level(logging.WARNING, logger="sef.security.renew"):
        task = asyncio.create_task(renewer.run())
        await wait_for(lambda: sum("renewal" in r.message for r in caplog.records) >= 3, 10.0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert "cannot reach the server" in caplog.records[0].message
    # the next key waits in key.pem.next, so a later retry asks for the same key
    assert (tmp_path / "agent" / "key.pem.next").exists()


async def test_crl_refresh_brings_revocations_to_the_agent(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    security = agent_credentials(ca, tmp_path / "agent")
    other, _ = ca.issue("bat-2", Role.AGENT)
    assert not security.trust.is_revoked(other.serial_number)
    with enrollment_server(ca.root, GENEROUS) as server:
        await asyncio.sleep(1.1)  # CRL times have one-second resolution
        ca.revoke("bat-2")
        renewer = CertificateRenewer(security, server.url)
        assert await renewer.refresh_crl()
        assert security.trust.is_revoked(other.serial_number)
        # a revoked agent still learns of it: the CRL is fetched without a client certificate
        await asyncio.sleep(1.1)
        ca.revoke("bat-1")
        assert await renewer.refresh_crl()
    assert security.trust.is_revoked(security.identity.serial)
    assert (tmp_path / "agent" / "crl.pem").read_bytes() == ca.crl_path.read_bytes()

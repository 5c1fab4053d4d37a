"""Signed updates end to end: a real TUF repository served over real HTTP, a real agent
state directory. A good update installs; tampered targets, metadata rollback, expired
metadata, wrong keys and software downgrades are refused and the running version kept."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]
from tuf.api.metadata import (  # type: ignore[attr-defined]
    Metadata,
    MetaFile,
    Root,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from sef.update import (
    Refusal,
    RepositoryServer,
    UpdateClient,
    UpdateRefused,
    UpdateRepository,
)

FILE = "sef-agent.tar.gz"


def _content(version: str) -> bytes:
    """A release file whose bytes name its version (4 KiB)."""
    return (f"sef agent {version}\n".encode() * 300)[:4096]


def _publish(repo: UpdateRepository, version: str) -> None:
    source = repo.directory.parent / "build" / FILE
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(_content(version))
    repo.publish(source, version)


def _served_file(repo: UpdateRepository, version: str) -> Path:
    """The hash-prefixed target file of ``version`` on the server."""
    (found,) = (repo.directory / "targets" / "sef" / version).glob(f"*.{FILE}")
    return found


def _assert_running(client: UpdateClient, version: str) -> None:
    """``current`` still points at ``version`` and its file holds that version's bytes."""
    assert client.current_version == version
    assert os.readlink(client.state_dir / "current") == f"releases/{version}"
    assert (client.state_dir / "current" / FILE).read_bytes() == _content(version)


def _refusal(client: UpdateClient) -> UpdateRefused:
    with pytest.raises(UpdateRefused) as caught:
        client.update()
    return caught.value


@pytest.fixture
def repo(tmp_path: Path) -> UpdateRepository:
    return UpdateRepository.create(tmp_path / "repo")


@pytest.fixture
def server(repo: UpdateRepository) -> Iterator[RepositoryServer]:
    with RepositoryServer(repo.directory) as running:
        yield running


@pytest.fixture
def client(repo: UpdateRepository, server: RepositoryServer, tmp_path: Path) -> UpdateClient:
    return UpdateClient(server.url, tmp_path / "agent", repo.trusted_root_path)


@pytest.fixture
def running_1_0(repo: UpdateRepository, client: UpdateClient) -> UpdateClient:
    """An agent that installed 1.0.0; 1.1.0 is then published."""
    _publish(repo, "1.0.0")
    assert client.update() is not None
    _assert_running(client, "1.0.0")
    _publish(repo, "1.1.0")
    return client


def test_good_update_installs_and_switches_current(
    repo: UpdateRepository, client: UpdateClient
) -> None:
    assert client.check() is None  # nothing published yet
    assert client.current_version is None
    _publish(repo, "1.0.0")
    release = client.check()
    assert release is not None
    assert (release.version, release.filename, release.length) == ("1.0.0", FILE, 4096)
    installed = client.install(release)
    assert installed == client.state_dir / "releases" / "1.0.0" / FILE
    _assert_running(client, "1.0.0")
    assert client.current_file == client.state_dir / "current" / FILE
    assert client.check() is None  # up to date

    _publish(repo, "1.1.0")
    assert client.update() == client.state_dir / "releases" / "1.1.0" / FILE
    _assert_running(client, "1.1.0")
    assert (client.state_dir / "releases" / "1.0.0" / FILE).read_bytes() == _content("1.0.0")
    assert list((client.state_dir / "staging").iterdir()) == []


async def test_async_api_installs(repo: UpdateRepository, client: UpdateClient) -> None:
    _publish(repo, "2.0.0")
    release = await client.acheck()
    assert release is not None and release.version == "2.0.0"
    await client.ainstall(release)
    _assert_running(client, "2.0.0")
    assert await client.aupdate() is None


@pytest.mark.parametrize("change", ["same length", "longer", "shorter"])
def test_tampered_target_is_refused(
    repo: UpdateRepository,
    running_1_0: UpdateClient,
    change: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="sef.update")
    served = _served_file(repo, "1.1.0")
    good = served.read_bytes()
    evil = {
        "same length": good[:-4] + b"EVIL",
        "longer": good + b"#!/bin/sh rm -rf /",
        "shorter": good[:100],
    }[change]
    served.write_bytes(evil)
    refused = _refusal(running_1_0)
    assert refused.reason is Refusal.TAMPERED_TARGET
    assert refused.running == "1.0.0"
    assert "running version 1.0.0 kept" in str(refused)
    _assert_running(running_1_0, "1.0.0")
    assert not (running_1_0.state_dir / "releases" / "1.1.0").exists()
    assert str(refused) in caplog.text  # the reason is logged, not only raised
    # nothing was poisoned: once the server holds the signed bytes again, it installs
    served.write_bytes(good)
    running_1_0.update()
    _assert_running(running_1_0, "1.1.0")


def test_tampered_metadata_is_refused(repo: UpdateRepository, running_1_0: UpdateClient) -> None:
    """targets.json edited after signing (a release added by hand): snapshot's hash and
    the signature both disagree; tuf checks snapshot's length and hash first."""
    path = repo.directory / "metadata" / "3.targets.json"
    path.write_bytes(path.read_bytes().replace(b'"1.1.0"', b'"9.9.9"'))
    refused = _refusal(running_1_0)
    assert refused.reason is Refusal.TAMPERED_METADATA
    _assert_running(running_1_0, "1.0.0")


def test_metadata_rollback_is_refused(repo: UpdateRepository, running_1_0: UpdateClient) -> None:
    """The agent saw timestamp 4 (1.2.0); the server then serves the older, validly
    signed and unexpired timestamp 3 (a rollback or freeze attack)."""
    old_timestamp = (repo.directory / "metadata" / "timestamp.json").read_bytes()
    _publish(repo, "1.2.0")
    running_1_0.update()
    _assert_running(running_1_0, "1.2.0")
    (repo.directory / "metadata" / "timestamp.json").write_bytes(old_timestamp)
    refused = _refusal(running_1_0)
    assert refused.reason is Refusal.METADATA_ROLLBACK
    assert "timestamp" in refused.detail
    _assert_running(running_1_0, "1.2.0")


def test_snapshot_rollback_by_a_stolen_timestamp_key_is_refused(
    repo: UpdateRepository, running_1_0: UpdateClient
) -> None:
    """A fresh timestamp signed with the real (online) key but naming an older snapshot."""
    running_1_0.update()
    _assert_running(running_1_0, "1.1.0")  # trusts snapshot 3
    path = repo.directory / "metadata" / "timestamp.json"
    timestamp = Metadata[Timestamp].from_bytes(path.read_bytes())
    timestamp.signed.version += 1
    timestamp.signed.snapshot_meta = MetaFile(2)
    for signer in repo._signers(Timestamp.type):
        timestamp.sign(signer)
    path.write_bytes(timestamp.to_bytes(JSONSerializer()))
    refused = _refusal(running_1_0)
    assert refused.reason is Refusal.METADATA_ROLLBACK
    assert "snapshot" in refused.detail
    _assert_running(running_1_0, "1.1.0")


def test_expired_metadata_is_refused(repo: UpdateRepository, running_1_0: UpdateClient) -> None:
    repo.refresh_online(expires=datetime.now(UTC) - timedelta(minutes=1))
    refused = _refusal(running_1_0)
    assert refused.reason is Refusal.EXPIRED
    assert "expired" in refused.detail
    _assert_running(running_1_0, "1.0.0")
    # the online job re-signs with a fresh expiry: the update goes through
    repo.refresh_online()
    running_1_0.update()
    _assert_running(running_1_0, "1.1.0")


def test_expired_targets_is_refused(tmp_path: Path) -> None:
    """Targets (offline role) signed with a lifetime that has run out by the agent's check."""
    repo = UpdateRepository.create(tmp_path / "repo", expires_days=1.0)
    _publish(repo, "1.0.0")
    targets_file = repo.directory / "metadata" / "2.targets.json"
    targets = Metadata[Targets].from_bytes(targets_file.read_bytes())
    targets.signed.expires = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    targets.signed.version = 3
    for signer in repo._signers("targets"):
        targets.sign(signer)
    (repo.directory / "metadata" / "3.targets.json").write_bytes(targets.to_bytes())
    repo.refresh_online()  # snapshot/timestamp now name targets 3, validly signed
    with RepositoryServer(repo.directory) as server:
        client = UpdateClient(server.url, tmp_path / "agent", repo.trusted_root_path)
        with pytest.raises(UpdateRefused) as caught:
            client.update()
    assert caught.value.reason is Refusal.EXPIRED
    assert client.current_version is None


@pytest.mark.parametrize("role", ["targets", "snapshot", "timestamp"])
def test_metadata_signed_with_a_wrong_key_is_refused(
    repo: UpdateRepository, running_1_0: UpdateClient, role: str
) -> None:
    """1.2.0 published with ``role`` signed by a key root does not name (the others are
    signed correctly): e.g. a stolen server signing its own targets."""
    repo.signers[role] = [CryptoSigner.generate_ecdsa()]
    _publish(repo, "1.2.0")
    refused = _refusal(running_1_0)
    assert refused.reason is Refusal.BAD_SIGNATURE
    assert role in refused.detail
    _assert_running(running_1_0, "1.0.0")


def test_new_root_signed_with_a_wrong_key_is_refused(
    repo: UpdateRepository, running_1_0: UpdateClient
) -> None:
    """A root version 2 that swaps in the attacker's targets key, signed by the attacker."""
    attacker = CryptoSigner.generate_ecdsa()
    root = Metadata[Root].from_bytes((repo.directory / "metadata" / "1.root.json").read_bytes())
    root.signed.version = 2
    for keyid in list(root.signed.roles["targets"].keyids):
        root.signed.revoke_key(keyid, "targets")
    root.signed.add_key(attacker.public_key, "targets")
    root.sign(attacker)
    (repo.directory / "metadata" / "2.root.json").write_bytes(root.to_bytes())
    refused = _refusal(running_1_0)
    assert refused.reason is Refusal.BAD_SIGNATURE
    assert "root" in refused.detail
    _assert_running(running_1_0, "1.0.0")


def test_software_rollback_is_refused(repo: UpdateRepository, client: UpdateClient) -> None:
    _publish(repo, "1.1.0")
    client.update()
    _assert_running(client, "1.1.0")
    _publish(repo, "1.0.0")  # published after 1.1.0: the repository's latest is now older
    with pytest.raises(UpdateRefused) as caught:
        client.check()
    assert caught.value.reason is Refusal.SOFTWARE_ROLLBACK
    assert "1.0.0" in caught.value.detail and "1.1.0" in caught.value.detail
    assert _refusal(client).reason is Refusal.SOFTWARE_ROLLBACK
    _assert_running(client, "1.1.0")
    assert not (client.state_dir / "releases" / "1.0.0").exists()


def test_install_of_an_older_release_object_is_refused(
    repo: UpdateRepository, running_1_0: UpdateClient
) -> None:
    older = running_1_0.check()
    assert older is not None
    running_1_0.install(older)
    _publish(repo, "1.2.0")
    with pytest.raises(UpdateRefused) as caught:
        running_1_0.install(older)  # a stale Release for 1.1.0 while 1.1.0 runs
    assert caught.value.reason is Refusal.SOFTWARE_ROLLBACK
    _assert_running(running_1_0, "1.1.0")


def test_agent_with_another_repositorys_root_refuses(tmp_path: Path) -> None:
    """A repository made by someone else (same layout, other keys) is not trusted."""
    ours = UpdateRepository.create(tmp_path / "ours")
    theirs = UpdateRepository.create(tmp_path / "theirs")
    _publish(theirs, "6.6.6")
    with RepositoryServer(theirs.directory) as server:
        client = UpdateClient(server.url, tmp_path / "agent", ours.trusted_root_path)
        with pytest.raises(UpdateRefused) as caught:
            client.update()
    assert caught.value.reason is Refusal.BAD_SIGNATURE
    assert client.current_version is None

"""The publisher's repository (keys, layout, offline keys, several root keys), the
repository server (serves only metadata/ and targets/) and the version and name rules."""

from __future__ import annotations

import http.client
import json
import shutil
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tuf.api.metadata import Metadata, Root  # type: ignore[attr-defined]

from sef.update import (
    PublishError,
    RepositoryServer,
    UpdateClient,
    UpdateRepository,
    check_name,
    parse_version,
)


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "build" / "sef-agent.tar.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_init_writes_keys_0600_and_the_client_layout(tmp_path: Path) -> None:
    repo = UpdateRepository.create(tmp_path / "repo", key_type="ed25519")
    keys = sorted(p.name for p in repo.keys_dir.iterdir())
    assert keys == ["root-1.pem", "snapshot-1.pem", "targets-1.pem", "timestamp-1.pem"]
    for key in repo.keys_dir.iterdir():
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    metadata = sorted(p.name for p in repo.metadata_dir.iterdir())
    assert metadata == ["1.root.json", "1.snapshot.json", "1.targets.json", "timestamp.json"]
    root = Metadata[Root].from_bytes(repo.trusted_root_path.read_bytes())
    assert root.signed.consistent_snapshot is True
    assert {key.keytype for key in root.signed.keys.values()} == {"ed25519"}
    repo.publish(_file(tmp_path, "one"), "0.1.0", name="meter-agent")
    targets = json.loads((repo.metadata_dir / "2.targets.json").read_text())["signed"]
    entry = targets["targets"]["meter-agent/0.1.0/sef-agent.tar.gz"]
    assert entry["custom"] == {"name": "meter-agent", "version": "0.1.0"}
    prefixed = (
        repo.targets_dir
        / "meter-agent"
        / "0.1.0"
        / (f"{entry['hashes']['sha256']}.sef-agent.tar.gz")
    )
    assert prefixed.read_text() == "one"
    assert [r["version"] for r in repo.releases("meter-agent")] == ["0.1.0"]
    with pytest.raises(PublishError, match="already holds"):
        UpdateRepository.create(tmp_path / "repo")


def test_several_root_keys_with_a_threshold(tmp_path: Path) -> None:
    repo = UpdateRepository.create(tmp_path / "repo", root_keys=3, threshold=2)
    root = Metadata[Root].from_bytes(repo.trusted_root_path.read_bytes())
    assert len(root.signed.roles["root"].keyids) == 3
    assert root.signed.roles["root"].threshold == 2
    assert len(root.signatures) == 3
    repo.publish(_file(tmp_path, "v1"), "1.0.0")
    with RepositoryServer(repo.directory) as server:
        client = UpdateClient(server.url, tmp_path / "agent", repo.trusted_root_path)
        client.update()
    assert client.current_version == "1.0.0"
    with pytest.raises(PublishError, match="threshold"):
        UpdateRepository.create(tmp_path / "other", root_keys=2, threshold=3)


def test_publishing_needs_the_offline_targets_key(tmp_path: Path) -> None:
    """With keys elsewhere and the targets key unmounted, publishing fails clearly; the
    online job (snapshot and timestamp keys) still works."""
    offline = tmp_path / "usb"
    repo = UpdateRepository.create(tmp_path / "repo", keys_dir=offline)
    assert not (tmp_path / "repo" / "keys").exists()
    online = tmp_path / "server-keys"
    online.mkdir()
    for role in ("snapshot", "timestamp"):
        shutil.copy2(offline / f"{role}-1.pem", online / f"{role}-1.pem")
    on_server = UpdateRepository(tmp_path / "repo", online)
    with pytest.raises(PublishError, match="targets needs 1 key"):
        on_server.publish(_file(tmp_path, "v1"), "1.0.0")
    on_server.refresh_online()
    assert json.loads((repo.metadata_dir / "timestamp.json").read_text())["signed"]["version"] == 2
    UpdateRepository(tmp_path / "repo", offline).publish(_file(tmp_path, "v1"), "1.0.0")


@pytest.mark.parametrize(
    ("version", "name", "message"),
    [
        ("1.0", "sef", "X.Y.Z"),
        ("v1.0.0", "sef", "X.Y.Z"),
        ("1.0.0", "../etc", "release name"),
        ("1.0.0", "a/b", "release name"),
    ],
)
def test_publish_refuses_bad_versions_and_names(
    tmp_path: Path, version: str, name: str, message: str
) -> None:
    repo = UpdateRepository.create(tmp_path / "repo")
    with pytest.raises(PublishError, match=message):
        repo.publish(_file(tmp_path, "x"), version, name=name)
    repo.publish(_file(tmp_path, "x"), "1.0.0")
    with pytest.raises(PublishError, match="already published"):
        repo.publish(_file(tmp_path, "y"), "1.0.0")
    with pytest.raises(PublishError, match="not a file"):
        repo.publish(tmp_path / "missing.tar.gz", "2.0.0")
    with pytest.raises(PublishError, match="not an update repository"):
        UpdateRepository(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "path",
    [
        "/keys/root-1.pem",
        "/repository.json",
        "/metadata/",
        "/metadata/../keys/timestamp-1.pem",
        "/metadata/%2e%2e/keys/timestamp-1.pem",
        "/targets/sef/../../keys/targets-1.pem",
    ],
)
def test_server_serves_only_metadata_and_targets(tmp_path: Path, path: str) -> None:
    repo = UpdateRepository.create(tmp_path / "repo")
    with RepositoryServer(repo.directory) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        assert response.status == 404
        assert b"PRIVATE KEY" not in body
        connection.request("GET", "/metadata/1.root.json")
        response = connection.getresponse()
        assert response.status == 200
        assert response.read() == repo.trusted_root_path.read_bytes()


@pytest.mark.parametrize(
    ("text", "parsed"), [("0.0.0", (0, 0, 0)), ("1.10.2", (1, 10, 2)), ("12.0.7", (12, 0, 7))]
)
def test_parse_version(text: str, parsed: tuple[int, int, int]) -> None:
    assert parse_version(text) == parsed


@pytest.mark.parametrize("text", ["", "1", "1.0", "01.0.0", "1.0.0-rc1", " 1.0.0", "1.0.0.0"])
def test_parse_version_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"X\.Y\.Z"):
        parse_version(text)


@pytest.mark.parametrize("text", ["", ".", "..", ".hidden", "a/b", "a b", "-x", "x" * 101])
def test_check_name_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="must be"):
        check_name(text)


@given(st.tuples(*[st.integers(0, 999_999_999)] * 3))
def test_parse_version_round_trips(parts: tuple[int, int, int]) -> None:
    assert parse_version(".".join(map(str, parts))) == parts


@given(st.text(max_size=30))
def test_parse_version_accepts_or_says_why(text: str) -> None:
    """Any text parses to three integers that print back as it, or is a ValueError."""
    try:
        parsed = parse_version(text)
    except ValueError as exc:
        assert "X.Y.Z" in str(exc)
    else:
        assert ".".join(map(str, parsed)) == text

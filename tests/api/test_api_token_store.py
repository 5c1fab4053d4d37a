"""The token table and ``commands.sent_by`` in the EMS store, on SQLite and PostgreSQL:
migration 0005 keeps an older database's command log, tokens are stored as hashes, names
are unique and not reused, revocation sticks."""

from __future__ import annotations

import hashlib
from importlib import resources

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from sef.ems.store import Store, TokenError, TokenStore, hash_token
from sef.ems.store._schema import api_tokens


def test_migration_0005_keeps_the_command_log(db_url: str) -> None:
    old = Store(db_url)
    config = Config()
    config.set_main_option("script_location", str(resources.files("sef.ems.store") / "migrations"))
    with old.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0004")
    with old.engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO commands (call_id, ts, sender, target, interface, method, args, "
                "status, replies) VALUES ('c-old', 1.0, 'ems', 'bat-1', 'i', 'm', '[]', 'ok', "
                "'[]')"
            )
        )
    old.close()

    store = Store.open(db_url)
    try:
        assert store.schema_version() == "0007"  # the head (0006, 0007 came after)
        store.log_command("c-new", 2.0, "ems", "bat-2", "i", "m", [], sent_by="olivia")
        log = {row["call_id"]: row["sent_by"] for row in store.commands()}
        assert log == {"c-old": None, "c-new": "olivia"}
        assert TokenStore(store).rows() == []
    finally:
        store.close()


def test_tokens_are_hashes_unique_and_revocable(db_url: str) -> None:
    store = Store.open(db_url)
    tokens = TokenStore(store)
    try:
        token = tokens.create("olive", "operator", now=100.0)
        assert len(token) == 43  # 32 bytes, URL-safe base64 without padding
        (row,) = tokens.rows()
        assert (row.name, row.role, row.created, row.revoked) == ("olive", "operator", 100.0, None)
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest() == hash_token(token)
        with store.engine.connect() as connection:
            stored = [tuple(r) for r in connection.execute(sa.select(api_tokens))]
        assert not any(token in str(value) for value in stored[0])

        assert tokens.create("vic", "viewer") != tokens.create("ada", "admin")
        with pytest.raises(TokenError, match="exists"):
            tokens.create("olive", "viewer")
        for name, role, match in (
            ("", "viewer", "bad token name"),
            ("a b", "viewer", "bad token name"),
            ("x" * 65, "viewer", "bad token name"),
            ("nul\x00", "viewer", "bad token name"),
            ("eve", "root", "unknown role 'root'"),
        ):
            with pytest.raises(TokenError, match=match):
                tokens.create(name, role)

        tokens.revoke("olive", now=200.0)
        with pytest.raises(TokenError, match="no active token named 'olive'"):
            tokens.revoke("olive")
        with pytest.raises(TokenError, match="exists"):  # a revoked name is not reused
            tokens.create("olive", "operator")
        assert [r.name for r in tokens.rows(active_only=True)] == ["ada", "vic"]
        assert {r.name: r.revoked for r in tokens.rows()}["olive"] == 200.0
    finally:
        store.close()

"""The EMS store: telemetry history, agent registry, last known values, command log.

One class for SQLite (embedded default, WAL mode) and PostgreSQL (production), chosen by
the database URL (``sqlite:///path.db``, ``postgresql://user@host:port/db``). Schema
migrations run at open (Alembic), so an upgrade keeps the data.

Methods are synchronous (SQLAlchemy Core) and meant to run in a worker thread: the EMS
batches writes (:meth:`Store.write_batch`, one transaction per batch).

Telemetry rows are unique by (agent, property, sender time): a sample is stored once
however often it arrives (a message redelivered after a crash, MQTT QoS 1 being
at-least-once; a late original and its backfilled copy, ``docs/protocol.md`` §4.7; a
rebirth's republication of an unchanged property under its original time, with a new
sequence number). The first copy stored stays. A backfilled row (:attr:`TelemetryIn.backfill`)
is history only: it never becomes the property's last value.

Every batch is durable when :meth:`Store.write_batch` returns (``durable=True``, the
default), whatever the server's setting: PostgreSQL runs the batch's transaction with
``SET LOCAL synchronous_commit = on`` (a server started with ``synchronous_commit=off``
would otherwise confirm a commit whose WAL a crash can still lose); SQLite runs in WAL mode
with ``synchronous=FULL`` (with ``NORMAL`` a WAL commit is not synced, and "might roll
back following a power loss or system crash" — SQLite's documentation). ``durable=False``
keeps the server's setting (PostgreSQL) and ``synchronous=NORMAL`` (SQLite): faster, for
benches and throwaway databases only.

Rows the store refuses (:func:`check_telemetry` and its siblings, or the database itself)
are kept as dead letters (table ``dead_letters``, :meth:`Store.dead_letters`).
"""

from __future__ import annotations

import functools
import logging
import sqlite3
from collections.abc import Sequence
from importlib import resources
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from sef.ems.store._checks import DeadLetter
from sef.ems.store._reads import StoreReads
from sef.ems.store._rows import (
    AgentRow,
    Batch,
    StoreError,
    TelemetryIn,
    is_data_error,
    normalize_url,
)
from sef.ems.store._schema import agent_events, agents, commands, dead_letters, telemetry

__all__ = [
    "AgentRow",
    "Batch",
    "Store",
    "StoreError",
    "TelemetryIn",
    "is_data_error",
    "normalize_url",
]

log = logging.getLogger("sef.ems.store")


_TELEMETRY_COLUMNS = "agent_id, key, ts, seq, received, value, downsampled"
_TELEMETRY_CONFLICT = "ON CONFLICT (agent_id, key, ts) DO NOTHING"
_PG_TELEMETRY = (
    f"INSERT INTO telemetry ({_TELEMETRY_COLUMNS}) SELECT a, k, t, s, r, v, false "
    "FROM unnest(%b::varchar[], %b::varchar[], %b::float8[], %b::int8[], %b::float8[], "
    f"%b::text[]) AS u(a, k, t, s, r, v) {_TELEMETRY_CONFLICT}"
)
_SQLITE_ROWS = 500 if sqlite3.sqlite_version_info >= (3, 32) else 160
"""Rows per SQLite INSERT statement: 3 000 parameters (SQLite allows 32 766 since 3.32,
999 before)."""


@functools.lru_cache(maxsize=64)
def _sqlite_telemetry(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, ?, 0)"] * rows)
    return f"INSERT INTO telemetry ({_TELEMETRY_COLUMNS}) VALUES {values} {_TELEMETRY_CONFLICT}"


_PROPERTIES_UPSERT = (
    "ON CONFLICT (agent_id, key) DO UPDATE SET value = excluded.value, ts = excluded.ts, "
    "received = excluded.received WHERE properties.ts IS NULL OR properties.ts <= excluded.ts"
)
_PG_PROPERTIES = (
    "INSERT INTO properties (agent_id, key, value, ts, received) SELECT * FROM "
    "unnest(%b::varchar[], %b::varchar[], %b::text[], %b::float8[], %b::float8[]) "
    f"{_PROPERTIES_UPSERT}"
)
_SQLITE_PROPERTIES = (
    "INSERT INTO properties (agent_id, key, value, ts, received) "
    f"VALUES (?, ?, ?, ?, ?) {_PROPERTIES_UPSERT}"
)


_MIGRATE_KEY = 0x5EF_0001
"""PostgreSQL advisory lock held (per transaction) while migrating the schema."""


class Store(StoreReads):
    """A database of the EMS. Open with :meth:`open`.

    Args:
        url: ``sqlite:///PATH`` or ``postgresql://...``.
        durable: every committed batch survives a crash of the database server or of the
            machine (see the module's documentation); ``False`` trades that for speed.
    """

    def __init__(self, url: str, *, echo: bool = False, durable: bool = True) -> None:
        self.url = url
        self.durable = durable
        self.engine: Engine = sa.create_engine(normalize_url(url), echo=echo, pool_pre_ping=True)
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            sa.event.listen(
                self.engine, "connect", functools.partial(_sqlite_pragmas, durable=durable)
            )

    @classmethod
    def open(cls, url: str, *, durable: bool = True) -> Store:
        """Connect and migrate the schema to the newest version."""
        store = cls(url, durable=durable)
        try:
            store.migrate()
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"cannot open the store at {url}: {exc}") from exc
        return store

    def migrate(self) -> None:
        """Run every Alembic migration that this database has not seen yet."""
        config = Config()
        config.set_main_option("script_location", str(resources.files(__package__) / "migrations"))
        with self.engine.begin() as connection:
            if self.dialect == "postgresql":  # EMS workers starting at once: one at a time
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATE_KEY})
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def schema_version(self) -> str | None:
        with self.engine.connect() as connection:
            row = connection.execute(sa.text("SELECT version_num FROM alembic_version")).first()
        return None if row is None else str(row[0])

    def close(self) -> None:
        self.engine.dispose()

    # -- writes -----------------------------------------------------------------------
    def _insert(self, table: sa.Table) -> Any:
        return postgresql.insert(table) if self.dialect == "postgresql" else sqlite.insert(table)

    def write_batch(self, batch: Batch) -> int:
        """Write a batch in one transaction; return the telemetry rows actually inserted."""
        inserted = 0
        with self.engine.begin() as connection:
            if self.durable and self.dialect == "postgresql":
                connection.exec_driver_sql("SET LOCAL synchronous_commit = on")
            if batch.telemetry:
                inserted = self._write_telemetry(connection, batch.telemetry)
                last: dict[tuple[str, str], TelemetryIn] = {}
                for row in batch.telemetry:
                    if row.backfill:
                        continue
                    known = last.get((row.agent_id, row.key))
                    if known is None or row.ts >= known.ts:
                        last[(row.agent_id, row.key)] = row
                if last:
                    self._write_properties(connection, list(last.values()))
            if batch.agents:
                stmt = self._insert(agents)
                columns = [c.name for c in agents.columns if c.name != "agent_id"]
                stmt = stmt.on_conflict_do_update(
                    index_elements=["agent_id"],
                    set_={name: getattr(stmt.excluded, name) for name in columns},
                )
                connection.execute(stmt, [row.values() for row in batch.agents.values()])
            if batch.events:
                connection.execute(
                    agent_events.insert(),
                    [
                        {"agent_id": a, "ts": ts, "kind": kind, "detail": detail}
                        for a, ts, kind, detail in batch.events
                    ],
                )
            if batch.dead_letters:
                connection.execute(
                    dead_letters.insert(), [_dead_letter_row(d) for d in batch.dead_letters]
                )
        return inserted

    # The two hot statements bypass SQLAlchemy's per-row parameter processing: PostgreSQL
    # gets one INSERT ... SELECT FROM unnest(arrays) (one round trip, exact rowcount),
    # SQLite multi-row INSERTs of _SQLITE_ROWS rows: one sqlite3_step (during which the
    # driver releases the GIL) per statement, not per row, so the event loop and the
    # writer thread do not hand the GIL back and forth for every row.
    def _write_telemetry(self, connection: Connection, rows: Sequence[TelemetryIn]) -> int:
        if self.dialect == "postgresql":
            result = connection.exec_driver_sql(
                _PG_TELEMETRY,
                (
                    [r.agent_id for r in rows],
                    [r.key for r in rows],
                    [r.ts for r in rows],
                    [r.seq for r in rows],
                    [r.received for r in rows],
                    [r.value_json for r in rows],
                ),
            )
            return max(0, result.rowcount) if result.rowcount is not None else len(rows)
        inserted = 0
        for start in range(0, len(rows), _SQLITE_ROWS):
            chunk = rows[start : start + _SQLITE_ROWS]
            params: list[Any] = []
            for r in chunk:
                params += (r.agent_id, r.key, r.ts, r.seq, r.received, r.value_json)
            result = connection.exec_driver_sql(_sqlite_telemetry(len(chunk)), tuple(params))
            inserted += max(0, result.rowcount) if result.rowcount is not None else len(chunk)
        return inserted

    def _write_properties(self, connection: Connection, rows: Sequence[TelemetryIn]) -> None:
        """Upsert the last values, unless the stored one is newer (sender time)."""
        if self.dialect == "postgresql":
            connection.exec_driver_sql(
                _PG_PROPERTIES,
                (
                    [r.agent_id for r in rows],
                    [r.key for r in rows],
                    [r.value_json for r in rows],
                    [r.ts for r in rows],
                    [r.received for r in rows],
                ),
            )
        else:
            connection.exec_driver_sql(
                _SQLITE_PROPERTIES,
                [(r.agent_id, r.key, r.value_json, r.ts, r.received) for r in rows],
            )

    def log_command(
        self,
        call_id: str,
        ts: float,
        sender: str,
        target: str,
        interface: str,
        method: str,
        args: Any,
        status: str = "sent",
        error: str | None = None,
        expires: float | None = None,
        sent_by: str | None = None,
    ) -> None:
        """Record a command when it is sent (or refused).

        ``expires`` is the call's expiry (clock s) when a reply was asked, ``None``
        otherwise: after it an unanswered command is marked ``expired``
        (:meth:`expire_commands`). ``sent_by`` names who sent it (an API token's name,
        or the EMS's own id for its internal commands).
        """
        with self.engine.begin() as connection:
            connection.execute(
                commands.insert().values(
                    call_id=call_id,
                    ts=ts,
                    sender=sender,
                    target=target,
                    interface=interface,
                    method=method,
                    args=args,
                    status=status,
                    replies=[],
                    error=error,
                    expires=expires,
                    sent_by=sent_by,
                )
            )

    def update_command(
        self,
        call_id: str,
        status: str,
        replies: list[dict[str, Any]],
        error: str | None = None,
        *,
        only_if: Sequence[str] | None = None,
    ) -> bool:
        """Record the outcome of a command: its replies (late ones included).

        With ``only_if`` the row changes only while its status is one of those. Returns
        whether a row changed.
        """
        query = commands.update().where(commands.c.call_id == call_id)
        if only_if is not None:
            query = query.where(commands.c.status.in_(list(only_if)))
        with self.engine.begin() as connection:
            result = connection.execute(query.values(status=status, replies=replies, error=error))
        return bool(result.rowcount)

    def expire_commands(self, now: float, *, call_ids: Sequence[str] | None = None) -> int:
        """Mark ``expired`` the commands that asked for a reply, got none (status ``sent``
        or ``timeout``) and whose expiry is before ``now`` (clock s); with ``call_ids``
        only those. Returns how many were marked."""
        query = commands.update().where(
            commands.c.status.in_(["sent", "timeout"]),
            commands.c.expires.is_not(None),
            commands.c.expires < now,
        )
        if call_ids is not None:
            query = query.where(commands.c.call_id.in_(list(call_ids)))
        with self.engine.begin() as connection:
            result = connection.execute(query.values(status="expired"))
        return int(result.rowcount or 0)

    def open_commands(self, now: float) -> list[dict[str, Any]]:
        """Commands whose replies may still come: a reply asked, expiry at or after ``now``
        (clock s), status ``sent``, ``timeout`` or ``partial``; oldest first."""
        query = (
            sa.select(
                commands.c.call_id,
                commands.c.target,
                commands.c.expires,
                commands.c.status,
                commands.c.replies,
            )
            .where(
                commands.c.status.in_(["sent", "timeout", "partial"]),
                commands.c.expires.is_not(None),
                commands.c.expires >= now,
            )
            .order_by(commands.c.ts)
        )
        with self.engine.connect() as connection:
            return [dict(row) for row in connection.execute(query).mappings()]

    # -- retention --------------------------------------------------------------------
    def apply_retention(
        self,
        now: float,
        *,
        keep_s: float | None = None,
        raw_s: float | None = None,
        every_s: float = 900.0,
    ) -> dict[str, int]:
        """Delete telemetry older than ``keep_s``; thin rows older than ``raw_s`` to one
        per property per ``every_s`` (the last of each bucket). Times in s."""
        deleted = thinned = 0
        with self.engine.begin() as connection:
            if keep_s is not None:
                deleted = (
                    connection.execute(
                        telemetry.delete().where(telemetry.c.ts < now - keep_s)
                    ).rowcount
                    or 0
                )
            if raw_s is not None:
                cutoff = now - raw_s
                bucket = (
                    sa.func.floor(telemetry.c.ts / every_s)
                    if self.dialect == "postgresql"
                    else sa.cast(telemetry.c.ts / every_s, sa.Integer)
                )
                old = sa.and_(telemetry.c.ts < cutoff, telemetry.c.downsampled.is_(False))
                keepers = (
                    sa.select(sa.func.max(telemetry.c.id))
                    .where(old)
                    .group_by(telemetry.c.agent_id, telemetry.c.key, bucket)
                )
                thinned = (
                    connection.execute(
                        telemetry.delete().where(old, telemetry.c.id.not_in(keepers))
                    ).rowcount
                    or 0
                )
                connection.execute(telemetry.update().where(old).values(downsampled=True))
        return {"deleted": deleted, "thinned": thinned}


def _dead_letter_row(letter: DeadLetter) -> dict[str, Any]:
    return {name: getattr(letter, name) for name in letter.__slots__}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any, *, durable: bool = True) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: the WAL is synced at every commit; NORMAL syncs it only at checkpoints, so a
    # commit can be lost on power loss or an OS crash (not on an application crash)
    cursor.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()

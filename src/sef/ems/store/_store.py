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

import contextlib
import functools
import gc
import json
import logging
import math
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from sef.ems.store._checks import DeadLetter
from sef.ems.store._schema import (
    agent_events,
    agents,
    commands,
    dead_letters,
    telemetry,
)

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


_AGENT_COLUMNS = (
    'agent_id, online, bdseq, {0}about{1}, {0}interfaces{1}, {0}"groups"{1}, first_seen, '
    "last_seen, online_since, offline_since, offline_reason, gaps"
)
_SQLITE_AGENTS = f"SELECT {_AGENT_COLUMNS.format('', '')} FROM agents"
_PG_AGENTS = f"SELECT {_AGENT_COLUMNS.format('', '::text')} FROM agents"
"""The agents' rows for :meth:`Store.load_agents` (the JSON columns as text)."""


def _json(text: str) -> Any:
    """Decode a stored JSON text: orjson, or :mod:`json` for what orjson refuses (an
    integer beyond 64 bits, NaN in a row written by an older EMS)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


class StoreError(RuntimeError):
    """The database cannot be opened or used."""


_MIGRATE_KEY = 0x5EF_0001
"""PostgreSQL advisory lock held (per transaction) while migrating the schema."""


def normalize_url(url: str) -> str:
    """SQLAlchemy URL for ``sqlite:///path`` or ``postgresql://...`` (psycopg 3 driver)."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith(("sqlite://", "postgresql+psycopg://")):
        return url
    raise StoreError(f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://...")


@dataclass(frozen=True, slots=True)
class TelemetryIn:
    """One property update to store; ``value_json`` is the JSON text of the value, ``ts``
    the sender time and ``received`` the EMS time (Unix s). ``backfill``: a sample the agent
    buffered while disconnected (history: never the property's last value)."""

    agent_id: str
    key: str
    ts: float
    seq: int
    received: float
    value_json: str
    backfill: bool = False


@dataclass(slots=True)
class AgentRow:
    """The stored state of one agent (see :class:`sef.ems.AgentRecord`)."""

    agent_id: str
    online: bool | None
    bdseq: int | None
    about: dict[str, Any]
    interfaces: dict[str, str]
    groups: list[str]
    first_seen: float
    last_seen: float
    online_since: float | None
    offline_since: float | None
    offline_reason: str | None
    gaps: int

    def values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


EventRow = tuple[str, float, str, str | None]
"""An agent event: agent id, EMS time (Unix s), kind, detail."""


@dataclass
class Batch:
    """Writes that go to the database in one transaction."""

    telemetry: list[TelemetryIn] = field(default_factory=list)
    agents: dict[str, AgentRow] = field(default_factory=dict)
    events: list[EventRow] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.telemetry) + len(self.agents) + len(self.events) + len(self.dead_letters)

    def items(self) -> list[TelemetryIn | AgentRow | EventRow | DeadLetter]:
        """Every row of the batch, in table order."""
        return [*self.telemetry, *self.agents.values(), *self.events, *self.dead_letters]

    @classmethod
    def of(cls, items: Sequence[TelemetryIn | AgentRow | EventRow | DeadLetter]) -> Batch:
        """A batch of these rows (as :meth:`items` lists them)."""
        batch = cls()
        for item in items:
            if isinstance(item, TelemetryIn):
                batch.telemetry.append(item)
            elif isinstance(item, AgentRow):
                batch.agents[item.agent_id] = item
            elif isinstance(item, DeadLetter):
                batch.dead_letters.append(item)
            else:
                batch.events.append(item)
        return batch

    def halves(self) -> tuple[Batch, Batch]:
        """The batch split in two (to find the row a database refuses by bisection)."""
        items = self.items()
        middle = len(items) // 2
        return Batch.of(items[:middle]), Batch.of(items[middle:])


def is_data_error(exc: BaseException) -> bool:
    """Whether a failed write was refused for its *data* (a value out of range, too long,
    not encodable...), so that writing the same rows again would fail again; not for the
    connection or the server (down, restarting, disk full, locked), which a retry cures."""
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return False
        return isinstance(exc, (sa.exc.DataError, sa.exc.IntegrityError))
    if isinstance(exc, sa.exc.StatementError):  # raised by the driver while binding values
        return exc.orig is not None and is_data_error(exc.orig)
    if isinstance(exc, (ConnectionError, OSError)):
        return False
    return isinstance(exc, (OverflowError, ValueError, TypeError, UnicodeError))


class Store:
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

    # -- reads ------------------------------------------------------------------------
    def load_agents(self) -> list[AgentRow]:
        """Every stored agent, as the registry restores them at start.

        One query over the columns of :class:`AgentRow` through the driver (no
        per-row SQLAlchemy objects); the JSON columns decoded with orjson (read as text on
        PostgreSQL, whose driver would decode them with the slower :mod:`json`), the same
        interfaces and groups text decoded once."""
        agents_sql = _PG_AGENTS if self.dialect == "postgresql" else _SQLITE_AGENTS
        out: list[AgentRow] = []
        append = out.append
        shared: dict[str, Any] = {}  # JSON text -> decoded (interfaces, groups: fleet-wide)
        with _gc_paused(), self.engine.connect() as connection:
            for (
                agent_id,
                online,
                bdseq,
                about,
                interfaces,
                groups,
                first_seen,
                last_seen,
                online_since,
                offline_since,
                offline_reason,
                gaps,
            ) in _raw_rows(connection, agents_sql):
                refs = shared.get(interfaces)
                if refs is None:
                    refs = shared[interfaces] = _json(interfaces)
                names = shared.get(groups)
                if names is None:
                    names = shared[groups] = _json(groups)
                append(
                    AgentRow(
                        agent_id,
                        None if online is None else bool(online),
                        bdseq,
                        _json(about),
                        dict(refs),
                        list(names),
                        first_seen,
                        last_seen,
                        online_since,
                        offline_since,
                        offline_reason,
                        gaps,
                    )
                )
        return out

    def load_property_texts(self) -> dict[str, list[tuple[str, str, float | None, float]]]:
        """Last known values as stored, for the registry's restore: agent -> list of
        (property key, JSON text of the value, sender ts, received), times Unix s. One
        query through the driver; nothing decoded (the registry decodes and packs each
        value once, :func:`sef.ems._recorder.agent_record`)."""
        out: dict[str, list[tuple[str, str, float | None, float]]] = {}
        get = out.get
        with _gc_paused(), self.engine.connect() as connection:
            sql = "SELECT agent_id, key, value, ts, received FROM properties"
            for agent_id, key, value, ts, received in _raw_rows(connection, sql):
                found = get(agent_id)
                if found is None:
                    found = out[agent_id] = []
                found.append((key, value, ts, received))
        return out

    def load_properties(self) -> dict[str, dict[str, tuple[Any, float | None, float]]]:
        """Last known values: agent → property key → (value, sender ts, received)."""
        return {
            agent_id: {key: (_json(value), ts, rx) for key, value, ts, rx in rows}
            for agent_id, rows in self.load_property_texts().items()
        }

    def telemetry(
        self,
        agent_id: str,
        key: str | None = None,
        since: float | None = None,
        until: float | None = None,
        every_s: float | None = None,
        limit: int = 100_000,
    ) -> list[dict[str, Any]]:
        """History of one agent's properties, oldest first.

        ``since``/``until`` bound the sender time (Unix s). With ``every_s``, one row (the
        last) per property per ``every_s`` bucket is returned (downsampling).
        """
        query = sa.select(
            telemetry.c.key, telemetry.c.ts, telemetry.c.seq, telemetry.c.value
        ).where(telemetry.c.agent_id == agent_id)
        if key is not None:
            query = query.where(telemetry.c.key == key)
        if since is not None:
            query = query.where(telemetry.c.ts >= since)
        if until is not None:
            query = query.where(telemetry.c.ts <= until)
        query = query.order_by(telemetry.c.key, telemetry.c.ts).limit(limit)
        with _gc_paused(), self.engine.connect() as connection:
            rows: list[tuple[str, float, int, str]] = [
                tuple(row) for row in connection.execute(query)
            ]
            if every_s:
                buckets: dict[tuple[str, int], tuple[str, float, int, str]] = {}
                for row in rows:
                    buckets[(row[0], math.floor(row[1] / every_s))] = row
                rows = sorted(buckets.values(), key=lambda r: (r[0], r[1]))
            rows.sort(key=lambda r: r[1])
            loads = orjson.loads
            return [
                {"key": key, "ts": ts, "seq": seq, "value": loads(value)}
                for key, ts, seq, value in rows
            ]

    def count_telemetry(self, agent_id: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(telemetry)
        if agent_id is not None:
            query = query.where(telemetry.c.agent_id == agent_id)
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def commands(
        self, *, since: float | None = None, target: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The command log, newest first."""
        query = sa.select(commands).order_by(commands.c.ts.desc(), commands.c.id.desc())
        if since is not None:
            query = query.where(commands.c.ts >= since)
        if target is not None:
            query = query.where(commands.c.target == target)
        with self.engine.connect() as connection:
            rows = connection.execute(query.limit(limit)).mappings().all()
        return [{k: v for k, v in row.items() if k != "id"} for row in rows]

    def dead_letters(
        self, *, since: float | None = None, agent_id: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Refused rows with their reasons, newest first (``since``: EMS time, Unix s)."""
        query = sa.select(dead_letters).order_by(
            dead_letters.c.received.desc(), dead_letters.c.id.desc()
        )
        if since is not None:
            query = query.where(dead_letters.c.received >= since)
        if agent_id is not None:
            query = query.where(dead_letters.c.agent_id == agent_id)
        with self.engine.connect() as connection:
            rows = connection.execute(query.limit(limit)).mappings().all()
        return [dict(row) for row in rows]

    def count_dead_letters(self) -> int:
        """How many dead letters the store keeps."""
        with self.engine.connect() as connection:
            query = sa.select(sa.func.count()).select_from(dead_letters)
            return int(connection.execute(query).scalar_one())

    def agent_events(self, agent_id: str, *, limit: int = 100) -> list[dict[str, Any]]:
        query = (
            sa.select(agent_events.c.ts, agent_events.c.kind, agent_events.c.detail)
            .where(agent_events.c.agent_id == agent_id)
            .order_by(agent_events.c.ts.desc())
            .limit(limit)
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


def _raw_rows(connection: Connection, sql: str, chunk: int = 10_000) -> Iterator[Any]:
    """The rows of ``sql`` as the driver's tuples, fetched ``chunk`` at a time (no
    SQLAlchemy row objects: a fleet-sized read spends its time in the driver)."""
    cursor = connection.connection.cursor()
    try:
        cursor.execute(sql)
        while rows := cursor.fetchmany(chunk):
            yield from rows
    finally:
        cursor.close()


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a large result is built: thousands of new
    long-lived objects otherwise trigger full collections (p99 query time 3x the p50)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


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

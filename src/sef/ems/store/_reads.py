"""The EMS store's reads: the fleet restore at start and the queries of the API."""

from __future__ import annotations

import contextlib
import gc
import math
from collections.abc import Iterator
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from sef.ems.store._rows import AgentRow, _json
from sef.ems.store._schema import agent_events, commands, dead_letters, telemetry

__all__ = ["StoreReads"]


_AGENT_COLUMNS = (
    'agent_id, online, bdseq, {0}about{1}, {0}interfaces{1}, {0}"groups"{1}, first_seen, '
    "last_seen, online_since, offline_since, offline_reason, gaps"
)
_SQLITE_AGENTS = f"SELECT {_AGENT_COLUMNS.format('', '')} FROM agents"
_PG_AGENTS = f"SELECT {_AGENT_COLUMNS.format('', '::text')} FROM agents"
"""The agents' rows for :meth:`Store.load_agents` (the JSON columns as text)."""


class StoreReads:
    """The read queries of :class:`sef.ems.store.Store` (which sets :attr:`engine` and
    :attr:`dialect`)."""

    engine: Engine
    dialect: str

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

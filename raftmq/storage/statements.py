"""The SQL store's write statements: SQLAlchemy Core, compiled once per dialect, run at
the driver level with plain tuples.

A Raft round saves a few small rows, and building a Core statement per call, then its
cache key, compiled-cache lookup, parameter processing and execution context, cost
several times what SQLite itself spends (benchmarks/storage.py, "µs per save"). Here
every statement is still a Core construct on the schema's tables, compiled by SQLAlchemy
for the connection's dialect and paramstyle, but only once; a save runs it with
``Connection.exec_driver_sql``, so SQLAlchemy's transaction, error wrapping and
disconnect handling stay. Values reach the driver as they are, without the types' bind
processing: the columns only need ints, str, None and bytes, which both drivers take.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, insert, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter

from raftmq.core.types import Entry, HardState
from raftmq.storage.port import ClientSession
from raftmq.storage.schema import hard_state_table, log_table, progress_table, session_table


@dataclass(frozen=True, slots=True)
class DriverStatement:
    """One Core statement compiled for one dialect, executed with rows of plain values."""

    sql: str  # the driver's SQL, in the dialect's paramstyle
    names: tuple[str, ...]  # bind names, in the order callers give a row's values
    order: tuple[int, ...] | None  # placeholder i takes row[order[i]]; None: row order
    positional: bool  # the driver takes tuples (False: dicts keyed by bind name)

    @classmethod
    def compile(
        cls, statement: ClauseElement, dialect: Dialect, names: tuple[str, ...]
    ) -> DriverStatement:
        """Compile ``statement``, whose bind parameters are exactly ``names``."""
        compiled = statement.compile(dialect=dialect)
        if not isinstance(compiled, SQLCompiler):
            raise TypeError(f"not a SQL statement: {statement!r}")
        if set(compiled.binds) != set(names):
            raise ValueError(f"statement binds {sorted(compiled.binds)}, not {sorted(names)}")
        positions = compiled.positiontup
        if positions is None:  # a named paramstyle (named, pyformat)
            return cls(compiled.string, names, None, False)
        order = tuple(names.index(name) for name in positions)
        identity = order == tuple(range(len(names)))
        return cls(compiled.string, names, None if identity else order, True)

    def run(self, conn: Connection, rows: list[tuple[Any, ...]]) -> None:
        """Execute for each row: one driver ``execute`` for one row, ``executemany`` else."""
        if not self.positional:
            conn.exec_driver_sql(
                self.sql, [dict(zip(self.names, row, strict=True)) for row in rows]
            )
        elif self.order is None:
            conn.exec_driver_sql(self.sql, rows)
        else:
            order = self.order
            conn.exec_driver_sql(self.sql, [tuple(row[i] for i in order) for row in rows])


_LOG_COLUMNS = ("idx", "term", "kind", "data", "appended_ms")
_SESSION_COLUMNS = (
    "producer_id",
    "last_seq",
    "last_index",
    "last_term",
    "updated_index",
    "floor_seq",
    "above_seqs",
)


def _binds(names: tuple[str, ...]) -> dict[str, BindParameter[Any]]:
    """Column name -> a bind parameter of the same name."""
    return {name: bindparam(name) for name in names}


# Dialects with INSERT ... ON CONFLICT DO UPDATE: their insert construct, first version.
_UPSERTS: dict[str, tuple[Callable[..., Any], tuple[int, ...]]] = {
    "sqlite": (sqlite.insert, (3, 24)),
    "postgresql": (postgresql.insert, (9, 5)),
}


def _session_upsert(dialect: Dialect) -> ClauseElement | None:
    """INSERT ... ON CONFLICT (producer_id) DO UPDATE of every column, where the server
    has it (SQLite 3.24, Postgres 9.5); None elsewhere."""
    found = _UPSERTS.get(dialect.name)
    if found is None or (dialect.server_version_info or ()) < found[1]:
        return None
    stmt = found[0](session_table).values(_binds(_SESSION_COLUMNS))
    replace = {name: stmt.excluded[name] for name in _SESSION_COLUMNS[1:]}
    upsert: ClauseElement = stmt.on_conflict_do_update(index_elements=["producer_id"], set_=replace)
    return upsert


def _session_row(session: ClientSession) -> tuple[Any, ...]:
    above = json.dumps(list(session.above), separators=(",", ":")) if session.above else "[]"
    return (
        session.producer_id,
        session.last_seq,
        session.last_index,
        session.last_term,
        session.updated_index,
        session.floor,
        above,
    )


class WriteStatements:
    """Every statement a save runs, compiled for one dialect (a store keeps one set)."""

    def __init__(self, dialect: Dialect, *, upsert: bool = True) -> None:
        """Compile for ``dialect``, which must be initialised (its server version known).
        Sessions are upserted where the server can (``upsert=False``: never)."""
        hard_state = ("term", "voted_for", "commit_index")
        self.hard_state = DriverStatement.compile(
            update(hard_state_table).values(_binds(hard_state)), dialect, hard_state
        )
        progress = ("applied", "fanout_watermark")
        self.progress = DriverStatement.compile(
            update(progress_table).values(_binds(progress)), dialect, progress
        )
        self.truncate = DriverStatement.compile(
            delete(log_table).where(log_table.c.idx >= bindparam("lo")), dialect, ("lo",)
        )
        self.append = DriverStatement.compile(
            insert(log_table).values(_binds(_LOG_COLUMNS)), dialect, _LOG_COLUMNS
        )
        self.expire = DriverStatement.compile(
            delete(session_table).where(session_table.c.updated_index < bindparam("cutoff")),
            dialect,
            ("cutoff",),
        )
        upsert_stmt = _session_upsert(dialect) if upsert else None
        self.remove_session: DriverStatement | None = None  # run before put_session if set
        if upsert_stmt is not None:
            self.put_session = DriverStatement.compile(upsert_stmt, dialect, _SESSION_COLUMNS)
        else:  # replace a session by DELETE then INSERT (what raftmq did before upserts)
            self.remove_session = DriverStatement.compile(
                delete(session_table).where(
                    session_table.c.producer_id == bindparam("producer_id")
                ),
                dialect,
                ("producer_id",),
            )
            self.put_session = DriverStatement.compile(
                insert(session_table).values(_binds(_SESSION_COLUMNS)), dialect, _SESSION_COLUMNS
            )

    def write_hard_state(self, conn: Connection, hard: HardState) -> None:
        """Replace the hard state row."""
        self.hard_state.run(conn, [(hard.term, hard.voted_for, hard.commit)])

    def write_progress(self, conn: Connection, applied: int, watermark: int) -> None:
        """Replace the applied index and the fan-out watermark."""
        self.progress.run(conn, [(applied, watermark)])

    def truncate_from(self, conn: Connection, index: int) -> None:
        """Delete the log entries from ``index`` on."""
        self.truncate.run(conn, [(index,)])

    def append_entries(
        self, conn: Connection, entries: Sequence[Entry], appended_ms: int | None = None
    ) -> None:
        """Insert ``entries`` (one executemany), each stamped ``appended_ms`` (when they
        were saved, ms since the epoch; None: unknown)."""
        self.append.run(
            conn, [(e.index, e.term, int(e.kind), e.data, appended_ms) for e in entries]
        )

    def put_sessions(self, conn: Connection, sessions: Sequence[ClientSession]) -> None:
        """Insert or replace ``sessions`` (the last one of a producer wins)."""
        latest = {s.producer_id: s for s in sessions}
        if self.remove_session is not None:
            self.remove_session.run(conn, [(producer,) for producer in latest])
        self.put_session.run(conn, [_session_row(s) for s in latest.values()])

    def expire_sessions(self, conn: Connection, cutoff: int) -> None:
        """Delete the sessions last updated before index ``cutoff``."""
        self.expire.run(conn, [(cutoff,)])

"""Engines for node databases: SQLite (pysqlite in a dedicated thread, or aiosqlite) and
Postgres (asyncpg), with the same SQL for both (see raftmq.storage.runner).

SQLite needs care to be a trustworthy Raft store:

* pysqlite's legacy transaction handling (implicit BEGIN before DML only, silent
  COMMIT before DDL) is switched off (``isolation_level = None``) and raftmq emits its
  own ``BEGIN`` -- ``BEGIN IMMEDIATE`` for writes, so the write lock is taken up front
  and the busy timeout applies, instead of failing mid-transaction on lock upgrade;
* ``synchronous=FULL`` (durability ``"full"``, the default) fsyncs the WAL at every
  commit, so a commit survives power loss; ``"normal"`` only syncs at checkpoints:
  a commit survives a process crash but the last ones may be lost on power loss;
* ``journal_mode=WAL`` is persistent in the file, so it is set only after the file was
  checked to be ours (see :func:`enable_wal`), never on a foreign file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from raftmq.errors import StorageError, StoreMismatch

Durability = Literal["full", "normal"]
SqliteRunner = Literal["thread", "aiosqlite"]

# Connection execution option naming how the next transaction begins on SQLite:
# "deferred" (reads), "immediate" (writes) or "none" (autocommit, for PRAGMAs).
BEGIN_OPTION = "raftmq_begin"

DEFAULT_BUSY_TIMEOUT_MS = 5_000

_SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL"}

# asyncpg is the default Postgres driver (measured faster than psycopg 3 here; see
# benchmarks/storage.py); plain "postgresql://" URLs are mapped to it.
_DEFAULT_DRIVERS = {"postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}
_SQLITE_ASYNC = "sqlite+aiosqlite"


def normalize_url(url: str) -> str:
    """Map driverless URLs to raftmq's async drivers (``sqlite://`` -> aiosqlite,
    ``postgresql://`` -> asyncpg); explicit async drivers are kept."""
    parsed = make_url(url)
    if parsed.drivername == "sqlite":
        return parsed.set(drivername=_SQLITE_ASYNC).render_as_string(hide_password=False)
    if parsed.drivername in _DEFAULT_DRIVERS:
        target = _DEFAULT_DRIVERS[parsed.drivername]
        return parsed.set(drivername=target).render_as_string(hide_password=False)
    return url


def is_sqlite(url: str) -> bool:
    """True for a SQLite URL."""
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str) -> str | None:
    """The file path of a SQLite URL; None for an in-memory SQLite database or a server."""
    if not is_sqlite(url):
        return None
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return database


def _install_sqlite_hooks(engine: Engine, durability: Durability, busy_timeout_ms: int) -> None:
    synchronous = _SYNCHRONOUS[durability]

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite; see the module docstring.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cursor.execute(f"PRAGMA synchronous = {synchronous}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(BEGIN_OPTION, "deferred")
        if mode == "immediate":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif mode == "deferred":
            conn.exec_driver_sql("BEGIN")


def _check_durability(durability: str) -> None:
    if durability not in _SYNCHRONOUS:
        raise ValueError(f"durability must be 'full' or 'normal', not {durability!r}")


def create_store_engine(
    url: str,
    *,
    durability: Durability = "full",
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
) -> AsyncEngine:
    """An async engine for a node database, with raftmq's SQLite transaction handling.

    ``durability`` only affects SQLite (Postgres durability is the server's
    ``synchronous_commit`` setting, on by default).
    """
    _check_durability(durability)
    url = normalize_url(url)
    if not is_sqlite(url):
        return create_async_engine(url, pool_size=2, max_overflow=2)
    engine = create_async_engine(url, connect_args={"timeout": busy_timeout_ms / 1000.0})
    _install_sqlite_hooks(engine.sync_engine, durability, busy_timeout_ms)
    return engine


def create_sqlite_engine(
    url: str,
    *,
    durability: Durability = "full",
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
) -> Engine:
    """A sync pysqlite engine with raftmq's transaction handling (for ThreadRunner)."""
    _check_durability(durability)
    sync_url = make_url(normalize_url(url)).set(drivername="sqlite+pysqlite")
    engine = create_engine(
        sync_url,
        connect_args={"timeout": busy_timeout_ms / 1000.0, "check_same_thread": False},
    )
    _install_sqlite_hooks(engine, durability, busy_timeout_ms)
    return engine


def enable_wal(conn: Connection) -> None:
    """Switch a SQLite database to WAL (persistent; run outside any transaction)."""
    if conn.dialect.name != "sqlite":
        return
    mode = conn.exec_driver_sql("PRAGMA journal_mode = WAL").scalar()
    if str(mode).lower() != "wal":
        raise StorageError(f"SQLite refused WAL journal mode (got {mode!r})")


_SQLITE_HEADER = b"SQLite format 3\x00"


def check_sqlite_file(path: str, *, write: bool = True) -> None:
    """Refuse, before SQLite touches it, a file that is not a SQLite database
    (StoreMismatch) or, when ``write``, one that cannot be written (StorageError)."""
    target = Path(path)
    if target.is_dir():
        raise StorageError(f"{path!r} is a directory, not a database file")
    if not target.exists():
        if not target.parent.is_dir():
            raise StorageError(f"cannot create {path!r}: folder {str(target.parent)!r} is missing")
        if not os.access(target.parent, os.W_OK):
            raise StorageError(f"cannot create {path!r}: folder is not writable")
        return
    with target.open("rb") as handle:
        header = handle.read(len(_SQLITE_HEADER))
    if header and header != _SQLITE_HEADER:
        raise StoreMismatch(f"{path!r} is not a raftmq database (not a SQLite file); untouched")
    if not write:
        return
    # Root ignores permission bits, so check them too: an operator's chmod a-w is a refusal.
    if not os.access(target, os.W_OK) or target.stat().st_mode & 0o222 == 0:
        raise StorageError(
            f"{path!r} is read-only; raftmq needs to write its database (nothing was changed)"
        )
    if not os.access(target.parent, os.W_OK):
        raise StorageError(
            f"the folder of {path!r} is read-only; SQLite needs it for its WAL files "
            "(nothing was changed)"
        )

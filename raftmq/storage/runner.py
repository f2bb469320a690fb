"""Run one transaction's worth of SQLAlchemy Core code against a store's connection.

Every storage operation is a plain function ``fn(conn: Connection, *args)`` run inside ONE
transaction; a runner decides how it reaches the database:

* :class:`ThreadRunner` (SQLite): a sync pysqlite connection owned by one dedicated
  thread; the whole transaction is one hop to that thread. aiosqlite hops to its thread
  for every DBAPI call (cursor, execute, close -- 7 hops for a one-statement save), which
  measured about 2x slower on 100- and 1,000-entry appends (benchmarks/storage.py, the
  "via aiosqlite" row; ``SqlStorage(..., sqlite_runner="aiosqlite")`` still selects it).
  The hop is a job on a ``SimpleQueue`` and a ``call_soon_threadsafe`` back: measured
  ~20 µs of CPU against ~70-95 µs for ``loop.run_in_executor`` on a one-thread
  ``ThreadPoolExecutor`` (its futures, conditions and chaining), at every save.
* :class:`AsyncRunner` (Postgres through asyncpg, or any async driver): an
  ``AsyncConnection`` running BEGIN, the function and COMMIT in ONE ``run_sync``
  (greenlet; no thread) instead of one greenlet switch for each.

Both hold one connection, serialise callers with an asyncio lock, and drop the
connection after an error so the next call reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from raftmq.storage.engine import (
    BEGIN_OPTION,
    DEFAULT_BUSY_TIMEOUT_MS,
    Durability,
    SqliteRunner,
    create_sqlite_engine,
    create_store_engine,
    is_sqlite,
)

T = TypeVar("T")


class Runner(Protocol):
    """Runs ``fn(conn, *args)`` in one transaction ("immediate" write lock when ``write``)."""

    async def run(self, fn: Callable[..., T], *args: Any, write: bool = False) -> T:
        """Run ``fn`` in a transaction; commit on return, roll back on error."""
        ...

    async def run_outside(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` with no transaction open (autocommit; for PRAGMAs)."""
        ...

    async def reset(self) -> None:
        """Drop the current connection (after an error); the next run reconnects."""
        ...

    async def close(self) -> None:
        """Close the connection and the engine."""
        ...


def _begin_mode(write: bool) -> str:
    return "immediate" if write else "deferred"


def _transaction(conn: Connection, fn: Callable[..., T], args: tuple[Any, ...], mode: str) -> T:
    """``fn(conn, *args)`` in one transaction begun in ``mode`` (see engine.BEGIN_OPTION)."""
    if conn.get_execution_options().get(BEGIN_OPTION) != mode:
        conn.execution_options(**{BEGIN_OPTION: mode})
    with conn.begin():
        return fn(conn, *args)


# A job for the worker thread: the loop and future to answer, the function, its args.
_Job = tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], Callable[..., Any], tuple[Any, ...]]


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if not future.done():  # the caller may have been cancelled meanwhile
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def _serve(jobs: SimpleQueue[_Job | None]) -> None:
    """The worker thread: run jobs in order until None. Holds no reference to its runner,
    so a runner that was never closed can be collected (its finalizer sends the None)."""
    while (job := jobs.get()) is not None:
        loop, future, fn, args = job
        del job
        try:
            outcome: tuple[bool, Any] = (True, fn(*args))
        except BaseException as error:  # handed to the caller, like an executor does
            outcome = (False, error)
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_settle, future, *outcome)
        del loop, future, fn, args, outcome


class ThreadRunner:
    """A sync engine used from one dedicated thread (see the module docstring).

    The thread is a daemon: a process that exits without closing the store (or while
    a cancelled save is still running) does not hang on it; an unfinished transaction
    is then rolled back by SQLite, as after a crash."""

    def __init__(self, engine: Engine) -> None:
        """Own ``engine``; connect lazily in the worker thread."""
        self._engine = engine  # sync engine (pysqlite); disposed by close()
        self._jobs: SimpleQueue[_Job | None] = SimpleQueue()  # None stops the thread
        self._thread = threading.Thread(
            target=_serve, args=(self._jobs,), name="raftmq-sqlite", daemon=True
        )
        self._thread.start()
        # Stops the thread: called by close(), or when a runner never closed is collected.
        self._stop = weakref.finalize(self, self._jobs.put, None)
        self._closed = False  # True once close() is done with the connection
        self._conn: Connection | None = None  # touched only in the worker thread
        self._lock = asyncio.Lock()  # one call at a time

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._engine.connect()
        return self._conn

    def _in_txn(self, fn: Callable[..., T], args: tuple[Any, ...], mode: str) -> T:
        conn = self._connection()
        try:
            return _transaction(conn, fn, args, mode)
        except BaseException:
            self._drop()
            raise

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.invalidate()
                conn.close()
            except Exception:  # already broken; nothing more to release
                pass

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        async with self._lock:
            if self._closed:  # checked under the lock: no job may follow the stop
                raise RuntimeError("the SQLite runner is closed")
            future: asyncio.Future[T] = loop.create_future()
            self._jobs.put((loop, future, fn, args))
            return await future

    async def run(self, fn: Callable[..., T], *args: Any, write: bool = False) -> T:
        """Run ``fn(conn, *args)`` in one transaction in the worker thread."""
        return await self._call(self._in_txn, fn, args, _begin_mode(write))

    async def run_outside(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in autocommit mode in the worker thread."""
        return await self._call(self._in_txn, fn, args, "none")

    async def reset(self) -> None:
        """Drop the connection in the worker thread."""
        await self._call(self._drop)

    async def close(self) -> None:
        """Close the connection, dispose the engine, stop the thread."""
        try:
            await self._call(self._drop)
            await self._call(self._engine.dispose)
        finally:
            self._closed = True
            self._stop()
            self._thread.join()  # nothing is queued after the stop: it ends at once

    def __repr__(self) -> str:
        return f"ThreadRunner({self._engine.url!r}, thread={self._thread.ident})"


class AsyncRunner:
    """An async engine; functions run through ``AsyncConnection.run_sync``."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Own ``engine``; connect lazily."""
        self._engine = engine  # disposed by close()
        self._conn: AsyncConnection | None = None  # None until (re)connected
        self._lock = asyncio.Lock()  # one call at a time on the connection

    async def _connection(self) -> AsyncConnection:
        if self._conn is None:
            self._conn = await self._engine.connect()
        return self._conn

    async def _in_txn(self, fn: Callable[..., T], args: tuple[Any, ...], mode: str) -> T:
        async with self._lock:
            conn = await self._connection()
            try:
                return await conn.run_sync(_transaction, fn, args, mode)
            except BaseException:
                await self._drop()
                raise

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.invalidate()
                await conn.close()
            except Exception:  # already broken; nothing more to release
                pass

    async def run(self, fn: Callable[..., T], *args: Any, write: bool = False) -> T:
        """Run ``fn(conn, *args)`` in one transaction."""
        return await self._in_txn(fn, args, _begin_mode(write))

    async def run_outside(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` with no explicit BEGIN (SQLite autocommit)."""
        return await self._in_txn(fn, args, "none")

    async def reset(self) -> None:
        """Drop the connection; the next run reconnects."""
        async with self._lock:
            await self._drop()

    async def close(self) -> None:
        """Close the connection and dispose the engine."""
        async with self._lock:
            await self._drop()
        await self._engine.dispose()


def make_runner(
    url: str,
    *,
    durability: Durability = "full",
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    sqlite_runner: SqliteRunner = "thread",
) -> Runner:
    """The runner for ``url``: a dedicated thread for SQLite (unless ``sqlite_runner`` is
    "aiosqlite"), the async driver otherwise."""
    if is_sqlite(url) and sqlite_runner == "thread":
        return ThreadRunner(
            create_sqlite_engine(url, durability=durability, busy_timeout_ms=busy_timeout_ms)
        )
    return AsyncRunner(
        create_store_engine(url, durability=durability, busy_timeout_ms=busy_timeout_ms)
    )

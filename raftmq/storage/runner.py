"""Run one transaction's worth of SQLAlchemy Core code against a store's connection.

Every storage operation is a plain function ``fn(conn: Connection, *args)`` run inside ONE
transaction; a runner decides how it reaches the database:

* :class:`ThreadRunner` (SQLite): a sync pysqlite connection owned by one dedicated
  thread; the whole transaction is one hop to that thread. aiosqlite hops to its thread
  for every DBAPI call (cursor, execute, close -- 7 hops for a one-statement save), which
  measured about 2x slower on 100- and 1,000-entry appends (benchmarks/storage.py, the
  "via aiosqlite" row; ``SqlStorage(..., sqlite_runner="aiosqlite")`` still selects it).
* :class:`AsyncRunner` (Postgres through asyncpg, or any async driver): an
  ``AsyncConnection`` running the function with ``run_sync`` (greenlet; no thread).

Both hold one connection, serialise callers with an asyncio lock, and drop the
connection after an error so the next call reconnects.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from raftmq.storage.engine import BEGIN_OPTION

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


class ThreadRunner:
    """A sync engine used from one dedicated thread (see the module docstring)."""

    def __init__(self, engine: Engine) -> None:
        """Own ``engine``; connect lazily in the worker thread."""
        self._engine = engine  # sync engine (pysqlite); disposed by close()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raftmq-sqlite")
        self._conn: Connection | None = None  # touched only in the worker thread
        self._lock = asyncio.Lock()  # one call at a time

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._engine.connect()
        return self._conn

    def _in_txn(self, fn: Callable[..., T], args: tuple[Any, ...], mode: str) -> T:
        conn = self._connection()
        try:
            conn.execution_options(**{BEGIN_OPTION: mode})
            with conn.begin():
                return fn(conn, *args)
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
            return await loop.run_in_executor(self._executor, fn, *args)

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
        await self._call(self._drop)
        await self._call(self._engine.dispose)
        self._executor.shutdown(wait=True)

    def __repr__(self) -> str:
        return f"ThreadRunner({self._engine.url!r}, thread={threading.get_ident()})"


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
                await conn.execution_options(**{BEGIN_OPTION: mode})
                async with conn.begin():
                    return await conn.run_sync(fn, *args)
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

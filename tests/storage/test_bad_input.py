"""Databases raftmq must refuse with a clear error, leaving them untouched; SQLite pragmas."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import pytest
from sqlalchemy.engine import Connection

from raftmq.core.types import HardState
from raftmq.errors import StorageError, StoreMismatch
from raftmq.storage import migrate
from raftmq.storage.port import PersistBatch
from raftmq.storage.schema import VERSION_TABLE
from raftmq.storage.sql import SqlStorage


def _digest(folder: Path) -> dict[str, str]:
    """Content hash of every file in ``folder`` (catches new -wal/-journal files too).

    The ``-shm`` file is skipped: it is SQLite's shared-memory index of the WAL, rewritten
    by any reader, holding no data."""
    files = (p for p in sorted(folder.iterdir()) if not p.name.endswith("-shm"))
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def _make_store(path: Path, node: str = "n1") -> None:
    store = SqlStorage(_url(path), cluster="c", node_id=node)
    await store.open()
    await store.save(PersistBatch(hard_state=HardState(term=7, voted_for="n1")))
    await store.close()


async def test_file_that_is_not_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 20)
    before = _digest(tmp_path)
    with pytest.raises(StoreMismatch, match="not a raftmq database"):
        await SqlStorage(_url(path), cluster="c", node_id="n1").open()
    with pytest.raises(StoreMismatch):
        await migrate.upgrade(_url(path))
    assert _digest(tmp_path) == before


async def test_sqlite_file_of_another_application(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
        conn.execute("INSERT INTO invoices VALUES (1, 9.5)")
    before = _digest(tmp_path)
    with pytest.raises(StoreMismatch, match=r"not a raftmq database.*invoices"):
        await SqlStorage(_url(path), cluster="c", node_id="n1").open()
    with pytest.raises(StoreMismatch):
        await migrate.upgrade(_url(path))
    assert _digest(tmp_path) == before


async def test_database_of_another_node(tmp_path: Path) -> None:
    path = tmp_path / "n1.db"
    await _make_store(path)
    before = _digest(tmp_path)
    with pytest.raises(StoreMismatch, match="belongs to node 'n1' of cluster 'c'"):
        await SqlStorage(_url(path), cluster="c", node_id="n2").open()
    with pytest.raises(StoreMismatch, match="not to node 'n1' of cluster 'other'"):
        await SqlStorage(_url(path), cluster="other", node_id="n1").open()
    assert _digest(tmp_path) == before


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "n1.db"
    await _make_store(path)
    with sqlite3.connect(path) as conn:
        conn.execute(f"UPDATE {VERSION_TABLE} SET version_num = 'f00dfeed9999'")
    before = _digest(tmp_path)
    with pytest.raises(StoreMismatch, match="'f00dfeed9999', unknown to this raftmq"):
        await SqlStorage(_url(path), cluster="c", node_id="n1").open()
    with pytest.raises(StoreMismatch, match="newer raftmq"):
        await migrate.upgrade(_url(path))
    assert await migrate.current(_url(path)) == "f00dfeed9999"
    assert _digest(tmp_path) == before


async def test_read_only_file(tmp_path: Path) -> None:
    path = tmp_path / "n1.db"
    await _make_store(path)
    path.chmod(0o444)
    before = _digest(tmp_path)
    try:
        with pytest.raises(StorageError, match="read-only") as caught:
            await SqlStorage(_url(path), cluster="c", node_id="n1").open()
        assert not isinstance(caught.value, StoreMismatch)
    finally:
        path.chmod(0o644)
    assert _digest(tmp_path) == before


async def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="missing"):
        await SqlStorage(_url(tmp_path / "nope" / "n1.db"), cluster="c", node_id="n1").open()


@pytest.mark.parametrize(("durability", "expected"), [("full", 2), ("normal", 1)])
async def test_sqlite_wal_and_durability(tmp_path: Path, durability: str, expected: int) -> None:
    store = SqlStorage(
        _url(tmp_path / "n1.db"),
        cluster="c",
        node_id="n1",
        durability="full" if durability == "full" else "normal",
    )
    await store.open()

    def pragmas(conn: Connection) -> tuple[object, ...]:
        names = ("journal_mode", "synchronous", "busy_timeout")
        return tuple(conn.exec_driver_sql(f"PRAGMA {name}").scalar() for name in names)

    try:
        assert await store._run("test", pragmas) == ("wal", expected, 5000)
    finally:
        await store.close()


async def test_write_transactions_take_the_lock_up_front(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE: while a save is pending elsewhere, another writer waits (busy
    timeout) instead of failing half-way through its transaction."""
    path = tmp_path / "n1.db"
    await _make_store(path)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    store = SqlStorage(_url(path), cluster="c", node_id="n1", busy_timeout_ms=200)
    try:
        with pytest.raises(StorageError, match="locked"):
            await store.open()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await store.open()
    await store.save(PersistBatch(hard_state=HardState(term=8)))
    assert await store.hard_state() == HardState(term=8)
    await store.close()


@pytest.mark.integration
async def test_postgres_foreign_and_newer_databases(postgres_url: str) -> None:
    dsn = postgres_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE invoices (id int primary key)")
        with pytest.raises(StoreMismatch, match="invoices"):
            await SqlStorage(postgres_url, cluster="c", node_id="n1").open()
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        assert [r["tablename"] for r in tables] == ["invoices"]
        await conn.execute("DROP TABLE invoices")
        store = SqlStorage(postgres_url, cluster="c", node_id="n1")
        await store.open()
        await store.save(PersistBatch(hard_state=HardState(term=3)))
        await store.close()
        with pytest.raises(StoreMismatch, match="belongs to node 'n1'"):
            await SqlStorage(postgres_url, cluster="c", node_id="n9").open()
        await conn.execute(f"UPDATE {VERSION_TABLE} SET version_num = 'f00dfeed9999'")
        with pytest.raises(StoreMismatch, match="unknown to this raftmq"):
            await SqlStorage(postgres_url, cluster="c", node_id="n1").open()
        assert await conn.fetchval("SELECT term FROM raftmq_hard_state") == 3
    finally:
        await conn.close()

"""The save path's compiled statements (raftmq.storage.statements) on real databases: each
paramstyle shape they handle, the DELETE + INSERT session fallback, and rows left alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import bindparam, create_engine, insert, select, update
from sqlalchemy.engine import Connection

from raftmq.core.types import Entry, HardState
from raftmq.storage.engine import create_store_engine
from raftmq.storage.port import ClientSession, PersistBatch
from raftmq.storage.schema import hard_state_table, log_table, metadata, progress_table
from raftmq.storage.sql import SqlStorage
from raftmq.storage.sqlops import sessions_txn
from raftmq.storage.statements import DriverStatement, WriteStatements

A1 = ClientSession("a", 1, 1, 3, 1)
B = ClientSession("b", 5, 2, 3, 2, floor=3, above=(5,))
A2 = ClientSession("a", 2, 3, 3, 3)
A3 = ClientSession("a", 4, 4, 3, 4, floor=2, above=(4,))


def _write_everything(conn: Connection, sql: WriteStatements) -> None:
    """Every write of a save, each replaced once, ending in a known state (_expected)."""
    sql.write_hard_state(conn, HardState(term=2, voted_for="n2", commit=1))
    sql.write_hard_state(conn, HardState(term=3, voted_for=None, commit=4))
    sql.append_entries(conn, [Entry(index=i, term=3, data=b"%d" % i) for i in (1, 2, 3, 4)])
    sql.truncate_from(conn, 3)
    sql.append_entries(conn, [Entry(index=3, term=3, data=b"new")])
    sql.write_progress(conn, 2, 1)
    sql.write_progress(conn, 3, 2)
    sql.put_sessions(conn, [A1, B])
    sql.put_sessions(conn, [A2, A3])  # the last of a producer wins
    sql.expire_sessions(conn, 3)  # drops b (updated at 2), keeps a (4)


def _state(conn: Connection) -> tuple[object, ...]:
    hard = conn.execute(select(hard_state_table.c.term, hard_state_table.c.voted_for)).one()
    commit = conn.execute(select(hard_state_table.c.commit_index)).scalar()
    log = conn.execute(select(log_table.c.idx, log_table.c.data).order_by(log_table.c.idx))
    progress = conn.execute(select(progress_table.c.applied, progress_table.c.fanout_watermark))
    return (tuple(hard), commit, [tuple(r) for r in log], tuple(progress.one()), sessions_txn(conn))


_EXPECTED = (
    (3, None),
    4,
    [(1, b"1"), (2, b"2"), (3, b"new")],
    (3, 2),
    [A3],
)


def _sqlite_with_rows(tmp_path: Path, paramstyle: str) -> Connection:
    engine = create_engine(f"sqlite:///{tmp_path / 'w.db'}", paramstyle=paramstyle)
    conn = engine.connect()
    metadata.create_all(conn)
    hard = {"id": 1, "term": 0, "voted_for": None, "commit_index": 0}
    conn.execute(insert(hard_state_table), [hard])
    conn.execute(insert(progress_table), [{"id": 1, "applied": 0, "fanout_watermark": 0}])
    conn.commit()
    return conn


@pytest.mark.parametrize(
    ("paramstyle", "upsert"), [("qmark", True), ("qmark", False), ("named", True)]
)
def test_sqlite_writes(tmp_path: Path, paramstyle: str, upsert: bool) -> None:
    """Positional tuples (qmark), dicts for a named paramstyle, and sessions replaced by
    DELETE + INSERT where ON CONFLICT is not used."""
    conn = _sqlite_with_rows(tmp_path, paramstyle)
    try:
        sql = WriteStatements(conn.dialect, upsert=upsert)
        assert sql.append.positional == (paramstyle == "qmark")
        assert (sql.remove_session is None) == upsert
        with conn.begin():
            _write_everything(conn, sql)
        assert _state(conn) == _EXPECTED
    finally:
        conn.close()
        conn.engine.dispose()


def test_values_follow_the_given_names_not_the_placeholder_order(tmp_path: Path) -> None:
    conn = _sqlite_with_rows(tmp_path, "qmark")
    try:
        stmt = update(progress_table).values(
            applied=bindparam("applied"), fanout_watermark=bindparam("fanout_watermark")
        )
        swapped = DriverStatement.compile(stmt, conn.dialect, ("fanout_watermark", "applied"))
        assert swapped.order == (1, 0)
        with conn.begin():
            swapped.run(conn, [(7, 9)])
        assert _state(conn)[3] == (9, 7)
        with pytest.raises(ValueError, match="binds"):
            DriverStatement.compile(stmt, conn.dialect, ("applied",))
    finally:
        conn.close()
        conn.engine.dispose()


@pytest.mark.integration
async def test_postgres_session_fallback(postgres_url: str) -> None:
    """DELETE + INSERT on Postgres too (ON CONFLICT is covered by the contract suite)."""
    store = SqlStorage(postgres_url, cluster="c", node_id="n1")
    await store.open()  # the schema and its single rows
    await store.close()
    engine = create_store_engine(postgres_url)
    try:
        async with engine.connect() as conn:
            sql = await conn.run_sync(lambda c: WriteStatements(c.dialect, upsert=False))
            assert sql.remove_session is not None and "$1" in sql.put_session.sql
            async with conn.begin():
                await conn.run_sync(_write_everything, sql)
            async with conn.begin():
                assert await conn.run_sync(_state) == _EXPECTED
    finally:
        await engine.dispose()


async def test_unchanged_hard_state_and_progress_are_not_written_again(tmp_path: Path) -> None:
    store = SqlStorage(f"sqlite:///{tmp_path / 'n1.db'}", cluster="c", node_id="n1")
    await store.open()

    def changed_rows(conn: Connection) -> int:  # rows written on this connection so far
        return int(conn.exec_driver_sql("SELECT total_changes()").scalar_one())

    try:
        hard = HardState(term=2, voted_for="n1", commit=3)
        await store.save(PersistBatch(hard_state=hard, applied=3, fanout_watermark=2))
        before = await store._run("test", changed_rows)
        await store.save(PersistBatch(hard_state=hard, applied=3, fanout_watermark=2))
        await store.save(PersistBatch(applied=3))
        assert await store._run("test", changed_rows) == before
        await store.save(PersistBatch(hard_state=hard, fanout_watermark=5))
        assert await store._run("test", changed_rows) == before + 1  # progress only
        assert (await store.hard_state(), await store.applied()) == (hard, 3)
    finally:
        await store.close()
    again = SqlStorage(f"sqlite:///{tmp_path / 'n1.db'}", cluster="c", node_id="n1")
    await again.open()
    try:
        state = await again.initial_state()
        assert (state.hard_state, state.applied, await again.fanout_watermark()) == (hard, 3, 5)
    finally:
        await again.close()

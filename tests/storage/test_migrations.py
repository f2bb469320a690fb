"""Alembic migrations: upgrade from empty, models == migrations, down/up round trip, CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from raftmq.core.types import INCARNATION_PATTERN, Entry, HardState
from raftmq.storage import migrate
from raftmq.storage.engine import create_store_engine
from raftmq.storage.port import ClientSession, LogExtent, PersistBatch, Snapshot
from raftmq.storage.schema import OWN_TABLES, VERSION_TABLE, metadata
from raftmq.storage.sql import SqlStorage
from raftmq.storage.sqlops import config_entries_query, sessions_txn
from raftmq.storage.statements import WriteStatements
from tests.storage.contract import FakeClock

REPO = Path(__file__).resolve().parents[2]
ALEMBIC = Path(sys.executable).parent / "alembic"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def _diff(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(
        conn, opts={"compare_type": True, "version_table": VERSION_TABLE}
    )
    return list(compare_metadata(context, metadata))


async def _tables(url: str) -> set[str]:
    engine = create_store_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_upgrade_from_empty_then_models_match(db_url: str) -> None:
    assert await migrate.current(db_url) is None
    assert await migrate.upgrade(db_url) == migrate.head_revision()
    assert await migrate.current(db_url) == migrate.head_revision()
    assert await _tables(db_url) == set(OWN_TABLES)
    assert await migrate.upgrade(db_url) == migrate.head_revision()  # idempotent
    engine = create_store_engine(db_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []  # `alembic check`: nothing to generate
    finally:
        await engine.dispose()


async def test_downgrade_upgrade_round_trip(db_url: str) -> None:
    await migrate.upgrade(db_url)
    assert await migrate.downgrade(db_url, "base") is None
    assert await _tables(db_url) <= {VERSION_TABLE}
    assert await migrate.upgrade(db_url) == migrate.head_revision()
    assert await _tables(db_url) == set(OWN_TABLES)


async def _run_sync(url: str, fn: Any) -> Any:
    engine = create_store_engine(url)
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def _insert_0001_session(conn: Connection) -> None:
    conn.execute(
        text(
            "INSERT INTO raftmq_client_session "
            "(producer_id, last_seq, last_index, last_term, updated_index) "
            "VALUES ('old', 7, 40, 3, 41)"
        )
    )


async def test_upgrade_0001_to_0002_keeps_sessions_with_last_seq_semantics(db_url: str) -> None:
    await migrate.upgrade(db_url)
    assert await migrate.downgrade(db_url, "0001") == "0001"
    await _run_sync(db_url, _insert_0001_session)
    assert await migrate.upgrade(db_url) == migrate.head_revision()
    [old] = await _run_sync(db_url, sessions_txn)
    # Before 0002 a session meant "every seq <= last_seq applied": floor = last_seq.
    assert old == ClientSession("old", 7, 40, 3, 41, floor=7, above=())
    assert await _run_sync(db_url, _diff) == []  # models == migrations


async def test_downgrade_0002_to_0001_and_back_to_head(db_url: str) -> None:
    await migrate.upgrade(db_url)
    row = ClientSession("p", 9, 50, 2, 50, floor=5, above=(7, 9))
    await _run_sync(db_url, lambda c: WriteStatements(c.dialect).put_sessions(c, [row]))
    assert await migrate.downgrade(db_url, "0001") == "0001"
    assert await migrate.current(db_url) == "0001"
    assert await migrate.upgrade(db_url) == migrate.head_revision()
    # Going through 0001 keeps the row; its seq set falls back to "<= last_seq".
    assert await _run_sync(db_url, sessions_txn) == [ClientSession("p", 9, 50, 2, 50)]
    assert await _run_sync(db_url, _diff) == []  # models == migrations


POPULATED_ENTRIES = tuple(Entry(index=i, term=2, data=b"w%d" % i) for i in (1, 2, 3))
POPULATED_SESSION = ClientSession("p", 4, 3, 2, 3)


async def _populated_at(db_url: str, revision: str) -> None:
    """A database holding POPULATED_ENTRIES, POPULATED_SESSION, a hard state and progress,
    written at head and then downgraded to ``revision`` (as if written by that release)."""
    store = SqlStorage(db_url, cluster="c", node_id="n1")
    await store.open()
    await store.save(
        PersistBatch(
            hard_state=HardState(term=2, voted_for="n2", commit=3),
            entries=POPULATED_ENTRIES,
            applied=3,
            fanout_watermark=2,
            sessions=(POPULATED_SESSION,),
        )
    )
    await store.close()
    assert await migrate.downgrade(db_url, revision) == revision


async def test_upgrade_0002_to_0003_keeps_a_populated_database_without_cluster_id(
    db_url: str,
) -> None:
    """A database written before the cluster id existed opens (upgraded) with everything it
    held and no cluster id; the node then saves the one it was admitted with."""
    await _populated_at(db_url, "0002")
    entries, session = POPULATED_ENTRIES, POPULATED_SESSION
    store = SqlStorage(db_url, cluster="c", node_id="n1")
    await store.open()  # upgrades to head
    try:
        assert await migrate.current(db_url) == migrate.head_revision() == "0006"
        assert await store.cluster_id() is None
        assert await store.entries(1, 3) == list(entries)
        assert await store.hard_state() == HardState(term=2, voted_for="n2", commit=3)
        assert (await store.applied(), await store.fanout_watermark()) == (3, 2)
        assert await store.sessions() == [session]
        await store.save_cluster_id("ab" * 16)
        assert await store.cluster_id() == "ab" * 16
    finally:
        await store.close()


async def test_upgrade_0003_to_0004_keeps_a_populated_database_and_its_snapshot(
    db_url: str,
) -> None:
    """A 0003 database holding log entries and a snapshot row (written by the old
    save_snapshot, which compacted up to its index) opens upgraded: the compaction point is
    the snapshot's index, the voters are empty, the entries after it stay; then down to
    0003 and up again."""
    await migrate.upgrade(db_url)
    assert await migrate.downgrade(db_url, "0003") == "0003"
    store = SqlStorage(db_url, cluster="c", node_id="n1")

    def populate(conn: Connection) -> None:
        conn.execute(text("INSERT INTO raftmq_meta VALUES (1, 'raftmq', 'c', 'n1', NULL)"))
        conn.execute(text("INSERT INTO raftmq_hard_state VALUES (1, 2, 'n2', 6)"))
        conn.execute(text("INSERT INTO raftmq_progress VALUES (1, 6, 5)"))
        for i in (5, 6, 7):
            conn.execute(text(f"INSERT INTO raftmq_log VALUES ({i}, 2, 1, :d)"), {"d": b"e"})
        conn.execute(
            text("INSERT INTO raftmq_snapshot (id, idx, term, data) VALUES (1, 4, 1, :d)"),
            {"d": b"state@4"},
        )

    await _run_sync(db_url, populate)
    await store.open()  # upgrades to head
    try:
        assert await migrate.current(db_url) == migrate.head_revision() == "0006"
        assert await store.snapshot() == Snapshot(4, 1, (), b"state@4")
        state = await store.initial_state()
        assert (state.first_index, state.last_index, state.term_runs) == (5, 7, ((4, 1), (5, 2)))
        assert [e.index for e in state.tail] == [5, 6, 7]
        assert state.hard_state == HardState(term=2, voted_for="n2", commit=6)
        assert state.applied == 6
        await store.save_snapshot(Snapshot(6, 2, ("n1", "n2"), b"state@6"))
        await store.compact(5)
    finally:
        await store.close()
    assert await _run_sync(db_url, _diff) == []  # models == migrations
    assert await migrate.downgrade(db_url, "0003") == "0003"
    assert await migrate.upgrade(db_url) == "0006"
    store = SqlStorage(db_url, cluster="c", node_id="n1")
    await store.open()
    try:  # after a round trip through 0003 the log starts after the snapshot's index
        assert await store.snapshot() == Snapshot(6, 2, (), b"state@6")
        assert (await store.first_index(), await store.last_index()) == (7, 7)
        assert await store.term_at(6) == 2
    finally:
        await store.close()


def _stamps(conn: Connection) -> list[int | None]:
    return [ms for (ms,) in conn.execute(text("SELECT appended_ms FROM raftmq_log ORDER BY idx"))]


async def test_upgrade_0002_to_head_keeps_entries_of_unknown_age_until_newer_ones_age(
    db_url: str,
) -> None:
    """Entries saved before revision 0005 keep their payloads and have no save time: the
    extent's oldest_appended is None and retention by age lets them go only with the first
    newer entry that is old enough -- then compaction deletes everything up to it."""
    await _populated_at(db_url, "0002")
    clock = FakeClock(5_000.0)
    store = SqlStorage(db_url, cluster="c", node_id="n1", clock=clock)
    await store.open()  # upgrades to head
    try:
        assert await migrate.current(db_url) == migrate.head_revision()
        assert await store.entries(1, 3) == list(POPULATED_ENTRIES)
        assert await _run_sync(db_url, _stamps) == [None, None, None]
        assert await store.extent() == LogExtent(1, 3, 3, 6, None)
        assert await store.retention_point(max_age=60.0, now=1e12) == 0  # all of unknown age
        await store.save(PersistBatch(entries=(Entry(index=4, term=2, data=b"new4"),)))
        clock.now = 5_100.0
        await store.save(PersistBatch(entries=(Entry(index=5, term=2, data=b"new5"),)))
        assert await _run_sync(db_url, _stamps) == [None, None, None, 5_000_000, 5_100_000]
        assert await store.extent() == LogExtent(1, 5, 5, 14, None)
        assert await store.retention_point(max_age=60.0, now=5_030.0) == 0  # 4 is too young
        point = await store.retention_point(max_age=60.0, now=5_070.0)
        assert point == 4  # the old entries go with 4, the first new one old enough
        await store.save_snapshot(Snapshot(4, 2, ("n1",), b"state@4"))
        await store.compact(point)
        assert await store.extent() == LogExtent(5, 5, 1, 4, 5_100.0)
    finally:
        await store.close()
    assert await _run_sync(db_url, _diff) == []  # models == migrations
    again = SqlStorage(db_url, cluster="c", node_id="n1")
    await again.open()
    try:
        assert await again.extent() == LogExtent(5, 5, 1, 4, 5_100.0)
        assert await again.entries(5, 5) == [Entry(index=5, term=2, data=b"new5")]
    finally:
        await again.close()


async def test_upgrade_0005_to_0006_gives_an_old_database_its_own_incarnation(
    db_url: str,
) -> None:
    """A database written before incarnations gets a random one on upgrade, kept from
    then on; a downgrade drops it and the next upgrade makes another (it is the same
    data, but nothing could tell: the node is re-pinned by its leader)."""
    await _populated_at(db_url, "0005")
    store = SqlStorage(db_url, cluster="c", node_id="n1")
    await store.open()  # upgrades to head
    try:
        state = await store.initial_state()
        assert re.fullmatch(INCARNATION_PATTERN, state.incarnation)
        assert state.tail == POPULATED_ENTRIES
    finally:
        await store.close()
    again = SqlStorage(db_url, cluster="c", node_id="n1")
    await again.open()
    try:
        assert (await again.initial_state()).incarnation == state.incarnation
    finally:
        await again.close()
    assert await _run_sync(db_url, _diff) == []


def _config_plan(conn: Connection) -> str:
    """How the database reads the configuration entries on open (SQLite explains the
    statement as it runs, with its bound parameters)."""
    query = config_entries_query(0)
    if conn.dialect.name == "sqlite":
        compiled = query.compile(conn)
        params = tuple(compiled.params[name] for name in compiled.positiontup or ())
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", params)
        return " ".join(str(row[-1]) for row in rows)
    literal = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
    conn.execute(text("SET LOCAL enable_seqscan = off"))  # a tiny table: ask for the index
    return " ".join(row[0] for row in conn.execute(text(f"EXPLAIN {literal}")))


async def test_the_configuration_entries_are_read_through_their_partial_index(
    db_url: str,
) -> None:
    """Opening a node reads its CONFIG entries through ix_raftmq_log_config_idx (revision
    0006), not by scanning the log."""
    await _populated_at(db_url, "0006")
    assert "ix_raftmq_log_config_idx" in await _run_sync(db_url, _config_plan)


def test_head_revision_is_the_incarnation_revision() -> None:
    assert migrate.head_revision() == "0006"
    assert migrate.script_location() == REPO / "migrations"


def _alembic(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(ALEMBIC), *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_alembic_cli_from_repo_root(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    _alembic("-x", f"url={url}", "upgrade", "head")
    assert "0006 (head)" in _alembic("-x", f"url={url}", "current")
    assert "No new upgrade operations detected" in _alembic("-x", f"url={url}", "check")
    env_url = f"sqlite:///{tmp_path / 'env.db'}"  # driverless URL, from the environment
    _alembic("upgrade", "head", env={"RAFTMQ_DATABASE_URL": env_url})
    assert "0006 (head)" in _alembic("current", env={"RAFTMQ_DATABASE_URL": env_url})

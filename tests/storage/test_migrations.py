"""Alembic migrations: upgrade from empty, models == migrations, down/up round trip, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from raftmq.storage import migrate
from raftmq.storage.engine import create_store_engine
from raftmq.storage.schema import OWN_TABLES, VERSION_TABLE, metadata

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


def test_head_revision_is_the_initial_one() -> None:
    assert migrate.head_revision() == "0001"
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
    assert "0001 (head)" in _alembic("-x", f"url={url}", "current")
    assert "No new upgrade operations detected" in _alembic("-x", f"url={url}", "check")
    env_url = f"sqlite:///{tmp_path / 'env.db'}"  # driverless URL, from the environment
    _alembic("upgrade", "head", env={"RAFTMQ_DATABASE_URL": env_url})
    assert "0001 (head)" in _alembic("current", env={"RAFTMQ_DATABASE_URL": env_url})

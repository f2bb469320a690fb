"""Schema migrations, programmatically (used by the node at start and by ``raftmq db``).

Public functions (all take a SQLAlchemy URL; driverless ``sqlite://`` and
``postgresql://`` URLs are mapped to aiosqlite and asyncpg):

* ``await upgrade(url) -> str``: bring the schema to the newest revision, return it;
* ``await current(url) -> str | None``: the database's revision (None: no raftmq schema);
* ``await downgrade(url, revision) -> str | None``: go back to ``revision`` ("base" drops all);
* ``head_revision() -> str``: the newest revision this code knows.

A database that is not a raftmq database, or whose revision this code does not know
(written by a newer raftmq), raises :class:`~raftmq.errors.StoreMismatch` and is left
untouched. The revision scripts live in the top-level ``migrations/`` folder of a source
checkout and are installed to ``<prefix>/share/raftmq/migrations`` by the wheel.
"""

from __future__ import annotations

import logging
import site
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError

from raftmq.errors import StorageError, StoreMismatch
from raftmq.storage.engine import check_sqlite_file, enable_wal, normalize_url, sqlite_path
from raftmq.storage.runner import Runner, make_runner
from raftmq.storage.schema import OWN_TABLES, VERSION_TABLE, meta_table

logger = logging.getLogger("raftmq.storage.migrate")

T = TypeVar("T")

_MARKER = "RAFTMQ_MIGRATIONS"  # appears in our env.py; tells our folder from any other


def _is_ours(folder: Path) -> bool:
    env = folder / "env.py"
    try:
        return (folder / "versions").is_dir() and _MARKER in env.read_text(encoding="utf-8")
    except OSError:
        return False


@lru_cache(maxsize=1)
def script_location() -> Path:
    """The folder holding env.py and versions/: the checkout's ``migrations/`` when running
    from source (or an editable install), else the one the wheel installed."""
    here = Path(__file__).resolve()
    candidates = [here.parents[2] / "migrations"]
    for prefix in (sysconfig.get_path("data"), sys.prefix, site.getuserbase()):
        candidates.append(Path(prefix) / "share" / "raftmq" / "migrations")
    for folder in candidates:
        if _is_ours(folder):
            return folder
    raise StorageError(
        "raftmq's migration scripts were not found (looked in "
        + ", ".join(str(c) for c in candidates)
        + "); reinstall raftmq"
    )


def alembic_config() -> Config:
    """An alembic Config pointing at raftmq's scripts, without needing alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.set_main_option("path_separator", "os")
    return config


@lru_cache(maxsize=1)
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest schema revision this code knows."""
    head = _scripts().get_current_head()
    if head is None:
        raise StorageError("raftmq has no schema revision (broken installation)")
    return head


@dataclass(frozen=True, slots=True)
class DatabaseInfo:
    """What a database holds before raftmq touches it."""

    tables: frozenset[str]  # table names in the default schema
    revision: str | None  # alembic revision, None when never migrated
    cluster: str | None  # owner recorded in raftmq_meta, None when unclaimed
    node_id: str | None  # owner recorded in raftmq_meta, None when unclaimed


def _read_info(conn: Connection) -> DatabaseInfo:
    tables = frozenset(inspect(conn).get_table_names())
    revision: str | None = None
    cluster = node_id = None
    if VERSION_TABLE in tables:
        revision = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    if meta_table.name in tables:
        row = conn.execute(select(meta_table.c.cluster, meta_table.c.node_id)).first()
        if row is not None:
            cluster, node_id = row.cluster, row.node_id
    return DatabaseInfo(tables, revision, cluster, node_id)


def read_info(conn: Connection) -> DatabaseInfo:
    """Inspect a database without changing it (run inside a transaction)."""
    return _read_info(conn)


def translate(error: SQLAlchemyError, where: str, what: str) -> StorageError:
    """The raftmq error for a driver error: StoreMismatch for a file that is not a
    database or lost a table, a clear StorageError for a read-only one, StorageError
    otherwise (worth a retry)."""
    text_ = str(error.args[0] if error.args else error).split("\n")[0]
    if "not a database" in text_ or "malformed" in text_:
        return StoreMismatch(f"{where} is not a raftmq database ({text_}); nothing was changed")
    if "no such table" in text_ or ("relation" in text_ and "does not exist" in text_):
        # Dropped under a running node: retrying cannot bring a table back.
        return StoreMismatch(f"{where} no longer holds raftmq's schema ({what}): {text_}")
    if "readonly" in text_ or "read-only" in text_:
        return StorageError(f"{where} is read-only ({what}): {text_}")
    return StorageError(f"{what} failed on {where}: {text_}")


def check_schema(info: DatabaseInfo, where: str) -> None:
    """Refuse (StoreMismatch) a database that is not ours or is newer than this code."""
    foreign = info.tables - OWN_TABLES
    if foreign:
        raise StoreMismatch(
            f"{where} is not a raftmq database: it holds other tables "
            f"({', '.join(sorted(foreign)[:5])}); nothing was changed"
        )
    if info.tables - {VERSION_TABLE} and info.revision is None:
        raise StoreMismatch(
            f"{where} has raftmq tables but no schema revision "
            f"({VERSION_TABLE} is missing or empty); nothing was changed"
        )
    if info.revision is not None:
        try:
            known = _scripts().get_revision(info.revision)
        except CommandError:
            known = None
        if known is None:
            raise StoreMismatch(
                f"{where} has schema revision {info.revision!r}, unknown to this raftmq "
                f"(newest known: {head_revision()!r}); it was probably written by a newer "
                "raftmq -- upgrade raftmq; nothing was changed"
            )


def check_owner(info: DatabaseInfo, where: str, cluster: str, node_id: str) -> None:
    """Refuse (StoreMismatch) a database claimed by another node or cluster."""
    if info.node_id is None:
        return
    if (info.cluster, info.node_id) != (cluster, node_id):
        raise StoreMismatch(
            f"{where} belongs to node {info.node_id!r} of cluster {info.cluster!r}, "
            f"not to node {node_id!r} of cluster {cluster!r}; nothing was changed"
        )


def _alembic(conn: Connection, action: str, target: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = conn
    getattr(command, action)(config, target)


def upgrade_in(conn: Connection, info: DatabaseInfo) -> str:
    """Upgrade to head inside the caller's open transaction; returns the new revision."""
    head = head_revision()
    if info.revision != head:
        logger.info("upgrading schema from %s to %s", info.revision or "empty", head)
        _alembic(conn, "upgrade", "head")
    return head


def _upgrade_txn(conn: Connection, where: str) -> str:
    info = read_info(conn)
    check_schema(info, where)
    return upgrade_in(conn, info)


def _downgrade_txn(conn: Connection, where: str, revision: str) -> str | None:
    check_schema(read_info(conn), where)
    _alembic(conn, "downgrade", revision)
    return read_info(conn).revision


def _current_txn(conn: Connection) -> str | None:
    return read_info(conn).revision


async def upgrade(url: str) -> str:
    """Create or upgrade a database's schema to the newest revision; return that revision.

    Refuses (StoreMismatch, nothing changed) a non-raftmq or newer database.
    """
    url = _preflight(url, write=True)
    runner = make_runner(url)
    try:
        revision = await _run(runner, url, "upgrade", _upgrade_txn, _describe(url), write=True)
        await runner.run_outside(enable_wal)
        return revision
    finally:
        await runner.close()


async def current(url: str) -> str | None:
    """The schema revision of a database, or None when it has no raftmq schema yet."""
    url = normalize_url(url)
    if _missing_file(url):
        return None  # do not create a file just to look at it
    url = _preflight(url, write=False)
    runner = make_runner(url)
    try:
        return await _run(runner, url, "current", _current_txn)
    finally:
        await runner.close()


async def downgrade(url: str, revision: str) -> str | None:
    """Downgrade the schema to ``revision`` ("base" removes every raftmq table)."""
    url = _preflight(url, write=True)
    runner = make_runner(url)
    try:
        return await _run(
            runner, url, "downgrade", _downgrade_txn, _describe(url), revision, write=True
        )
    finally:
        await runner.close()


async def _run(
    runner: Runner, url: str, what: str, fn: Callable[..., T], *args: Any, write: bool = False
) -> T:
    try:
        return await runner.run(fn, *args, write=write)
    except SQLAlchemyError as error:
        raise translate(error, _describe(url), what) from error


def _missing_file(url: str) -> bool:
    path = sqlite_path(url)
    return path is not None and not Path(path).exists()


def _preflight(url: str, *, write: bool) -> str:
    url = normalize_url(url)
    path = sqlite_path(url)
    if path is not None:
        check_sqlite_file(path, write=write)
    return url


def _describe(url: str) -> str:
    """A URL for messages (password hidden)."""
    return repr(make_url(url).render_as_string(hide_password=True))

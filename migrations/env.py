"""Alembic environment for raftmq node databases (RAFTMQ_MIGRATIONS).

Works two ways:

* programmatically (``raftmq.storage.migrate``): the caller opens the connection, puts it
  in ``config.attributes["connection"]`` and runs the command inside its own transaction;
* from the ``alembic`` command: the URL comes from ``-x url=...``, else the
  ``RAFTMQ_DATABASE_URL`` environment variable, else ``sqlalchemy.url`` in alembic.ini,
  and an async engine (aiosqlite / asyncpg) is created here.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from raftmq.storage.engine import create_store_engine
from raftmq.storage.schema import VERSION_TABLE, metadata

config = context.config


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        # SQLite cannot ALTER most things; batch mode copies tables when needed.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    url = url or os.environ.get("RAFTMQ_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("no database URL: pass -x url=... or set RAFTMQ_DATABASE_URL")
    return url


def _run_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = create_store_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run_sync)
    finally:
        await engine.dispose()


def _run_online() -> None:
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run_sync(connection)
    else:
        asyncio.run(_run_async(_url()))


if context.is_offline_mode():
    _run_offline()
else:
    _run_online()

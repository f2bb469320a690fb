"""A throw-away Postgres database per test or benchmark (one raftmq node per database).

Kept out of ``raftmq.testing``'s package import: it needs a running server.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped,unused-ignore]


@asynccontextmanager
async def fresh_postgres_database(
    server_url: str, *, prefix: str = "raftmq_test"
) -> AsyncIterator[str]:
    """Create a uniquely named database on the server of ``server_url`` (a SQLAlchemy
    asyncpg URL naming any existing database to connect through) and yield its URL;
    drop it, with any connections left to it, on exit."""
    parts = urlsplit(server_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin_dsn = parts._replace(path="/" + (parts.path.lstrip("/") or "postgres")).geturl()
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield server_url.rsplit("/", 1)[0] + "/" + name
    finally:
        conn = await asyncpg.connect(admin_dsn)
        try:
            with suppress(Exception):  # cleanup must not hide the outcome of the run
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

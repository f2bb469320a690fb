"""A database that goes away: the Postgres server kills our connection between saves.

The save that meets the dead connection fails with StorageError and writes nothing; the
next one reconnects and succeeds (the node retries a failed save, tests/node); nothing
saved before is lost."""

from __future__ import annotations

from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import pytest

from raftmq.core.types import Entry, HardState
from raftmq.errors import StorageError
from raftmq.storage.port import PersistBatch
from raftmq.storage.sql import SqlStorage

pytestmark = pytest.mark.integration


async def _kill_backends(url: str) -> int:
    parts = urlsplit(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    database = parts.path.lstrip("/")
    admin = await asyncpg.connect(parts._replace(path="/postgres").geturl())
    try:
        rows = await admin.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
    finally:
        await admin.close()
    return len(rows)


async def test_killed_connection_fails_one_save_then_recovers(postgres_url: str) -> None:
    store = SqlStorage(postgres_url, cluster="c", node_id="n1")
    await store.open()
    try:
        first = PersistBatch(
            hard_state=HardState(term=1, voted_for="n1", commit=0),
            entries=tuple(Entry(index=i, term=1, data=b"x%d" % i) for i in range(1, 4)),
        )
        await store.save(first)
        assert await _kill_backends(postgres_url) >= 1

        second = PersistBatch(entries=(Entry(index=4, term=1, data=b"x4"),), applied=2)
        with pytest.raises(StorageError):
            await store.save(second)  # meets the dead connection: nothing is written
        assert await store.last_index() == 3
        await store.save(second)  # the retry a node makes reconnects and succeeds
        assert await store.last_index() == 4
        assert await store.applied() == 2
        assert [e.data for e in await store.entries(1, 4)] == [b"x1", b"x2", b"x3", b"x4"]
        assert await store.hard_state() == HardState(term=1, voted_for="n1", commit=0)
    finally:
        await store.close()

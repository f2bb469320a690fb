"""An ambiguous commit: the COMMIT lands, then the connection dies before its answer.

A commit hook lets the real COMMIT through and then cuts the connection (on Postgres the
server terminates the backend), so the caller gets an error for a save that is durable.
The node retries the same batch (raftmq.node.loop); the store must recognise it and
accept it, not refuse it forever as a log that "does not continue"."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from raftmq.core.types import Entry, HardState
from raftmq.errors import StorageError
from raftmq.storage.port import ClientSession, PersistBatch
from raftmq.storage.sql import SqlStorage


class CommitThenDrop:
    """While armed, the next COMMIT of any engine lands and its answer is lost."""

    def __init__(self) -> None:
        self.armed = False  # the next commit lands, then the connection is lost
        self.fired = 0  # commits that landed without an answer

    def __call__(self, conn: Connection) -> None:
        if not self.armed:
            return
        self.armed = False
        dbapi: Any = conn.connection.dbapi_connection
        dbapi.commit()  # the COMMIT reaches the server and is durable
        if conn.dialect.name == "postgresql":
            # The server ends our backend: what a lost answer looks like from here.
            with contextlib.suppress(Exception):  # the connection dies, as intended
                dbapi.cursor().execute("SELECT pg_terminate_backend(pg_backend_pid())")
        self.fired += 1
        raise OperationalError("COMMIT", None, ConnectionResetError("answer lost"))


@pytest.fixture
def commit_then_drop() -> Iterator[CommitThenDrop]:
    hook = CommitThenDrop()
    event.listen(Engine, "commit", hook)
    try:
        yield hook
    finally:
        event.remove(Engine, "commit", hook)


async def _retried_save_is_recognised(url: str, hook: CommitThenDrop) -> None:
    store = SqlStorage(url, cluster="c", node_id="n1")
    await store.open()
    try:
        await store.save(PersistBatch(hard_state=HardState(term=1), entries=_entries(1, 2)))
        session = ClientSession("p", 1, 3, 1, 3)
        batch = PersistBatch(
            hard_state=HardState(term=1, voted_for="n1", commit=2),
            entries=_entries(3, 5),
            applied=2,
            sessions=(session,),
        )
        hook.armed = True
        with pytest.raises(StorageError):
            await store.save(batch)
        assert hook.fired == 1
        await store.save(batch)  # the node's retry: recognised, accepted
        await store.save(PersistBatch(entries=_entries(6, 6)))
        assert await store.entries(1, 10) == list(_entries(1, 6))
        assert await store.hard_state() == HardState(term=1, voted_for="n1", commit=2)
        assert (await store.applied(), await store.session("p")) == (2, session)
    finally:
        await store.close()


def _entries(lo: int, hi: int) -> tuple[Entry, ...]:
    return tuple(Entry(index=i, term=1, data=b"e%d" % i) for i in range(lo, hi + 1))


@pytest.mark.integration
async def test_postgres_commit_landed_answer_lost(
    postgres_url: str, commit_then_drop: CommitThenDrop
) -> None:
    await _retried_save_is_recognised(postgres_url, commit_then_drop)


async def test_sqlite_commit_landed_answer_lost(
    tmp_path: Path, commit_then_drop: CommitThenDrop
) -> None:
    await _retried_save_is_recognised(f"sqlite:///{tmp_path / 'n1.db'}", commit_then_drop)

"""The storage contract run against memory, SQLite and Postgres."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftmq.storage.memory import MemoryStorage
from raftmq.storage.port import Storage
from raftmq.storage.sql import SqlStorage
from tests.storage.contract import StorageContract, StoreFactory


class TestMemoryStorage(StorageContract):
    """In-memory twin: "reopening" reuses the same object, like reopening a file."""

    @pytest.fixture
    def factory(self) -> StoreFactory:
        backing = MemoryStorage(cluster="c", node_id="n1")

        def make(cluster: str, node_id: str) -> Storage:
            backing.cluster, backing.node_id = cluster, node_id
            return backing

        return make


class TestSqliteStorage(StorageContract):
    """SQLite through pysqlite in the store's own thread (the default), one file per test."""

    @pytest.fixture
    def factory(self, tmp_path: Path) -> StoreFactory:
        url = f"sqlite+aiosqlite:///{tmp_path / 'node.db'}"

        def make(cluster: str, node_id: str) -> Storage:
            return SqlStorage(url, cluster=cluster, node_id=node_id)

        return make


class TestSqliteViaAiosqliteStorage(StorageContract):
    """SQLite through aiosqlite (``sqlite_runner="aiosqlite"``: the async runner)."""

    @pytest.fixture
    def factory(self, tmp_path: Path) -> StoreFactory:
        url = f"sqlite+aiosqlite:///{tmp_path / 'node.db'}"

        def make(cluster: str, node_id: str) -> Storage:
            return SqlStorage(url, cluster=cluster, node_id=node_id, sqlite_runner="aiosqlite")

        return make


@pytest.mark.integration
class TestPostgresStorage(StorageContract):
    """Postgres through asyncpg, a fresh database per test."""

    @pytest.fixture
    def factory(self, postgres_url: str) -> StoreFactory:
        def make(cluster: str, node_id: str) -> Storage:
            return SqlStorage(postgres_url, cluster=cluster, node_id=node_id)

        return make

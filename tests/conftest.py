"""Service fixtures shared by every test package.

How a service is found, in order:
1. an explicit URL in ``RAFTMQ_TEST_AMQP_URL`` / ``RAFTMQ_TEST_DATABASE_URL``;
2. the local defaults (RabbitMQ on 127.0.0.1:5672, PostgreSQL on 127.0.0.1:5432);
3. a testcontainers container when a Docker engine answers;
4. otherwise the test is skipped -- unless ``RAFTMQ_REQUIRE_SERVICES=1`` (set by
   ``.ci/run``), where a missing service is a failure.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import settings

from raftmq.testing.localcluster import LocalCluster
from raftmq.testing.postgres import fresh_postgres_database

# `make test` draws the same examples on every run, so that CI never fails at random on
# an example nobody saw before; `make fuzz` (RAFTMQ_HYPOTHESIS_PROFILE=fuzz) draws new ones.
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("fuzz", derandomize=False)
settings.load_profile(os.environ.get("RAFTMQ_HYPOTHESIS_PROFILE", "repeatable"))

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def _require_services() -> bool:
    return os.environ.get("RAFTMQ_REQUIRE_SERVICES", "") == "1"


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _docker_available() -> bool:
    try:
        import docker  # type: ignore[import-untyped,import-not-found,unused-ignore]

        docker.from_env().ping()
    except Exception:
        return False
    return True


def _missing(what: str) -> None:
    message = f"{what} is not reachable and no Docker engine answers"
    if _require_services():
        pytest.fail(message + " (RAFTMQ_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """URL of a RabbitMQ broker for integration tests."""
    explicit = os.environ.get("RAFTMQ_TEST_AMQP_URL")
    if explicit:
        yield explicit
        return
    if _reachable(DEFAULT_AMQP_URL, 5672):
        yield DEFAULT_AMQP_URL
        return
    if _docker_available():
        from testcontainers.rabbitmq import RabbitMqContainer

        with RabbitMqContainer("rabbitmq:3.13-management") as container:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(5672)
            yield f"amqp://guest:guest@{host}:{port}/"
        return
    _missing("RabbitMQ")


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """URL (SQLAlchemy, asyncpg driver) of a PostgreSQL database we may create databases from."""
    explicit = os.environ.get("RAFTMQ_TEST_DATABASE_URL")
    if explicit:
        yield explicit
        return
    if _reachable(DEFAULT_DATABASE_URL, 5432):
        yield DEFAULT_DATABASE_URL
        return
    if _docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver="asyncpg") as container:
            yield container.get_connection_url()
        return
    _missing("PostgreSQL")


@pytest.fixture
async def postgres_url(postgres_server_url: str) -> AsyncIterator[str]:
    """A fresh, uniquely named Postgres database for one test; dropped afterwards."""
    async with fresh_postgres_database(postgres_server_url) as url:
        yield url


@pytest.fixture
def cluster_name() -> str:
    """A unique cluster name per test, so queues and exchanges never collide."""
    return f"t{uuid.uuid4().hex[:10]}"


NODE_TICK = 0.05  # seconds per tick in process tests (the default): election 0.5-1.0 s
ClusterFactory = Callable[..., LocalCluster]


@pytest.fixture
async def local_cluster(amqp_url: str, tmp_path: Path) -> AsyncIterator[ClusterFactory]:
    """Factory of LocalClusters (unique names); all stopped and their queues deleted after."""
    made: list[LocalCluster] = []

    def make(node_ids: list[str] | None = None, **kwargs: object) -> LocalCluster:
        name = f"t{uuid.uuid4().hex[:10]}"
        kwargs.setdefault("tick_interval", NODE_TICK)
        cluster = LocalCluster(
            name,
            node_ids or ["n1", "n2", "n3"],
            tmp_path / name,
            amqp_url=amqp_url,
            **kwargs,  # type: ignore[arg-type]
        )
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop_all()
        await cluster.delete_queues()


_SERVICE_FIXTURES = frozenset({"amqp_url", "postgres_server_url"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses a broker or database fixture (directly or through another fixture)
    is an integration test, whether or not it says so: `make unit` deselects them."""
    for item in items:
        if _SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)

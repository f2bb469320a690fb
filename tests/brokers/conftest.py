"""Fixtures of the tests on private RabbitMQ nodes (raftmq.testing.private_rabbitmq)."""

from __future__ import annotations

import os

import pytest

from raftmq.testing import private_rabbitmq


def require_private_nodes() -> None:
    """Skip (fail under RAFTMQ_REQUIRE_SERVICES=1) where private nodes cannot run."""
    if private_rabbitmq.available():
        return
    message = "private RabbitMQ nodes need rabbitmq-server, rabbitmqctl and root"
    if os.environ.get("RAFTMQ_REQUIRE_SERVICES", "") == "1":
        pytest.fail(message + " (RAFTMQ_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(message)

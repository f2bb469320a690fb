"""`make demo` is the first thing a user runs: it must work end to end and say so."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_runs_failover_and_reports_nothing_lost(amqp_url: str) -> None:
    env = dict(os.environ, RAFTMQ_AMQP_URL=amqp_url)
    result = subprocess.run(
        [sys.executable, "-m", "raftmq", "demo", "--writes", "10"],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "was elected leader" in out
    assert "took over in term" in out
    assert "Nothing lost, nothing twice: 20 acknowledged messages" in out


def test_demo_without_a_broker_explains_how_to_get_one() -> None:
    env = dict(os.environ, DOCKER_HOST="unix:///nonexistent/docker.sock")
    result = subprocess.run(
        [sys.executable, "-m", "raftmq", "demo", "--amqp-url", "amqp://guest:guest@127.0.0.1:1/"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 2
    assert "No RabbitMQ broker answers" in result.stdout
    assert "rabbitmq-server" in result.stdout

"""Constants of node tests with real processes (the `local_cluster` fixture is in
tests/conftest.py)."""

from __future__ import annotations

from tests.conftest import NODE_TICK, ClusterFactory

TICK = NODE_TICK  # seconds per tick in these tests (the default): election 0.5-1.0 s
ELECTION_TIMEOUT_MAX = 2 * 10 * TICK

__all__ = ["ELECTION_TIMEOUT_MAX", "TICK", "ClusterFactory"]

"""A `raftmq node` process whose loop fails exits non-zero, so that a supervisor restarts
it; it never lingers looking alive."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from raftmq.protocol.record import Record
from raftmq.testing.localcluster import wait_for_leader
from tests.node.conftest import ClusterFactory

pytestmark = pytest.mark.integration


async def test_node_whose_database_lost_its_log_table_exits_non_zero(
    local_cluster: ClusterFactory,
) -> None:
    """A follower's log table is dropped under it (no retry brings a table back): its
    next save fails for good, the process logs it and exits 1; the others go on."""
    cluster = local_cluster()
    cluster.start_all()
    async with cluster.admin() as admin:
        leader = (await wait_for_leader(admin, timeout=30)).node_id
        await admin.write(Record(body=b"before"), timeout=30)
        victim = next(n for n in cluster.node_ids if n != leader)
        path = cluster.node_dir(victim) / f"raftmq-{cluster.cluster}-{victim}.db"
        with sqlite3.connect(path, timeout=10) as db:
            db.execute("DROP TABLE raftmq_log")
        await admin.write(Record(body=b"after"), timeout=30)  # the victim must save it
        process = cluster.processes[victim]
        async with asyncio.timeout(30):
            while process.poll() is None:  # noqa: ASYNC110 - a child process, no event to await
                await asyncio.sleep(0.1)
        assert process.returncode == 1
        cluster.stopped.add(victim)
        log = cluster.log_file(victim).read_text()
        assert "node loop failed" in log and "no longer holds raftmq's schema" in log
        await admin.write(Record(body=b"still"), timeout=30)  # a majority is left

"""Metrics and health of three real `raftmq node` processes (RAFTMQ_METRICS_PORT) on the
real broker, scraped over HTTP while the leader is SIGKILLed and restarted."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from raftmq.node.metrics import DEFAULT_MAX_APPLY_LAG
from raftmq.protocol.record import Record
from raftmq.testing.localcluster import LocalCluster
from tests.node.conftest import ClusterFactory

pytestmark = pytest.mark.integration

MISSED = 3 * DEFAULT_MAX_APPLY_LAG  # writes committed while the old leader is down
Answer = tuple[int, str] | None  # (HTTP status, body), None when the connection is refused


def _fetch(url: str) -> Answer:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except urllib.error.URLError as error:
        if isinstance(error.reason, ConnectionRefusedError):
            return None
        raise


async def fetch(cluster: LocalCluster, node_id: str, path: str) -> Answer:
    return await asyncio.to_thread(_fetch, cluster.metrics_url(node_id, path))


async def scrape(cluster: LocalCluster, node_id: str) -> dict[str, float]:
    """The unlabelled samples of a node's /metrics (name -> value); {} when it is down."""
    answer = await fetch(cluster, node_id, "/metrics")
    if answer is None or answer[0] != 200:
        return {}
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(answer[1])
        for sample in family.samples
        if not sample.labels
    }


async def wait_for(what: str, check: Callable[[], Awaitable[bool]], timeout: float = 60.0) -> None:
    """Call the coroutine function ``check`` until it returns true, within ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise TimeoutError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.1)


async def test_metrics_report_a_leader_crash_and_readyz_follows_the_restart(
    local_cluster: ClusterFactory,
) -> None:
    cluster = local_cluster(metrics=True)
    nodes = cluster.node_ids
    cluster.start_all()

    async def all_ready() -> bool:
        answers = [await fetch(cluster, n, "/readyz") for n in nodes]
        return all(a is not None and a[0] == 200 for a in answers)

    await wait_for("every node ready", all_ready)
    before = {n: await scrape(cluster, n) for n in nodes}
    leaders = [n for n in nodes if before[n]["raftmq_is_leader"] == 1.0]
    assert len(leaders) == 1, before
    old = leaders[0]
    survivors = [n for n in nodes if n != old]
    assert all(before[n]["raftmq_has_leader"] == 1.0 for n in nodes)
    health = [await fetch(cluster, n, "/healthz") for n in nodes]
    assert health == [(200, "node loop running\n")] * 3

    cluster.kill(old)  # SIGKILL
    assert await fetch(cluster, old, "/readyz") is None  # red: nothing listens
    after: dict[str, dict[str, float]] = {}

    async def new_leader_reported() -> bool:
        for n in survivors:
            after[n] = await scrape(cluster, n)
        changed = all(
            after[n]["raftmq_leader_changes_seen_total"]
            > before[n]["raftmq_leader_changes_seen_total"]
            and after[n]["raftmq_has_leader"] == 1.0
            for n in survivors
        )
        return changed and sum(after[n]["raftmq_is_leader"] for n in survivors) == 1.0

    await wait_for("a new leader on the survivors' metrics", new_leader_reported)
    assert all(after[n]["raftmq_term"] > before[n]["raftmq_term"] for n in survivors)

    # While the old leader is down the others commit more than a ready node may lag by.
    async with cluster.admin() as admin:
        commits = await asyncio.gather(
            *(admin.write(Record(body=b"w%d" % k), timeout=30) for k in range(MISSED))
        )
    last = max(commit.index for commit in commits)
    cluster.start(old)
    seen: list[int | None] = []  # the restarted node's /readyz answers, in order

    async def restarted_ready() -> bool:
        answer = await fetch(cluster, old, "/readyz")
        seen.append(None if answer is None else answer[0])
        return answer is not None and answer[0] == 200

    await wait_for("the restarted node ready", restarted_ready)
    assert all(status in (None, 503) for status in seen[:-1]), seen  # red until green
    back = await scrape(cluster, old)
    assert back["raftmq_has_leader"] == 1.0 and back["raftmq_node_loop_running"] == 1.0
    assert back["raftmq_term"] >= max(after[n]["raftmq_term"] for n in survivors)
    # ready only once caught up: at most DEFAULT_MAX_APPLY_LAG behind what it missed
    assert back["raftmq_applied_index"] >= last - DEFAULT_MAX_APPLY_LAG
    assert back["raftmq_leader_commit_index"] >= last
    assert not cluster.crashed()

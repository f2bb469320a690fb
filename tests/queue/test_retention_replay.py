"""Replay of entries retention compacted (issue 12, item 4): the replay server answers
with an explicit "first available index" (``raftmq-replay-first``), and the Subscriber
raises ``Compacted`` (its default policy) or skips to it and counts what it skipped.

A real one-node Node (in-memory storage and transport) whose retention keeps the newest
50 entries; the ReplayServer and the Subscriber run on the real broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from raftmq.client.subscriber import Subscriber
from raftmq.errors import Compacted
from raftmq.node.retention import Retention
from raftmq.protocol import names
from tests.queue.test_replay_bounds import Replay, _started

pytestmark = pytest.mark.integration

WRITES = 300  # indexes 2..301 (index 1 is the leader's NOOP)
KEEP = 50


@pytest.fixture
async def compacted(amqp_url: str, cluster_name: str) -> AsyncIterator[Replay]:
    """300 writes in a log that retention cut to about the newest 50 entries."""
    bodies = [b"%03d" % k for k in range(WRITES)]
    async for started in _started(
        amqp_url, cluster_name, bodies, retention=Retention(entries=KEEP)
    ):
        storage = started.node._storage
        async with asyncio.timeout(20):  # retention runs about once a second
            while await storage.first_index() == 1:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        yield started


async def test_the_log_keeps_the_newest_entries_and_compacts_in_steps(
    compacted: Replay,
) -> None:
    storage = compacted.node._storage
    extent = await storage.extent()
    # the writes, the leader's no-op and its configuration entry pinning the databases
    assert extent.last_index == compacted.node.status().last_index >= WRITES + 2
    # between the bound and the bound plus its slack (a tenth): whole steps, not per write
    assert KEEP <= extent.entries <= KEEP + KEEP // 10 + 1, extent
    assert compacted.node.status().counters["snapshots_taken"] >= 1


async def test_a_replay_from_a_compacted_index_says_where_the_log_starts(
    compacted: Replay,
) -> None:
    first = await compacted.node._storage.first_index()
    answers = await compacted.requester()
    asked = await compacted.ask(answers.queue.name, {"from": 1, "max": 10})
    held = await compacted.ask(answers.queue.name, {"from": first, "max": 10})
    await answers.wait([asked, held])
    assert answers.entries(asked) == []  # nothing sent: the marker covers nothing
    marker = answers.by_id[asked][-1].headers or {}
    assert marker[names.H_REPLAY_END] == 0
    assert marker.get(names.H_REPLAY_FIRST) == first, (marker, first)
    assert compacted.counter("replay_compacted") == 1
    # from the first held index on, replay answers as before, without the header
    assert answers.entries(held) == list(range(first, first + 10))
    assert names.H_REPLAY_FIRST not in (answers.by_id[held][-1].headers or {})


async def test_a_subscriber_from_earliest_raises_compacted_by_default(
    compacted: Replay, amqp_url: str
) -> None:
    first = await compacted.node._storage.first_index()
    async with Subscriber(
        amqp_url, compacted.cluster, start="earliest", replay_timeout=2
    ) as subscriber:
        with pytest.raises(Compacted) as caught:
            await asyncio.wait_for(anext(subscriber), 30)
    assert (caught.value.wanted, caught.value.first_available) == (1, first)
    assert str(first) in str(caught.value)


async def test_a_subscriber_that_skips_goes_on_from_the_first_available_index(
    compacted: Replay, amqp_url: str
) -> None:
    first = await compacted.node._storage.first_index()
    async with Subscriber(
        amqp_url, compacted.cluster, start="earliest", on_compacted="skip", replay_timeout=2
    ) as subscriber:
        got = [await asyncio.wait_for(anext(subscriber), 30) for _ in range(WRITES + 2 - first)]
    assert [m.index for m in got] == list(range(first, WRITES + 2))
    assert [m.body for m in got] == [b"%03d" % (i - 2) for i in range(first, WRITES + 2)]
    assert subscriber.counters["compacted"] == first - 1
